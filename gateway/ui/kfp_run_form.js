// Starting a KFP run: a pipeline version, a name, an experiment, the parameters the version's
// spec declares (typed as its inputs), and either one run now or a recurring run (a periodic
// interval or a cron schedule, max concurrency, enabled or not).

import {add, clear, errorBox, h, pageHeader, put} from "./dom.js";
import {byCreated, coerce, field, kfp, kfpList, specInputs} from "./kfp_api.js";

const UNITS = [["seconds", 1], ["minutes", 60], ["hours", 3600], ["days", 86400]];

const input = (id, attrs = {}) => h("input", {id, name: id, autocomplete: "off", ...attrs});

function options(select, items, value, label, id) {
  put(select, items.map((it) => h("option", {value: it[id], selected: it[id] === value},
                                      it[label])));
}

function radio(name, value, label, checked) {
  const id = `${name}-${value}`;
  return h("span", {class: "inline"}, h("input", {type: "radio", name, id, value, checked}),
           h("label", {for: id}, label));
}

export async function renderRunForm(ctx, query) {
  const {main, ns, signal} = ctx;
  const card = h("div", {class: "card pad"}, h("p", {class: "muted"}, "Loading…"));
  add(main, pageHeader("Start a run", h("a", {class: "button ghost", href: "#/kfp/runs"},
                                            "Cancel")), card);
  let pipelines, experiments, source = null;
  try {
    [pipelines, experiments, source] = await Promise.all([
      kfpList("/pipelines", "pipelines", ns, signal),
      kfpList("/experiments", "experiments", ns, signal),
      query.get("clone") ? kfp("GET", `/runs/${query.get("clone")}`, undefined, signal) : null]);
  } catch (err) {
    if (!signal.aborted) put(card, errorBox(err));
    return;
  }
  if (source) {  // "Clone run": the source run's pipeline version, experiment and parameters
    const ref = source.pipeline_version_reference || {};
    if (ref.pipeline_id) query.set("pipeline", ref.pipeline_id);
    if (ref.pipeline_version_id) query.set("version", ref.pipeline_version_id);
    query.set("experiment", source.experiment_id);
  }
  if (!pipelines.length) {
    put(card, h("p", {}, "Upload a pipeline first: ", h("a", {href: "#/kfp/pipelines"},
                                                          "Pipelines")));
    return;
  }
  const f = {
    pipeline: h("select", {id: "run-pipeline"}),
    version: h("select", {id: "run-version"}),
    name: input("run-name", {required: true}),
    description: input("run-description"),
    experiment: h("select", {id: "run-experiment"}),
    interval: input("run-interval", {type: "number", min: 1, value: 1}),
    unit: h("select", {id: "run-interval-unit"},
      UNITS.map(([u]) => h("option", {value: u, selected: u === "minutes"}, u))),
    cron: input("run-cron", {value: "0 0 * * * *", placeholder: "s m h dom mon dow"}),
    concurrency: input("run-concurrency", {type: "number", min: 1, max: 10, value: 10}),
    enabled: h("input", {type: "checkbox", id: "run-enabled", checked: true}),
  };
  const available = experiments.filter((e) => e.storage_state !== "ARCHIVED");
  put(f.experiment, h("option", {value: ""}, "Default"), available.map((e) =>
    h("option", {value: e.experiment_id, selected: e.experiment_id === query.get("experiment")},
      e.display_name)));
  options(f.pipeline, byCreated(pipelines), query.get("pipeline") || byCreated(pipelines)[0]
    .pipeline_id, "display_name", "pipeline_id");
  const params = h("fieldset", {class: "field", id: "run-parameters"});
  const recurring = h("div", {class: "recurring", hidden: true});
  let versions = [];
  let inputs = [];
  const showParams = () => {
    const v = versions.find((x) => x.pipeline_version_id === f.version.value);
    inputs = v ? specInputs(v.pipeline_spec) : [];
    put(params, h("legend", {}, "Run parameters"), inputs.length ? inputs.map((i) =>
      field(i.name, input(`param-${i.name}`, {value: i.value, dataset: {param: i.name}}),
            i.description ? `${i.type}: ${i.description}` : i.type))
      : h("p", {class: "muted"}, "This version takes no parameters."));
  };
  const loadVersions = async (want) => {
    const out = await kfp("GET", `/pipelines/${f.pipeline.value}/versions?page_size=1000`,
                          undefined, signal);
    versions = byCreated(out.pipeline_versions || []);
    options(f.version, versions, want || (versions[0] || {}).pipeline_version_id,
            "display_name", "pipeline_version_id");
    if (!f.name.value || f.name.dataset.auto) {
      const p = pipelines.find((x) => x.pipeline_id === f.pipeline.value);
      f.name.value = `Run of ${p.display_name} (${new Date().toISOString().slice(0, 19)})`;
      f.name.dataset.auto = "1";
    }
    showParams();
  };
  f.name.addEventListener("input", () => { delete f.name.dataset.auto; });
  f.pipeline.addEventListener("change", () => loadVersions(null));
  f.version.addEventListener("change", showParams);
  const trigger = h("div", {class: "field"}, h("span", {}, "Trigger"),
    h("div", {class: "inline"}, radio("trigger", "periodic", "Periodic", true),
      radio("trigger", "cron", "Cron", false)));
  const periodic = h("div", {class: "field-row"}, field("Run every", f.interval),
                     field("Unit", f.unit));
  const cron = h("div", {hidden: true}, field("Cron expression", f.cron,
    "Six fields, with seconds first: \"0 */5 * * * *\" is every five minutes."));
  add(recurring, trigger, periodic, cron, field("Maximum concurrent runs", f.concurrency),
      h("div", {class: "field inline"}, f.enabled, h("label", {for: "run-enabled"}, "Enabled")));
  trigger.addEventListener("change", (e) => {
    cron.hidden = e.target.value !== "cron";
    periodic.hidden = e.target.value === "cron";
  });
  const type = h("div", {class: "field"}, h("span", {}, "Run type"), h("div", {class: "inline"},
    radio("run-type", "one-off", "One-off", true), radio("run-type", "recurring", "Recurring",
                                                           false)));
  type.addEventListener("change", (e) => { recurring.hidden = e.target.value !== "recurring"; });
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const submit = h("button", {class: "button primary", type: "submit", id: "run-submit"}, "Start");
  const form = h("form", {class: "form", "aria-label": "Start a run"},
    h("div", {class: "field-row"}, field("Pipeline", f.pipeline), field("Version", f.version)),
    field("Run name", f.name), field("Description", f.description),
    field("Experiment", f.experiment), type, recurring, params, errors,
    h("div", {class: "actions"}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(errors);
    submit.disabled = true;
    try {
      const parameters = {};
      for (const i of inputs) {
        parameters[i.name] = coerce(i, params.querySelector(`[data-param="${CSS.escape(i.name)}"]`).value);
      }
      const body = {
        display_name: f.name.value.trim(), description: f.description.value.trim(),
        experiment_id: f.experiment.value || undefined, namespace: ns,
        pipeline_version_reference: {pipeline_id: f.pipeline.value,
                                     pipeline_version_id: f.version.value},
        runtime_config: {parameters},
      };
      if (recurring.hidden) {
        const run = await kfp("POST", "/runs", body);
        window.location.hash = `#/kfp/runs/${run.run_id}`;
        return;
      }
      const isCron = form.querySelector("input[name=trigger]:checked").value === "cron";
      const seconds = Number(f.interval.value) * UNITS.find(([u]) => u === f.unit.value)[1];
      body.trigger = isCron ? {cron_schedule: {cron: f.cron.value.trim()}}
        : {periodic_schedule: {interval_second: String(seconds)}};
      body.max_concurrency = f.concurrency.value;
      body.mode = f.enabled.checked ? "ENABLE" : "DISABLE";
      await kfp("POST", "/recurringruns", body);
      window.location.hash = "#/kfp/recurring";
    } catch (err) {
      put(errors, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  try {
    await loadVersions(query.get("version"));
  } catch (err) {
    if (!signal.aborted) put(errors, errorBox(err));
  }
  if (source) {
    f.name.value = `Clone of ${source.display_name}`;
    delete f.name.dataset.auto;
    for (const [name, value] of Object.entries((source.runtime_config || {}).parameters || {})) {
      const el = params.querySelector(`[data-param="${CSS.escape(name)}"]`);
      if (el) el.value = typeof value === "object" ? JSON.stringify(value) : String(value);
    }
  }
  put(card, form);  // complete: versions, parameters and the suggested name are in place
}
