// Kubeflow Pipelines (v2beta1) for the dashboard: the API calls its pages share, and what a
// pipeline package says about itself (its inputs and its graph), for KFP IR and Argo Workflows.

import {getJSON, pathFor, request} from "./api.js";
import {errorBox, h, put} from "./dom.js";

export const KFP = "/apis/v2beta1";
const RUN_LABEL = "pipeline.shipyard.io/kfp-run-id";

// A KFP call; `body` is sent as JSON. Lists name the namespace in the query, as kfp.Client does.
export function kfp(method, path, body, signal) {
  return request(method, KFP + path, {
    signal,
    body: body === undefined ? undefined : JSON.stringify(body),
    contentType: body === undefined ? undefined : "application/json",
  });
}

export async function kfpList(path, key, ns, signal) {
  const sep = path.includes("?") ? "&" : "?";
  const out = await kfp("GET", `${path}${sep}namespace=${encodeURIComponent(ns)}&page_size=1000`,
                        undefined, signal);
  return out[key] || [];
}

// An upload of a package file (multipart field `uploadfile`, as the KFP API takes it).
export function uploadPackage(path, query, file) {
  const form = new FormData();
  form.append("uploadfile", file, file.name);
  const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v)).toString();
  return request("POST", `${KFP}${path}?${qs}`, {body: form});
}

// The Workflow a KFP run is executed as (labelled with the run id), or null.
export async function runWorkflow(ns, runId, signal) {
  const selector = encodeURIComponent(`${RUN_LABEL}=${runId}`);
  const list = await getJSON(`${pathFor("Workflow", ns)}?labelSelector=${selector}`, signal);
  return (list.items || [])[0] || null;
}

export const byCreated = (items) =>
  [...items].sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));

export const shortId = (id) => (id ? String(id).slice(0, 8) : "—");

// The IR of a stored package ({pipeline_spec, platform_spec} keeps the IR in pipeline_spec).
export function irOf(spec) {
  return spec && spec.pipeline_spec && !spec.root ? spec.pipeline_spec : spec;
}

export const isIr = (spec) => !!(spec && spec.root && spec.pipelineInfo);

const IR_TYPES = {NUMBER_INTEGER: "integer", NUMBER_DOUBLE: "double", BOOLEAN: "boolean",
                  STRING: "string", LIST: "list (JSON)", STRUCT: "struct (JSON)"};

// The run parameters a package takes: [{name, type, value, description}].
export function specInputs(raw) {
  const spec = irOf(raw);
  if (isIr(spec)) {
    const params = ((spec.root || {}).inputDefinitions || {}).parameters || {};
    return Object.entries(params).map(([name, p]) => {
      const d = p.defaultValue;
      return {name, kind: p.parameterType || "STRING", type: IR_TYPES[p.parameterType] || "string",
              value: d === undefined ? "" : (typeof d === "object" ? JSON.stringify(d) : String(d)),
              description: p.description || ""};
    });
  }
  const params = (((spec || {}).spec || {}).arguments || {}).parameters || [];
  return params.map((p) => ({name: p.name, kind: "STRING", type: "string",
                             value: p.value ?? p.default ?? "", description: p.description || ""}));
}

// A form value as the parameter's type (a ValueError-like Error names the parameter).
export function coerce(input, text) {
  const bad = () => { throw new Error(`parameter ${input.name}: "${text}" is not ${input.type}`); };
  switch (input.kind) {
    case "NUMBER_INTEGER": return /^-?\d+$/.test(text.trim()) ? Number(text) : bad();
    case "NUMBER_DOUBLE": return Number.isFinite(Number(text)) && text.trim() ? Number(text) : bad();
    case "BOOLEAN": return ["true", "false"].includes(text.trim()) ? text.trim() === "true" : bad();
    case "LIST": case "STRUCT":
      try { return JSON.parse(text); } catch (_) { return bad(); }
    default: return text;
  }
}

function link(nodes, from, to) {
  if (nodes[from] && nodes[to] && !nodes[from].children.includes(to)) nodes[from].children.push(to);
}

