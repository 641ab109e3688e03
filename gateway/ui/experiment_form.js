// The new-experiment form (#/experiments/+new), as Katib's UI has it: objective, algorithm and
// its settings, early stopping, trial counts, parameters, metrics collector and the trial
// template; or the generated YAML, edited before submit. The API validates; each field cause
// it returns is shown next to the control whose path it names (else listed with its path).

import {pathFor, request} from "./api.js";
import {add, errorBox, h, pageHeader, put} from "./dom.js";
import {ALGORITHMS, COLLECTORS, DEFAULT_PARAMETERS, EARLY_STOPPING, NAS_ALGORITHMS,
        PARAMETER_TYPES, RESUME_POLICIES, buildExperiment, defaultCommand, toYaml,
        trialParameterName} from "./experiment_spec.js";

let uid = 0;
const nextId = (stem) => `xf-${stem}-${++uid}`;

function control(tag, attrs, ...children) {
  const id = attrs.id || nextId(tag);
  return h(tag, {id, name: id, ...attrs}, ...children);
}
const input = (attrs) => control("input", {autocomplete: "off", ...attrs});
const select = (options, value, attrs = {}) => control("select", attrs,
  options.map((o) => h("option", {value: o, selected: o === value}, o)));
const field = (label, el, hint) => h("div", {class: "field"},
  h("label", {for: el.id}, label), el, hint ? h("p", {class: "hint muted"}, hint) : null);

// One algorithm's (or early stopping's) settings as labelled inputs, defaults filled in.
function settingsBox(table, name, prefix) {
  const rows = (table[name] || []).map(([key, value, choices]) => {
    const el = choices ? select(choices, value, {"aria-label": `${prefix} ${key}`})
      : input({value, placeholder: "(unset)", "aria-label": `${prefix} ${key}`});
    return {name: key, el};
  });
  const box = h("div", {class: "settings-grid"}, rows.map((r) =>
    h("label", {class: "setting"}, h("code", {}, r.name), r.el)));
  return {rows, box: rows.length ? box : h("p", {class: "hint muted"}, "No settings.")};
}

function parameterRow(p, onRemove) {
  const n = () => row.dataset.index;
  const label = (what) => `Parameter ${Number(n()) + 1} ${what}`;
  const els = {
    name: input({value: p.name, class: "p-name"}),
    type: select(PARAMETER_TYPES, p.type, {class: "p-type"}),
    min: input({value: p.min, class: "p-min", inputmode: "decimal"}),
    max: input({value: p.max, class: "p-max", inputmode: "decimal"}),
    step: input({value: p.step, class: "p-step", placeholder: "(none)"}),
    list: input({value: p.list, class: "p-list", placeholder: "a, b, c"}),
  };
  const remove = h("button", {class: "button ghost small", type: "button"}, "Remove");
  const row = h("div", {class: "param-row"}, Object.values(els), remove);
  row.relabel = (index) => {
    row.dataset.index = index;
    for (const [key, el] of Object.entries(els)) el.setAttribute("aria-label", label(key));
    remove.setAttribute("aria-label", `Remove parameter ${index + 1}`);
  };
  const showBounds = () => {
    const numeric = ["int", "double"].includes(els.type.value);
    for (const key of ["min", "max", "step"]) els[key].hidden = !numeric;
    els.list.hidden = numeric;
  };
  els.type.addEventListener("change", showBounds);
  remove.addEventListener("click", () => onRemove(row));
  showBounds();
  row.els = els;
  return row;
}

// The parameter rows (field-error notes sit between them).
const paramRows = (f) => [...f.paramList.querySelectorAll(":scope > .param-row")];

function values(f) {
  const settingValues = (rows) => rows.map((r) => ({name: r.name, value: r.el.value}));
  return {
    name: f.name.value, objectiveType: f.objectiveType.value, metric: f.metric.value,
    goal: f.goal.value, additionalMetrics: f.additional.value, algorithm: f.algorithm.value,
    algorithmSettings: settingValues(f.algorithmSettings.rows),
    earlyStopping: f.earlyStopping.value,
    earlyStoppingSettings: settingValues(f.earlyStoppingSettings.rows),
    parallel: f.parallel.value, maxTrials: f.maxTrials.value, maxFailed: f.maxFailed.value,
    resumePolicy: f.resumePolicy.value, collector: f.collector.value, image: f.image.value,
    command: f.command.value,
    parameters: paramRows(f).map((row) => Object.fromEntries(
      Object.entries(row.els).map(([k, el]) => [k, el.value]))),
  };
}

