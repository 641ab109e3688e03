// Experiments (Katib): the list with trial counts and best objective, and one experiment's
// trials as a table and a parallel-coordinates chart.

import {getJSON, pathFor} from "./api.js";
import {parallelCoordinates} from "./charts.js";
import {add, ago, badge, clear, emptyState, errorBox, h, pageHeader, put, table} from "./dom.js";
import {byNewest, followList, poll} from "./live.js";

const DONE = new Set(["Succeeded", "Failed"]);

// Katib reports state as conditions; the last true one is the current state.
export function experimentState(exp) {
  const conditions = ((exp.status && exp.status.conditions) || []).filter((c) => c.status === "True");
  return conditions.length ? conditions[conditions.length - 1].type : "Created";
}

function bestObjective(exp) {
  const name = exp.spec && exp.spec.objective && exp.spec.objective.objectiveMetricName;
  const best = exp.status && exp.status.currentOptimalTrial;
  const metric = best && best.observation && (best.observation.metrics || [])
    .find((m) => m.name === name);
  if (!metric) return h("span", {class: "muted"}, "—");
  const type = exp.spec.objective.type;
  const value = type === "minimize" ? (metric.min ?? metric.latest) : (metric.max ?? metric.latest);
  return h("span", {title: `${name} (${type}) in ${best.bestTrialName}`}, formatNumber(value));
}

function formatNumber(value) {
  const n = Number(value);
  return Number.isFinite(n) ? String(Number(n.toPrecision(5))) : String(value ?? "—");
}

function trialCounts(st) {
  st = st || {};
  const parts = [h("strong", {}, `${st.trialsSucceeded || 0}/${st.trials || 0}`), " succeeded"];
  if (st.trialsRunning) parts.push(h("span", {class: "pill running"}, `${st.trialsRunning} running`));
  if (st.trialsFailed) parts.push(h("span", {class: "pill failed"}, `${st.trialsFailed} failed`));
  return h("span", {class: "counts"}, parts);
}

export function renderExperiments(ctx) {
  const {main, ns, signal} = ctx;
  const status = h("span", {class: "live"}, "connecting…");
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading experiments…"));
  add(main, pageHeader("Experiments (AutoML)", status), body);
  followList(pathFor("Experiment", ns), signal, (items, live, err) => {
    status.textContent = live ? "live" : "reconnecting…";
    status.classList.toggle("on", live);
    if (err) {
      if (!body.querySelector("table")) put(body, errorBox(err));
      return;
    }
    clear(body);
    if (!items.length) {
      add(body, emptyState("No experiments yet",
        "Apply a Katib Experiment with ", h("code", {}, "shipyard apply -f tests/seed/experiment.yaml"),
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

export function renderExperiment(ctx, name) {
  const {main, ns, signal} = ctx;
  const path = `${pathFor("Experiment", ns)}/${encodeURIComponent(name)}`;
  const summary = h("div", {class: "summary"});
  const chart = h("div", {class: "card chart"});
  const trials = h("div", {class: "card"});
  add(main, pageHeader(name, h("a", {class: "button ghost", href: "#/experiments"},
                                  "← All experiments")),
              summary, h("h2", {class: "section"}, "Trials"), chart, trials);

  poll(async () => {
    let exp;
    let data;
    try {
      [exp, data] = await Promise.all([getJSON(path, signal),
                                       getJSON(`${path}/trialsummary`, signal)]);
    } catch (err) {
      put(chart, errorBox(err));
      return err.status !== 404;
    }
    const state = experimentState(exp);
    const obj = data.objective || {};
    put(summary, badge(state), trialCounts(exp.status),
      h("span", {}, `Objective: ${obj.type || ""} `, h("code", {}, obj.name || "?"),
        obj.goal !== undefined && obj.goal !== null ? ` (goal ${obj.goal})` : ""),
      h("span", {}, "Best: ", bestObjective(exp),
        data.bestTrialName ? h("span", {class: "muted"}, ` in ${data.bestTrialName}`) : ""),
      h("span", {}, "Created ", ago(exp.metadata.creationTimestamp)));
    clear(chart);
    if (!(data.trials || []).length) {
      add(chart, emptyState("No trials yet", "Trials appear here as the suggestion service ",
                              "proposes them."));
    } else {
      const width = Math.max(640, Math.min(1400, chart.clientWidth - 32 || 1000));
      add(chart, parallelCoordinates(data, {width, height: 300, best: data.bestTrialName}));
    }
    clear(trials);
    if ((data.trials || []).length) {
      const params = data.parameters || [];
      add(trials, table([
        {title: "Trial", cell: (t) => [t.name, t.name === data.bestTrialName
          ? h("span", {class: "pill best"}, "best") : null]},
        {title: "Status", cell: (t) => badge(t.status)},
        ...params.map((p) => ({title: p, class: "num", cell: (t) => formatNumber(t.parameters[p])})),
        {title: obj.name || "objective", class: "num objective",
         cell: (t) => (t.objective === null || t.objective === undefined
           ? h("span", {class: "muted"}, "—") : formatNumber(t.objective))},
      ], data.trials, {rowClass: (t) => (t.name === data.bestTrialName ? "best" : undefined)}));
    }
    return !DONE.has(state);
  }, 3000, signal);
}
