// How a Katib experiment is doing, as the list and the experiment page show it.

import {h} from "./dom.js";

// Katib reports state as conditions; the last true one is the current state (an experiment
// being deleted is Terminating until its trials are gone).
export function experimentState(exp) {
  if (exp.metadata && exp.metadata.deletionTimestamp) return "Terminating";
  const conditions = ((exp.status && exp.status.conditions) || []).filter((c) => c.status === "True");
  return conditions.length ? conditions[conditions.length - 1].type : "Created";
}

export function bestObjective(exp) {
  const name = exp.spec && exp.spec.objective && exp.spec.objective.objectiveMetricName;
  const best = exp.status && exp.status.currentOptimalTrial;
  const metric = best && best.observation && (best.observation.metrics || [])
    .find((m) => m.name === name);
  if (!metric) return h("span", {class: "muted"}, "—");
  const type = exp.spec.objective.type;
  const value = type === "minimize" ? (metric.min ?? metric.latest) : (metric.max ?? metric.latest);
  return h("span", {title: `${name} (${type}) in ${best.bestTrialName}`}, formatNumber(value));
}

export function formatNumber(value) {
  const n = Number(value);
  return Number.isFinite(n) ? String(Number(n.toPrecision(5))) : String(value ?? "—");
}

export function trialCounts(st) {
  st = st || {};
  const parts = [h("strong", {}, `${st.trialsSucceeded || 0}/${st.trials || 0}`), " succeeded"];
  if (st.trialsRunning) parts.push(h("span", {class: "pill running"}, `${st.trialsRunning} running`));
  if (st.trialsFailed) parts.push(h("span", {class: "pill failed"}, `${st.trialsFailed} failed`));
  return h("span", {class: "counts"}, parts);
}