// The API path each control answers for (its field causes land next to it).
function pathIndex(f) {
  const at = new Map([
    ["metadata.name", f.name], ["spec.objective.type", f.objectiveType],
    ["spec.objective.objectiveMetricName", f.metric], ["spec.objective.goal", f.goal],
    ["spec.objective.additionalMetricNames", f.additional],
    ["spec.algorithm", f.algorithm], ["spec.algorithm.algorithmSettings", f.algorithmBox],
    ["spec.earlyStopping", f.earlyStopping],
    ["spec.earlyStopping.algorithmSettings", f.earlyStoppingBox],
    ["spec.parallelTrialCount", f.parallel], ["spec.maxTrialCount", f.maxTrials],
    ["spec.maxFailedTrialCount", f.maxFailed], ["spec.resumePolicy", f.resumePolicy],
    ["spec.metricsCollectorSpec", f.collector], ["spec.parameters", f.paramList],
    ["spec.trialTemplate", f.command], ["spec.trialTemplate.trialParameters", f.command],
    ["spec.trialTemplate.trialSpec.spec.template.spec.containers[0].image", f.image],
  ]);
  const settingsAt = (base, rows) => rows.filter((r) => r.el.value.trim() !== "")
    .forEach((r, i) => {
      at.set(`${base}[${i}]`, r.el);
    });
  settingsAt("spec.algorithm.algorithmSettings", f.algorithmSettings.rows);
  settingsAt("spec.earlyStopping.algorithmSettings", f.earlyStoppingSettings.rows);
  paramRows(f).forEach((row, i) => {
    const base = `spec.parameters[${i}]`;
    at.set(base, row.els.name);
    at.set(`${base}.name`, row.els.name);
    at.set(`${base}.parameterType`, row.els.type);
    at.set(`${base}.feasibleSpace`, row.els.min.hidden ? row.els.list : row.els.min);
    for (const key of ["min", "max", "step", "list"]) {
      at.set(`${base}.feasibleSpace.${key}`, row.els[key]);
    }
  });
  return at;
}

// The control for a cause: the longest registered path that is the cause's path or a
// parent of it (".x" or "[i]" follows).
function controlFor(index, path) {
  let best = null;
  for (const [key, el] of index) {
    const next = path.charAt(key.length);
    if (path.startsWith(key) && (next === "" || next === "." || next === "[") &&
        (!best || key.length > best[0].length)) best = [key, el];
  }
  return best && best[1];
}

function clearFieldErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.remove();
  for (const el of form.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    el.removeAttribute("aria-describedby");
  }
}

// Editing a field the API complained about takes its complaint away.
function clearOnEdit(event) {
  const el = event.target;
  if (!el.hasAttribute || !el.hasAttribute("aria-invalid")) return;
  for (const id of (el.getAttribute("aria-describedby") || "").split(/\s+/)) {
    const note = id && document.getElementById(id);
    if (note) note.remove();
  }
  el.removeAttribute("aria-invalid");
  el.removeAttribute("aria-describedby");
}

function showCauses(f, err, errors) {
  const index = pathIndex(f);
  const unplaced = [];
  for (const cause of err.causes || []) {
    const el = cause.field ? controlFor(index, cause.field) : null;
    if (!el) {
      unplaced.push(cause);
      continue;
    }
    const id = nextId("err");
    const note = h("p", {class: "field-error", id, role: "alert", dataset: {path: cause.field}},
      h("code", {class: "field"}, cause.field), " ", cause.message || cause.reason);
    const holder = el.closest(".param-row") || el.closest(".field") || el;
    holder.after(note);
    el.setAttribute("aria-invalid", "true");
    el.setAttribute("aria-describedby",
                    `${el.getAttribute("aria-describedby") || ""} ${id}`.trim());
  }
  put(errors, errorBox({message: err.message, causes: unplaced}));
}

