// One Katib experiment (#/experiments/<name>): status, the best trial (currentOptimalTrial),
// the parallel-coordinates and objective-over-trials charts, the trials table with each
// trial's log (the API `shipyard logs trial` reads), delete, and restart when the
// resumePolicy allows it (a higher maxTrialCount). Kept current by polling.

import {collectionPath, getJSON, getText, pathFor, request} from "./api.js";
import {objectiveOverTrials, parallelCoordinates} from "./charts.js";
import {add, ago, badge, clear, emptyState, errorBox, h, pageHeader, put,
        table} from "./dom.js";
import {bestObjective, experimentState, formatNumber, trialCounts} from "./experiment_status.js";
import {poll} from "./live.js";

const EXPERIMENT_LABEL = "katib.kubeflow.org/experiment";
const RESTARTABLE = new Set(["LongRunning", "FromVolume"]);

function conditionMessage(exp) {
  const conditions = ((exp.status && exp.status.conditions) || [])
    .filter((c) => c.status === "True");
  const last = conditions[conditions.length - 1];
  return last && last.message ? h("span", {class: "muted"}, last.message) : null;
}

function bestTrialCard(exp, data) {
  const best = exp.status && exp.status.currentOptimalTrial;
  if (!best || !best.bestTrialName) {
    return h("p", {class: "muted"}, "No best trial yet: it is chosen once a trial reports ",
             h("code", {}, (data.objective && data.objective.name) || "the objective"), ".");
  }
  const metrics = (best.observation && best.observation.metrics) || [];
  return h("dl", {class: "facts best-facts", "aria-label": "best trial"},
    h("dt", {}, "Trial"), h("dd", {}, h("strong", {}, best.bestTrialName)),
    (best.parameterAssignments || []).map((a) => [h("dt", {}, a.name),
                                                   h("dd", {}, formatNumber(a.value))]),
    metrics.map((m) => [h("dt", {}, m.name), h("dd", {}, formatNumber(m.latest),
      h("span", {class: "muted"}, ` (min ${formatNumber(m.min)}, max ${formatNumber(m.max)})`))]));
}

function completionOrder(data, trials) {
  const done = new Map(trials.map((t) => [t.metadata.name,
                                          (t.status && t.status.completionTime) || null]));
  return (data.trials || [])
    .filter((t) => t.objective !== null && t.objective !== undefined && done.get(t.name))
    .sort((a, b) => done.get(a.name).localeCompare(done.get(b.name)) ||
                    a.name.localeCompare(b.name))
    .map((t) => ({name: t.name, objective: t.objective}));
}

function restartControls(view, exp) {
  const policy = exp.spec.resumePolicy || "Never";
  const state = experimentState(exp);
  if (!RESTARTABLE.has(policy)) {
    return h("button", {class: "button", type: "button", disabled: true, id: "restart",
                        title: `resumePolicy ${policy}: the experiment cannot be restarted`},
             "Restart");
  }
  const count = h("input", {type: "number", min: 1, class: "small-number", id: "restart-count",
                            "aria-label": "New max trial count",
                            value: (exp.spec.maxTrialCount || 0) +
                                   (exp.spec.parallelTrialCount || 1)});
  // As Katib: only an experiment that stopped at maxTrialCount continues (not a goal reached).
  const succeeded = ((exp.status && exp.status.conditions) || [])
    .find((c) => c.type === "Succeeded" && c.status === "True");
  const reason = succeeded && succeeded.reason;
  const ok = state === "Succeeded" && reason === "ExperimentMaxTrialsReached";
  const go = h("button", {class: "button", type: "button", id: "restart", disabled: !ok,
                          title: ok ? "Raise maxTrialCount and continue"
                            : `Only an experiment that reached maxTrialCount can be restarted` +
                              (reason ? ` (this one: ${reason})` : "")}, "Restart");
  go.addEventListener("click", async () => {
    go.disabled = true;
    try {
      await request("PATCH", view.path, {
        body: JSON.stringify({spec: {maxTrialCount: Number(count.value)}}),
        contentType: "application/merge-patch+json"});
      put(view.messages, h("p", {class: "ok", role: "status"},
                           `Restarting with maxTrialCount ${count.value}.`));
      view.refresh();
    } catch (err) {
      put(view.messages, errorBox(err));
      go.disabled = false;
    }
  });
  return h("span", {class: "restart"}, count, go);
}

function deleteButton(view, name) {
  const del = h("button", {class: "button danger", type: "button", id: "delete-experiment"},
                "Delete");
  del.addEventListener("click", async () => {
    if (!window.confirm(`Delete experiment ${name} and its trials?`)) return;
    del.disabled = true;
    try {
      await request("DELETE", view.path);
      window.location.hash = "#/experiments";
    } catch (err) {
      put(view.messages, errorBox(err));
      del.disabled = false;
    }
  });
  return del;
}

async function showLog(view, trial) {
  view.logTrial = trial;
  put(view.logTitle, "Log of ", h("code", {}, trial));
  view.logPanel.hidden = false;
  try {
    const text = await getText(`${view.trialsPath}/${encodeURIComponent(trial)}/log?tailLines=1000`,
                               view.signal);
    if (view.logTrial === trial) put(view.log, text || "(no output yet)");
  } catch (err) {
    if (view.logTrial === trial && !view.signal.aborted) put(view.log, err.message);
  }
}

