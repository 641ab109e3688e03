// Notebook servers through the Jupyter web app's API (/jupyter/api, as Kubeflow's own UI
// uses it): the list with Kubeflow's status phases, the spawner form built from the
// operator's spawner configuration, Connect, stop/start, delete, and a server's events and log.
// Routes: #/notebooks, #/notebooks/+new (the form; "+" is in no object name), #/notebooks/<name>.

import {notebookUrl, request} from "./api.js";
import {add, ago, badge, emptyState, errorBox, h, keepFresh, pageHeader, put, table}
  from "./dom.js";
import {poll} from "./live.js";

const JWA = "/jupyter/api";
// Kubeflow's phases, shown with the badge colours of the nearest resource phase.
const PHASE_BADGE = {ready: "Running", waiting: "Pending", warning: "Warning",
                     terminating: "Terminating", stopped: "Stopped", unavailable: "Unknown"};

// The XSRF handshake of Kubeflow's crud backend: a GET hands out the XSRF-TOKEN cookie, and a
// write sends it back in X-XSRF-TOKEN.
function xsrfToken() {
  const found = document.cookie.split(";").map((c) => c.trim())
    .find((c) => c.startsWith("XSRF-TOKEN="));
  return found ? decodeURIComponent(found.slice("XSRF-TOKEN=".length)) : "";
}

export function jwa(method, path, body, signal) {
  const write = !["GET", "HEAD"].includes(method);
  return request(method, JWA + path, {
    signal,
    body: body === undefined ? undefined : JSON.stringify(body),
    contentType: body === undefined ? undefined : "application/json",
    headers: write ? {"X-XSRF-TOKEN": xsrfToken()} : undefined,
  });
}

const nsPath = (ns, rest = "") => `/namespaces/${encodeURIComponent(ns)}${rest}`;

function phaseBadge(status) {
  const phase = (status && status.phase) || "unavailable";
  const el = badge(PHASE_BADGE[phase] || "Unknown");
  el.textContent = phase;
  if (status && status.message) el.title = status.message;
  return el;
}

function actions(ctx, nb, refresh) {
  const {ns} = ctx;
  const phase = nb.status && nb.status.phase;
  const act = (label, fn) => h("button", {class: "button small", type: "button",
    "aria-label": `${label} ${nb.name}`, onclick: async (event) => {
      event.target.disabled = true;
      try {
        await fn();
        await refresh();
      } catch (err) {
        put(ctx.messages, errorBox(err));
        event.target.disabled = false;
      }
    }}, label);
  const stopped = phase === "stopped";
  return h("span", {class: "row-actions"},
    phase === "ready" ? h("a", {class: "button small primary", target: "_blank", rel: "noopener",
      href: notebookUrl(ns, nb.name), "aria-label": `Connect ${nb.name}`}, "Connect") : null,
    act(stopped ? "Start" : "Stop",
        () => jwa("PATCH", nsPath(ns, `/notebooks/${nb.name}`), {stopped: !stopped})),
    act("Delete", async () => {
      if (!window.confirm(`Delete notebook server ${nb.name}? Its volumes are kept.`)) return;
      await jwa("DELETE", nsPath(ns, `/notebooks/${nb.name}`));
    }));
}

const COLUMNS = (ctx, refresh) => [
  {title: "Status", cell: (nb) => phaseBadge(nb.status)},
  {title: "Name", cell: (nb) => h("a", {href: `#/notebooks/${encodeURIComponent(nb.name)}`},
                                  nb.name)},
  {title: "Type", cell: (nb) => nb.serverType || "jupyter"},
  {title: "Image", cell: (nb) => h("code", {class: "small", title: nb.image}, nb.shortImage)},
  {title: "CPU", class: "num", cell: (nb) => nb.cpu || "—"},
  {title: "Memory", class: "num", cell: (nb) => nb.memory || "—"},
  {title: "Volumes", cell: (nb) => (nb.volumes || []).join(", ") || "—"},
  {title: "Created", cell: (nb) => ago(nb.age)},
  {title: "", class: "right", cell: (nb) => actions(ctx, nb, refresh)},
];