function buildControls() {
  const f = {
    name: input({id: "xf-name", placeholder: "my-experiment"}),
    objectiveType: select(["maximize", "minimize"], "maximize", {id: "xf-objective-type"}),
    metric: input({id: "xf-metric", value: "accuracy"}),
    goal: input({id: "xf-goal", value: "0.99", inputmode: "decimal"}),
    additional: input({id: "xf-additional", placeholder: "loss, f1"}),
    algorithm: select(Object.keys(ALGORITHMS), "random", {id: "xf-algorithm"}),
    algorithmBox: h("div", {class: "settings"}),
    earlyStopping: select(Object.keys(EARLY_STOPPING), "none", {id: "xf-early-stopping"}),
    earlyStoppingBox: h("div", {class: "settings"}),
    parallel: input({id: "xf-parallel", value: "3", inputmode: "numeric"}),
    maxTrials: input({id: "xf-max-trials", value: "12", inputmode: "numeric"}),
    maxFailed: input({id: "xf-max-failed", value: "3", inputmode: "numeric"}),
    resumePolicy: select(RESUME_POLICIES, "Never", {id: "xf-resume-policy"}),
    collector: select(COLLECTORS, "StdOut", {id: "xf-collector"}),
    paramList: h("div", {class: "param-list"}),
    image: input({id: "xf-image", value: "python:3.11"}),
    command: control("textarea", {id: "xf-command", rows: 6, spellcheck: "false"}),
  };
  const pick = (key, table, select_, box, prefix) => {
    f[key] = settingsBox(table, select_.value, prefix);
    put(box, f[key].box,
        key === "algorithmSettings" && NAS_ALGORITHMS.has(select_.value)
          ? h("p", {class: "hint muted"}, "Neural architecture search needs a nasConfig ",
              "instead of parameters: add it in the YAML.") : null);
  };
  const pickAlgorithm = () => pick("algorithmSettings", ALGORITHMS, f.algorithm,
                                   f.algorithmBox, "Algorithm setting");
  const pickEarly = () => pick("earlyStoppingSettings", EARLY_STOPPING, f.earlyStopping,
                               f.earlyStoppingBox, "Early stopping setting");
  f.algorithm.addEventListener("change", pickAlgorithm);
  f.earlyStopping.addEventListener("change", pickEarly);
  pickAlgorithm();
  pickEarly();
  return f;
}

function parametersSection(f, regenerate) {
  const relabel = () => paramRows(f).forEach((row, i) => row.relabel(i));
  const addRow = (p) => {
    add(f.paramList, parameterRow(p, (row) => {
      row.remove();
      relabel();
      regenerate();
    }));
    relabel();
  };
  DEFAULT_PARAMETERS.forEach(addRow);
  f.paramList.addEventListener("input", regenerate);
  const more = h("button", {class: "button small", type: "button", id: "xf-add-parameter"},
                 "Add parameter");
  more.addEventListener("click", () => {
    addRow({name: "", type: "double", min: "", max: "", step: "", list: ""});
    paramRows(f).at(-1).els.name.focus();
  });
  return h("fieldset", {class: "field"}, h("legend", {}, "Parameters"),
    h("div", {class: "param-row param-head", "aria-hidden": "true"},
      ["name", "type", "min", "max", "step", "values (list)", ""].map((t) => h("span", {}, t))),
    f.paramList, h("div", {}, more));
}