// The graph a package describes, as dagSvg's nodes ({id: {displayName, children, type}}).
export function specGraph(raw) {
  const spec = irOf(raw);
  const nodes = {};
  const add = (id, type = "Pod") => { nodes[id] = {id, displayName: id, children: [], type,
                                                   phase: "Pending"}; };
  if (isIr(spec)) {
    const tasks = ((spec.root || {}).dag || {}).tasks || {};
    const components = spec.components || {};
    for (const [name, task] of Object.entries(tasks)) {
      const comp = components[(task.componentRef || {}).name] || {};
      add(name, comp.dag ? "DAG" : "Pod");
    }
    for (const [name, task] of Object.entries(tasks)) {
      for (const dep of task.dependentTasks || []) link(nodes, dep, name);
    }
    return nodes;
  }
  const wf = (spec || {}).spec || {};
  const entry = (wf.templates || []).find((t) => t.name === wf.entrypoint);
  if (!entry) return nodes;
  if (entry.dag) {
    const tasks = entry.dag.tasks || [];
    tasks.forEach((t) => add(t.name));
    for (const t of tasks) {
      const deps = t.dependencies || (t.depends || "").match(/[A-Za-z0-9_-]+/g) || [];
      for (const dep of deps) link(nodes, dep, t.name);
    }
  } else if (entry.steps) {
    let previous = [];
    for (const group of entry.steps) {
      const names = (Array.isArray(group) ? group : [group]).map((s) => s.name);
      names.forEach((n) => add(n));
      for (const p of previous) for (const n of names) link(nodes, p, n);
      previous = names;
    }
  } else {
    add(entry.name);
  }
  return nodes;
}

// KFP's run and recurring-run states as badges (badge colours follow the phase names).
export function stateBadge(state) {
  const text = (state || "PENDING").replace(/_/g, " ");
  const el = h("span", {class: `badge phase-${text.split(" ")[0].toLowerCase()}`}, text);
  return el;
}

export function triggerText(trigger) {
  const t = trigger || {};
  const cron = t.cron_schedule || t.cronSchedule;
  const periodic = t.periodic_schedule || t.periodicSchedule;
  if (cron) return `cron ${cron.cron}`;
  if (periodic) return `every ${periodic.interval_second || periodic.intervalSecond}s`;
  return "—";
}

// A labelled form control (the label names the control for screen readers and tests).
export function field(label, control, hint) {
  return h("div", {class: "field"}, h("label", {for: control.id}, label), control,
           hint ? h("p", {class: "hint muted"}, hint) : null);
}

// Runs `fn` on a button's click with the button disabled meanwhile; errors go to `box`.
export function action(label, fn, box, attrs = {}) {
  return h("button", {class: "button small", type: "button", ...attrs, onclick: async (e) => {
    const button = e.currentTarget;
    button.disabled = true;
    try {
      await fn();
    } catch (err) {
      put(box, errorBox(err));
    } finally {
      button.disabled = false;
    }
  }}, label);
}

function irArgument(spec) {
  if (spec.componentInputParameter) return `pipeline input ${spec.componentInputParameter}`;
  if (spec.taskOutputParameter) {
    const t = spec.taskOutputParameter;
    return `output ${t.outputParameterKey} of ${t.producerTask}`;
  }
  if (spec.runtimeValue) return JSON.stringify(spec.runtimeValue.constant ?? spec.runtimeValue);
  if (spec.taskOutputArtifact) {
    const t = spec.taskOutputArtifact;
    return `artifact ${t.outputArtifactKey} of ${t.producerTask}`;
  }
  return JSON.stringify(spec);
}

// What one task of a package runs, as [label, value] pairs for a details panel.
export function taskFacts(raw, id) {
  const spec = irOf(raw);
  if (isIr(spec)) {
    const task = (((spec.root || {}).dag || {}).tasks || {})[id] || {};
    const compName = (task.componentRef || {}).name;
    const comp = (spec.components || {})[compName] || {};
    const execs = ((spec.deploymentSpec || {}).executors || {});
    const container = (execs[comp.executorLabel] || {}).container || {};
    const inputs = {...(task.inputs || {}).parameters, ...(task.inputs || {}).artifacts};
    return [["Component", compName || "—"], ["Image", container.image || "—"],
            ["Depends on", (task.dependentTasks || []).join(", ") || "—"],
            ...Object.entries(inputs).map(([name, arg]) => [`Input ${name}`, irArgument(arg)])];
  }
  const wf = (spec || {}).spec || {};
  const entry = (wf.templates || []).find((t) => t.name === wf.entrypoint) || {};
  const tasks = entry.dag ? entry.dag.tasks || [] : (entry.steps || []).flat();
  const task = tasks.find((t) => t.name === id) || entry;
  const tpl = (wf.templates || []).find((t) => t.name === task.template) || task;
  const run = tpl.container || tpl.script || {};
  return [["Template", tpl.name || "—"], ["Image", run.image || "—"],
          ["Command", (run.command || []).join(" ").slice(0, 300) || "—"],
          ...((task.arguments || {}).parameters || []).map((p) => [`Input ${p.name}`,
                                                                   String(p.value ?? "")])];
}