export function renderNotebooks(ctx) {
  const {main, ns, signal} = ctx;
  const newButton = h("a", {class: "button primary", href: "#/notebooks/+new",
                            id: "new-notebook"}, "New notebook");
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading…"));
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  add(main, pageHeader("Notebooks", newButton), messages, body);
  const view = {...ctx, messages};
  const refresh = async () => {
    const {notebooks} = await jwa("GET", nsPath(ns, "/notebooks"), undefined, signal);
    const rows = [...notebooks].sort((a, b) => (b.age || "").localeCompare(a.age || ""));
    put(body, rows.length ? table(COLUMNS(view, refresh), rows) : emptyState(
      "No notebook servers yet", "Press ", h("strong", {}, "New notebook"),
      " to start one: JupyterLab with a workspace volume that outlives the server."));
  };
  keepFresh(body, refresh, signal, 2000);
}

// ------------------------------------------------------------------------------ the form

function field(label, control, hint) {
  const id = control.id;
  return h("div", {class: "field"}, h("label", {for: id}, label), control,
           hint ? h("p", {class: "hint muted"}, hint) : null);
}

const input = (id, value, attrs = {}) => h("input", {id, name: id, value, ...attrs});

function select(id, options, value) {
  return h("select", {id, name: id},
    options.map((o) => h("option", {value: o, selected: o === value}, o)));
}

function formBody(config, values) {
  const {name, image, customImage, useCustom, cpu, memory, workspace, size, existing,
         configurations, shm} = values;
  const body = {
    name: name.value.trim(),
    image: image.value,
    customImage: useCustom && useCustom.checked ? customImage.value.trim() : "",
    imagePullPolicy: (config.imagePullPolicy && config.imagePullPolicy.value) || "IfNotPresent",
    serverType: "jupyter",
    cpu: cpu.value.trim(),
    memory: memory.value.trim(),
    gpus: {num: "none"},
    datavols: existing.value ? [{mount: `/home/jovyan/${existing.value}`,
                                 existingSource: {persistentVolumeClaim:
                                                  {claimName: existing.value}}}] : [],
    shm: shm.checked,
    configurations: configurations.filter((c) => c.checked).map((c) => c.value),
  };
  if (workspace.value === "new") {
    const ws = structuredClone((config.workspaceVolume && config.workspaceVolume.value) || {});
    ws.mount = ws.mount || "/home/jovyan";
    ws.newPvc = ws.newPvc || {metadata: {name: "{notebook-name}-workspace"},
                              spec: {accessModes: ["ReadWriteOnce"]}};
    ws.newPvc.spec = {...ws.newPvc.spec, resources: {requests: {storage: size.value.trim()}}};
    body.workspace = ws;
  } else {
    body.workspace = {};
  }
  return body;
}