export function renderExperimentForm(ctx) {
  const {main, ns} = ctx;
  const f = buildControls();
  // The default command follows the parameters and metric until the user edits it.
  // The trialParameters mapping (one per parameter) is shown as it will be submitted.
  let edited = false;
  const mapping = h("ul", {class: "mapping", "aria-label": "trial parameters"});
  const regenerate = () => {
    const parameters = values(f).parameters.filter((p) => p.name.trim());
    if (!edited) f.command.value = defaultCommand(f.metric.value.trim(), parameters).join("\n");
    put(mapping, parameters.map((p) => h("li", {},
      h("code", {}, `\${trialParameters.${trialParameterName(p.name.trim())}}`), " ← parameter ",
      h("code", {}, p.name.trim()))));
  };
  f.command.addEventListener("input", () => { edited = true; });
  f.metric.addEventListener("input", regenerate);
  const params = parametersSection(f, regenerate);
  regenerate();
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const submit = h("button", {class: "button primary", type: "submit", id: "xf-submit"},
                   "Create");
  const toYamlButton = h("button", {class: "button", type: "button", id: "xf-to-yaml"},
                         "Edit as YAML");
  const form = h("form", {class: "form wide", novalidate: true, "aria-label": "New experiment"},
    field("Name", f.name, "Lower-case letters, digits and dashes."),
    h("fieldset", {class: "field"}, h("legend", {}, "Objective"),
      h("div", {class: "field-row three"}, field("Type", f.objectiveType),
        field("Metric", f.metric, "objectiveMetricName"), field("Goal", f.goal, "optional")),
      field("Additional metrics", f.additional, "comma-separated")),
    h("fieldset", {class: "field"}, h("legend", {}, "Search algorithm"),
      field("Algorithm", f.algorithm), f.algorithmBox),
    h("fieldset", {class: "field"}, h("legend", {}, "Early stopping"),
      field("Early stopping", f.earlyStopping), f.earlyStoppingBox),
    h("div", {class: "field-row three"}, field("Parallel trials", f.parallel),
      field("Max trials", f.maxTrials), field("Max failed trials", f.maxFailed)),
    h("div", {class: "field-row"}, field("Resume policy", f.resumePolicy),
      field("Metrics collector", f.collector)),
    params,
    h("fieldset", {class: "field"}, h("legend", {}, "Trial template (batch/v1 Job)"),
      field("Image", f.image),
      field("Command", f.command, "One argument per line. ${trialParameters.<name>} is " +
            "replaced by the trial's value; a parameter a-b is the trial parameter a_b."),
      h("div", {class: "field"}, h("span", {class: "label"}, "Trial parameters"), mapping)),
    errors, h("div", {class: "actions"}, toYamlButton, submit));
  form.addEventListener("input", (event) => {
    clearOnEdit(event);
    // Every cause answered: the summary above the buttons goes too.
    if (!form.querySelector(".field-error") && !errors.querySelector(".causes li")) put(errors);
  });
  const card = h("div", {class: "card pad"}, form);
  add(main, pageHeader("New experiment",
                       h("a", {class: "button ghost", href: "#/experiments"}, "Cancel")), card);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFieldErrors(form);
    put(errors);
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      const exp = buildExperiment(values(f), ns);
      await request("POST", pathFor("Experiment", ns), {
        body: JSON.stringify(exp), contentType: "application/json"});
      window.location.hash = `#/experiments/${encodeURIComponent(exp.metadata.name)}`;
    } catch (err) {
      showCauses(f, err, errors);
      submit.disabled = false;
      submit.textContent = "Create";
    }
  });
  toYamlButton.addEventListener("click", () => {
    renderYamlStep(ctx, card, toYaml(buildExperiment(values(f), ns)), form);
  });
}

// The generated YAML in an editor; submitted as YAML (the API parses it). "Back to the form"
// drops the YAML edits.
function renderYamlStep(ctx, card, yaml, form) {
  const {ns} = ctx;
  const text = control("textarea", {id: "xf-yaml", rows: 30, spellcheck: "false",
                                    class: "yaml-editor"});
  text.value = yaml;
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const submit = h("button", {class: "button primary", type: "submit", id: "xf-yaml-submit"},
                   "Create");
  const back = h("button", {class: "button", type: "button", id: "xf-back"}, "Back to the form");
  const yamlForm = h("form", {class: "form wide", "aria-label": "New experiment as YAML"},
    field("Experiment YAML", text, "Edits here are kept only while you stay on this step."),
    errors, h("div", {class: "actions"}, back, submit));
  back.addEventListener("click", () => put(card, form));
  yamlForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const made = await request("POST", pathFor("Experiment", ns), {
        body: text.value, contentType: "application/yaml"});
      window.location.hash = `#/experiments/${encodeURIComponent(made.metadata.name)}`;
    } catch (err) {
      put(errors, errorBox(err));
      submit.disabled = false;
    }
  });
  put(card, yamlForm);
  text.focus();
}
