// Experiments (Katib): the list with trial counts and best objective. Routes:
// #/experiments, #/experiments/+new (the form, experiment_form.js; "+" is in no object name)
// and #/experiments/<name> (experiment_detail.js).

import {pathFor} from "./api.js";
import {add, ago, badge, clear, emptyState, errorBox, h, pageHeader, put, table} from "./dom.js";
import {renderExperimentPage} from "./experiment_detail.js";
import {renderExperimentForm} from "./experiment_form.js";
import {bestObjective, experimentState, trialCounts} from "./experiment_status.js";
import {byNewest, followList} from "./live.js";

export {experimentState};

export function renderExperiment(ctx, name) {
  if (name === "+new") renderExperimentForm(ctx);
  else renderExperimentPage(ctx, name);
}

export function renderExperiments(ctx) {
  const {main, ns, signal} = ctx;
  const status = h("span", {class: "live"}, "connecting…");
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading experiments…"));
  const newButton = h("a", {class: "button primary", href: "#/experiments/+new",
                            id: "new-experiment"}, "New experiment");
  add(main, pageHeader("Experiments (AutoML)", status, newButton), body);
  followList(pathFor("Experiment", ns), signal, (items, live, err) => {
    status.textContent = live ? "live" : "reconnecting…";
    status.classList.toggle("on", live);
    if (err) {
      if (!body.querySelector("table")) put(body, errorBox(err));
      return;
    }
    clear(body);
    if (!items.length) {
      add(body, emptyState("No experiments yet", "Press ", h("strong", {}, "New experiment"),
        ", or apply a Katib Experiment with ", h("code", {}, "shipyard apply -f tests/seed/experiment.yaml"),
        " (see examples/automl/ for one that runs locally)."));
      return;
    }
    add(body, table([
      {title: "Name", cell: (e) => h("a", {href: `#/experiments/${encodeURIComponent(e.metadata.name)}`},
                                   e.metadata.name)},
      {title: "Status", cell: (e) => badge(experimentState(e))},
      {title: "Trials", cell: (e) => trialCounts(e.status)},
      {title: "Best objective", class: "num", cell: bestObjective},
      {title: "Algorithm", cell: (e) => (e.spec.algorithm && e.spec.algorithm.algorithmName) || "—"},
      {title: "Created", cell: (e) => ago(e.metadata.creationTimestamp)},
    ], byNewest(items)));
  });
}