export async function renderNotebookForm(ctx) {
  const {main, ns, signal} = ctx;
  const card = h("div", {class: "card pad"}, h("p", {class: "muted"}, "Loading the form…"));
  add(main, pageHeader("New notebook server",
                       h("a", {class: "button ghost", href: "#/notebooks"}, "Cancel")), card);
  let config, pvcs, poddefaults;
  try {
    [{config}, {pvcs}, {poddefaults}] = await Promise.all([
      jwa("GET", "/config", undefined, signal),
      jwa("GET", nsPath(ns, "/pvcs"), undefined, signal),
      jwa("GET", nsPath(ns, "/poddefaults"), undefined, signal),
    ]);
  } catch (err) {
    if (!signal.aborted) put(card, errorBox(err));
    return;
  }
  const val = (key, fallback = "") => (config[key] && config[key].value) ?? fallback;
  const images = (config.image && config.image.options) || [val("image")];
  const wsDefault = val("workspaceVolume", {});
  const wsSize = (((wsDefault.newPvc || {}).spec || {}).resources || {}).requests || {};
  const values = {
    name: input("nb-name", "", {required: true, pattern: "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
                                autocomplete: "off", placeholder: "my-notebook"}),
    image: select("nb-image", images, val("image")),
    useCustom: config.allowCustomImage === false ? null
      : h("input", {type: "checkbox", id: "nb-use-custom"}),
    customImage: input("nb-custom-image", "", {placeholder: "registry/image:tag"}),
    cpu: input("nb-cpu", val("cpu", "0.5"), {readonly: !!(config.cpu && config.cpu.readOnly)}),
    memory: input("nb-memory", val("memory", "1Gi"),
                  {readonly: !!(config.memory && config.memory.readOnly)}),
    workspace: select("nb-workspace", ["new", "none"], "new"),
    size: input("nb-workspace-size", wsSize.storage || "5Gi"),
    existing: h("select", {id: "nb-data-volume", name: "nb-data-volume"},
      h("option", {value: ""}, "(none)"),
      pvcs.map((p) => h("option", {value: p.name}, `${p.name} (${p.size || "?"})`))),
    configurations: poddefaults.map((pd) => h("input", {type: "checkbox", value: pd.label,
      id: `nb-config-${pd.label}`})),
    shm: h("input", {type: "checkbox", id: "nb-shm", checked: val("shm", true) !== false}),
  };
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const submit = h("button", {class: "button primary", type: "submit", id: "nb-submit"},
                   "Launch");
  const form = h("form", {class: "form", "aria-label": "New notebook server"},
    field("Name", values.name, "Lower-case letters, digits and dashes."),
    field("Image", values.image),
    values.useCustom ? h("div", {class: "field inline"}, values.useCustom,
      h("label", {for: "nb-use-custom"}, "Custom image"), values.customImage) : null,
    h("div", {class: "field-row"}, field("CPU", values.cpu), field("Memory", values.memory)),
    h("div", {class: "field-row"}, field("Workspace volume", values.workspace,
      "A new volume named <name>-workspace, mounted at /home/jovyan."),
      field("Workspace size", values.size)),
    field("Data volume", values.existing, "An existing volume, mounted at /home/jovyan/<name>."),
    poddefaults.length ? h("fieldset", {class: "field"}, h("legend", {}, "Configurations"),
      poddefaults.map((pd, i) => h("div", {class: "inline"}, values.configurations[i],
        h("label", {for: `nb-config-${pd.label}`}, pd.desc || pd.label)))) : null,
    h("div", {class: "field inline"}, values.shm,
      h("label", {for: "nb-shm"}, "Enable shared memory")),
    errors, h("div", {class: "actions"}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = "Launching…";
    try {
      const body = formBody(config, values);
      await jwa("POST", nsPath(ns, "/notebooks"), body);
      window.location.hash = "#/notebooks";
    } catch (err) {
      put(errors, errorBox(err));
      submit.disabled = false;
      submit.textContent = "Launch";
    }
  });
  put(card, form);
}

// ---------------------------------------------------------------------------- one server

export function renderNotebook(ctx, name) {
  const {main, ns, signal} = ctx;
  const summary = h("div", {class: "card pad"}, h("p", {class: "muted"}, "Loading…"));
  const events = h("div", {class: "card"});
  const log = h("pre", {class: "log", "aria-label": "server log"}, "");
  add(main, pageHeader(name, h("a", {class: "button ghost", href: "#/notebooks"}, "All servers")),
      summary, h("h2", {}, "Events"), events, h("h2", {}, "Log"), log);
  const base = nsPath(ns, `/notebooks/${encodeURIComponent(name)}`);
  poll(async () => {
    try {
      const {notebook} = await jwa("GET", base, undefined, signal);
      const status = notebook.processed_status || {};
      put(summary, h("p", {}, phaseBadge(status), " ", status.message || ""),
          status.phase === "ready" ? h("a", {class: "button primary", target: "_blank",
            rel: "noopener", href: notebookUrl(ns, name)}, "Connect") : null);
      const list = (await jwa("GET", `${base}/events`, undefined, signal)).events || [];
      put(events, list.length ? table([
        {title: "Type", cell: (e) => e.type},
        {title: "Reason", cell: (e) => e.reason},
        {title: "Message", cell: (e) => e.message},
        {title: "When", cell: (e) => ago(e.lastTimestamp || e.metadata.creationTimestamp)},
      ], list) : h("p", {class: "muted pad"}, "No events."));
      if (status.phase === "ready" || status.phase === "warning") {
        const {logs} = await jwa("GET", `${base}/pod/${encodeURIComponent(name)}-0/logs`,
                                 undefined, signal);
        log.textContent = (logs || []).join("\n");
      }
    } catch (err) {
      if (!signal.aborted) put(summary, errorBox(err));
    }
    return true;
  }, 3000, signal);
}