function trialsTable(view, data) {
  const obj = data.objective || {};
  const params = data.parameters || [];
  const others = (data.metrics || []).filter((m) => m !== obj.name);
  return table([
    {title: "Trial", cell: (t) => [t.name, t.name === data.bestTrialName
      ? h("span", {class: "pill best"}, "best") : null]},
    {title: "Status", cell: (t) => badge(t.status)},
    ...params.map((p) => ({title: p, class: "num", cell: (t) => formatNumber(t.parameters[p])})),
    {title: obj.name || "objective", class: "num objective",
     cell: (t) => (t.objective === null || t.objective === undefined
       ? h("span", {class: "muted"}, "—") : formatNumber(t.objective))},
    ...others.map((m) => ({title: m, class: "num", cell: (t) => formatNumber(t.metrics[m])})),
    {title: "", class: "right", cell: (t) => h("button", {
      class: "button small", type: "button", "aria-label": `Logs of ${t.name}`,
      onclick: () => showLog(view, t.name)}, "Logs")},
  ], data.trials, {rowClass: (t) => (t.name === data.bestTrialName ? "best" : undefined)});
}

function renderCharts(view, exp, data, trials) {
  const {chart, progress} = view;
  clear(chart);
  clear(progress);
  if (!(data.trials || []).length) {
    add(chart, emptyState("No trials yet", "Trials appear here as the suggestion service ",
                          "proposes them."));
    return;
  }
  const width = Math.max(640, Math.min(1400, chart.clientWidth - 32 || 1000));
  add(chart, parallelCoordinates(data, {width, height: 300, best: data.bestTrialName}));
  const points = completionOrder(data, trials);
  const obj = data.objective || {};
  add(progress, points.length
    ? objectiveOverTrials(points, {width, height: 240, type: obj.type, metric: obj.name,
                                   best: data.bestTrialName})
    : h("p", {class: "muted pad"}, "No trial has finished with an objective yet."));
}

export function renderExperimentPage(ctx, name) {
  const {main, ns, signal} = ctx;
  const path = `${pathFor("Experiment", ns)}/${encodeURIComponent(name)}`;
  const trialsPath = collectionPath("kubeflow.org/v1beta1", "trials", ns);
  const view = {
    path, trialsPath, signal, logTrial: null,
    summary: h("div", {class: "summary"}),
    messages: h("div", {class: "messages", "aria-live": "polite"}),
    best: h("div", {class: "card pad best-card"}),
    chart: h("div", {class: "card chart"}),
    progress: h("div", {class: "card chart progress-chart"}),
    trials: h("div", {class: "card"}),
    logTitle: h("h2", {class: "section"}),
    log: h("pre", {class: "log", "aria-label": "trial log"}),
    actions: h("span", {class: "row-actions"}),
  };
  view.logPanel = h("section", {hidden: true}, view.logTitle, view.log);
  add(main, pageHeader(name, view.actions, h("a", {class: "button ghost", href: "#/experiments"},
                                              "← All experiments")),
      view.summary, view.messages, h("h2", {class: "section"}, "Best trial"), view.best,
      h("h2", {class: "section"}, "Trials"), view.chart,
      h("h2", {class: "section"}, "Objective over trials"), view.progress,
      view.trials, view.logPanel);
  let shownPolicy = null;
  const refresh = async () => {
    let exp, data, trials;
    try {
      [exp, data, trials] = await Promise.all([
        getJSON(path, signal), getJSON(`${path}/trialsummary`, signal),
        getJSON(`${trialsPath}?labelSelector=${encodeURIComponent(`${EXPERIMENT_LABEL}=${name}`)}`,
                signal)]);
    } catch (err) {
      if (!signal.aborted) put(view.chart, errorBox(err));
      return err.status !== 404;
    }
    const state = experimentState(exp);
    const obj = data.objective || {};
    put(view.summary, badge(state), trialCounts(exp.status),
      h("span", {}, `Objective: ${obj.type || ""} `, h("code", {}, obj.name || "?"),
        obj.goal !== undefined && obj.goal !== null ? ` (goal ${obj.goal})` : ""),
      h("span", {}, "Best: ", bestObjective(exp)),
      h("span", {}, "Algorithm: ", h("code", {}, exp.spec.algorithm.algorithmName)),
      h("span", {}, `Max trials ${exp.spec.maxTrialCount ?? "—"}, resume `,
        h("code", {}, exp.spec.resumePolicy || "Never")),
      h("span", {}, "Created ", ago(exp.metadata.creationTimestamp)), conditionMessage(exp));
    const policyKey = `${state}/${exp.spec.resumePolicy}/${exp.spec.maxTrialCount}`;
    if (policyKey !== shownPolicy) {
      shownPolicy = policyKey;
      put(view.actions, restartControls(view, exp), deleteButton(view, name));
    }
    put(view.best, bestTrialCard(exp, data));
    renderCharts(view, exp, data, trials.items || []);
    put(view.trials, (data.trials || []).length ? trialsTable(view, data) : null);
    const shown = (data.trials || []).find((t) => t.name === view.logTrial);
    if (shown && !["Succeeded", "Failed", "EarlyStopped", "MetricsUnavailable"]
      .includes(shown.status)) showLog(view, shown.name);
    return true;
  };
  view.refresh = refresh;
  poll(refresh, 2500, signal);
}
