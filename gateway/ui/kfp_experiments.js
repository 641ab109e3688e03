// KFP experiments (list, create, archive, restore), as Kubeflow Pipelines' UI keeps them.

import {add, ago, clear, emptyState, errorBox, h, keepFresh, pageHeader, put, table}
  from "./dom.js";
import {action, byCreated, field, kfp, kfpList, stateBadge} from "./kfp_api.js";

function newExperimentForm(ns, onCreated) {
  const name = h("input", {id: "exp-name", autocomplete: "off", required: true});
  const description = h("input", {id: "exp-description", autocomplete: "off"});
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const form = h("form", {class: "form card pad", "aria-label": "New experiment", hidden: true},
    field("Experiment name", name), field("Experiment description", description), errors,
    h("div", {class: "actions"}, h("button", {class: "button primary", type: "submit"},
                                     "Create experiment")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(errors);
    try {
      await kfp("POST", "/experiments", {display_name: name.value.trim(),
                                         description: description.value.trim(), namespace: ns});
      form.reset();
      form.hidden = true;
      await onCreated();
    } catch (err) {
      put(errors, errorBox(err));
    }
  });
  return form;
}

export function renderExperimentsKfp(ctx) {
  const {main, ns, signal} = ctx;
  let archived = false;
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading experiments…"));
  const toolbar = h("div", {class: "toolbar"});
  let experiments = [];
  let runs = [];
  const refresh = async () => {
    [experiments, runs] = await Promise.all([
      kfpList("/experiments", "experiments", ns, signal), kfpList("/runs", "runs", ns, signal)]);
    draw();
  };
  const form = newExperimentForm(ns, refresh);
  add(main, pageHeader("KFP experiments", h("button", {class: "button primary", type: "button",
    id: "new-kfp-experiment", onclick: () => { form.hidden = !form.hidden; }},
    "New experiment")), form, toolbar, messages, body);
  const draw = () => {
    const view = (flag, label) => h("button", {class: `button small${archived === flag
      ? " primary" : ""}`, type: "button", "aria-pressed": String(archived === flag),
      onclick: () => { archived = flag; draw(); }}, label);
    put(toolbar, h("span", {class: "row-actions"}, view(false, "Active"), view(true, "Archived")));
    const rows = byCreated(experiments).filter((e) => (e.storage_state === "ARCHIVED") ===
                                                      archived);
    if (!rows.length) {
      put(body, emptyState(archived ? "No archived experiments" : "No experiments yet",
        "Runs go to the experiment chosen when they start (Default if none)."));
      return;
    }
    const last = (e) => runs.filter((r) => r.experiment_id === e.experiment_id).slice(0, 5);
    put(body, table([
      {title: "Experiment", cell: (e) => h("a", {href: `#/kfp/runs?experiment=${e.experiment_id}`},
                                           e.display_name)},
      {title: "Description", cell: (e) => e.description || h("span", {class: "muted"}, "—")},
      {title: "Last runs", cell: (e) => h("span", {class: "row-actions"},
        last(e).map((r) => stateBadge(r.state)))},
      {title: "Created", cell: (e) => ago(e.created_at)},
      {title: "", class: "right", cell: (e) => action(archived ? "Restore" : "Archive",
        async () => {
          await kfp("POST", `/experiments/${e.experiment_id}:${archived ? "unarchive"
                                                                          : "archive"}`);
          await refresh();
        }, messages, {"aria-label": `${archived ? "Restore" : "Archive"} ${e.display_name}`})},
    ], rows.map((e) => ({...e, name: e.display_name}))));
  };
  keepFresh(body, refresh, signal);
}
