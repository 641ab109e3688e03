// Models: KServe InferenceServices (serving.kserve.io/v1beta1) through the serving API, as
// Kubeflow's models web app shows them: status with its reason, where the model answers,
// predictor format and runtime, revisions and the traffic split; a details page with the
// conditions and components, promote / roll back of a canary, a test-inference panel, delete.
// Routes: #/models, #/models/<name>.

import {inferenceHost, pathFor, request} from "./api.js";
import {add, ago, badge, emptyState, errorBox, h, pageHeader, put, table} from "./dom.js";
import {byNewest, followList, poll} from "./live.js";
import {renderInferencePanel} from "./model-infer.js";

const LEGACY = ["sklearn", "xgboost", "lightgbm", "onnx", "pytorch", "huggingface",
                "tensorflow", "pmml", "paddle", "triton"];

export function readyCondition(obj) {
  const cond = ((obj.status && obj.status.conditions) || []).find((c) => c.type === "Ready");
  if (!cond) return {state: "Pending", reason: "", message: ""};
  return {state: cond.status === "True" ? "Ready" : "NotReady", reason: cond.reason || "",
          message: cond.message || ""};
}

function statusCell(obj) {
  const {state, reason, message} = readyCondition(obj);
  const el = badge(state);
  if (message) el.title = message;
  return h("span", {class: "model-status"}, el,
           reason ? h("span", {class: "muted small"}, ` ${reason}`) : null);
}

export function predictorFormat(obj) {
  const p = (obj.spec && obj.spec.predictor) || {};
  if (p.model) {
    return {format: (p.model.modelFormat && p.model.modelFormat.name) || "—",
            runtime: p.model.runtime || null};
  }
  const legacy = LEGACY.find((k) => p[k]);
  if (legacy) return {format: legacy, runtime: null};
  if (p.containers) return {format: "custom container", runtime: null};
  return {format: "—", runtime: null};
}

function runtimeOf(obj) {
  const st = obj.status || {};
  return predictorFormat(obj).runtime || st.servingRuntimeName || st.clusterServingRuntimeName
    || "auto";
}

export const servingPath = (ns, name) => `/serving/${ns}/${encodeURIComponent(name)}`;

function urlCell(obj) {
  const {namespace: ns, name} = obj.metadata;
  const host = inferenceHost(ns, name);
  return h("span", {class: "model-url"},
    h("code", {class: "small"}, `${servingPath(ns, name)}/`),
    host ? h("code", {class: "small muted", title: "host (gRPC authority)"}, host) : null);
}

const predictorStatus = (obj) =>
  (((obj.status || {}).components || {}).predictor) || {};

const shortRevision = (name) => (/-(\d+)$/.exec(name || "") || [])[1] || name;

function trafficCell(obj) {
  const traffic = predictorStatus(obj).traffic || [];
  if (!traffic.length) return h("span", {class: "muted"}, "—");
  return h("span", {class: "traffic"}, traffic.map((t) =>
    h("span", {class: `pill${t.tag === "latest" || t.latestRevision ? " running" : ""}`,
               title: t.revisionName}, `${shortRevision(t.revisionName)}: ${t.percent}%`)));
}

function deleteModel(ns, name) {
  return request("DELETE", `${pathFor("InferenceService", ns)}/${encodeURIComponent(name)}`);
}

export function renderModels(ctx) {
  const {main, ns, signal} = ctx;
  const status = h("span", {class: "live"}, "connecting…");
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading…"));
  add(main, pageHeader("Models", status), messages, body);
  const columns = [
    {title: "Status", cell: statusCell},
    {title: "Name", cell: (o) => h("a", {class: "model-name",
      href: `#/models/${encodeURIComponent(o.metadata.name)}`}, o.metadata.name)},
    {title: "Format", cell: (o) => predictorFormat(o).format},
    {title: "Runtime", cell: runtimeOf},
    {title: "URL", cell: urlCell},
    {title: "Traffic", cell: trafficCell},
    {title: "Created", cell: (o) => ago(o.metadata.creationTimestamp)},
    {title: "", class: "right", cell: (o) => h("button", {class: "button small", type: "button",
      "aria-label": `Delete ${o.metadata.name}`, onclick: async (event) => {
        if (!window.confirm(`Delete model ${o.metadata.name}? Its servers stop.`)) return;
        event.target.disabled = true;
        try {
          await deleteModel(ns, o.metadata.name);
        } catch (err) {
          put(messages, errorBox(err));
          event.target.disabled = false;
        }
      }}, "Delete")},
  ];
  followList(pathFor("InferenceService", ns), signal, (items, live, err) => {
    status.textContent = live ? "live" : "reconnecting…";
    status.classList.toggle("on", live);
    if (err) {
      if (!body.querySelector("table")) put(body, errorBox(err));
      return;
    }
    put(body, items.length ? table(columns, byNewest(items)) : emptyState(
      "No models are served yet", "Apply an InferenceService (serving.kserve.io/v1beta1) with ",
      h("code", {}, "shipyard apply -f"), " or Create from YAML."));
  });
}

// ------------------------------------------------------------------------- one model

function facts(pairs) {
  return h("dl", {class: "facts"}, pairs.filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function summary(obj) {
  const {state, reason, message} = readyCondition(obj);
  const p = (obj.spec && obj.spec.predictor) || {};
  const model = p.model || p[predictorFormat(obj).format] || {};
  const ms = (obj.status && obj.status.modelStatus) || {};
  const failure = ms.lastFailureInfo;
  return facts([
    ["Status", h("span", {}, badge(state), reason ? ` ${reason}` : "")],
    ["Message", message || null],
    ["Model", ms.transitionStatus ? `${(ms.states || {}).activeModelState || "—"} ` +
      `(${ms.transitionStatus})` : null],
    ["Last failure", failure ? `${failure.reason}: ${failure.message || ""}` : null],
    ["URL", urlCell(obj)],
    ["Format", predictorFormat(obj).format],
    ["Runtime", runtimeOf(obj)],
    ["Protocol", model.protocolVersion || "v1"],
    ["Storage", model.storageUri ? h("code", {class: "small"}, model.storageUri) : null],
    ["Replicas", `${p.minReplicas ?? 1}–${p.maxReplicas || p.minReplicas || 1}`],
    ["Created", ago(obj.metadata.creationTimestamp)],
  ]);
}

// The rollout: which revision is rolled out, the previous one, the canary's share.
function rollout(obj, act) {
  const pred = predictorStatus(obj);
  const traffic = pred.traffic || [];
  const spec = (obj.spec && obj.spec.predictor) || {};
  const pct = spec.canaryTrafficPercent;
  const canary = traffic.find((t) => t.tag === "latest");
  const previous = traffic.find((t) => t.tag === "prev");
  const split = !!(canary && previous);
  const canPromote = split || (pct !== undefined && pct !== null && pct !== 100 &&
                               pred.latestCreatedRevision !== pred.latestRolledoutRevision);
  const canRollBack = split && canary.percent > 0;
  const button = (label, enabled, fn) => h("button", {class: "button small", type: "button",
    disabled: !enabled, onclick: fn}, label);
  return h("div", {},
    facts([
      ["Rolled out", pred.latestRolledoutRevision || "—"],
      ["Previous", pred.previousRolledoutRevision || "—"],
      ["Latest created", pred.latestCreatedRevision || "—"],
      ["Canary traffic", pct === undefined || pct === null ? "not set (100%)" : `${pct}%`],
    ]),
    traffic.length ? table([
      {title: "Revision", cell: (t) => t.revisionName},
      {title: "Tag", cell: (t) => t.tag || (t.latestRevision ? "latest" : "—")},
      {title: "Traffic", class: "num", cell: (t) => `${t.percent}%`},
    ], traffic.map((t) => ({...t, name: t.revisionName})))
      : h("p", {class: "muted"}, "No revision is serving yet."),
    h("div", {class: "actions rollout-actions"},
      button("Promote canary", canPromote, () => act("promote", pred)),
      button("Roll back", canRollBack, () => act("rollback", pred))));
}

function conditions(obj) {
  const list = (obj.status && obj.status.conditions) || [];
  if (!list.length) return h("p", {class: "muted pad"}, "No conditions yet.");
  return table([
    {title: "Type", cell: (c) => c.type},
    {title: "Status", cell: (c) => badge(c.status === "True" ? "Ready" : "NotReady")},
    {title: "Reason", cell: (c) => c.reason || "—"},
    {title: "Message", cell: (c) => c.message || ""},
    {title: "Changed", cell: (c) => ago(c.lastTransitionTime)},
  ], list.map((c) => ({...c, name: c.type})));
}

function components(obj) {
  const comps = Object.entries((obj.status && obj.status.components) || {});
  if (!comps.length) return h("p", {class: "muted pad"}, "No components yet.");
  return table([
    {title: "Component", cell: ([k]) => k},
    {title: "Latest ready revision", cell: ([, c]) => c.latestReadyRevision || "—"},
    {title: "Replicas", class: "num", cell: ([, c]) =>
      `${c.actualReplicas ?? "—"} / ${c.desiredReplicas ?? "—"}`},
    {title: "URL", cell: ([, c]) => c.url ? h("code", {class: "small"}, c.url) : "—"},
  ], comps.map(([k, c]) => Object.assign([k, c], {name: k})));
}

const ACTIONS = {
  promote: {
    confirm: (p) => `Promote ${p.latestCreatedRevision} to 100% of the traffic? ` +
      `${p.latestRolledoutRevision || "The previous revision"} stops serving.`,
    patch: {canaryTrafficPercent: null},
    pending: "Promoting: waiting for the new revision to take all traffic…",
    done: (o) => {
      const t = predictorStatus(o).traffic || [];
      return t.length === 1 && t[0].percent === 100 &&
        predictorStatus(o).latestRolledoutRevision === predictorStatus(o).latestCreatedRevision;
    },
    message: (o) => `Promoted: ${predictorStatus(o).latestRolledoutRevision} takes 100%.`,
  },
  rollback: {
    confirm: (p) => `Roll back to ${p.latestRolledoutRevision}? ` +
      `${p.latestCreatedRevision} keeps running with 0% of the traffic.`,
    patch: {canaryTrafficPercent: 0},
    pending: "Rolling back: waiting for the traffic to move…",
    done: (o) => {
      const t = predictorStatus(o).traffic || [];
      return t.length > 0 && t.every((x) => x.tag !== "latest" || x.percent === 0);
    },
    message: (o) => `Rolled back: ${predictorStatus(o).latestRolledoutRevision} takes 100%.`,
  },
};

export function renderModel(ctx, name) {
  const {main, ns, signal} = ctx;
  const url = `${pathFor("InferenceService", ns)}/${encodeURIComponent(name)}`;
  const del = h("button", {class: "button", type: "button", id: "delete-model"}, "Delete");
  const head = h("div", {class: "card pad"}, h("p", {class: "muted"}, "Loading…"));
  const notice = h("div", {class: "messages", role: "status", "aria-live": "polite"});
  const roll = h("section", {class: "card pad", "aria-label": "Rollout"});
  const conds = h("div", {class: "card"});
  const comps = h("div", {class: "card"});
  const infer = h("section", {class: "card pad", "aria-label": "Test inference"});
  add(main, pageHeader(name, del, h("a", {class: "button ghost", href: "#/models"}, "All models")),
      head, notice, h("h2", {class: "section-title"}, "Revisions and traffic"), roll, h("h2", {class: "section-title"}, "Test inference"),
      infer, h("h2", {class: "section-title"}, "Conditions"), conds, h("h2", {class: "section-title"}, "Components"), comps);
  let waiting = null;  // the action whose effect the page waits to see
  let panelShown = false;
  const act = async (kind, pred) => {
    const spec = ACTIONS[kind];
    if (!window.confirm(spec.confirm(pred))) return;
    put(notice, h("p", {class: "progress-note"}, spec.pending));
    try {
      await request("PATCH", url, {body: JSON.stringify({spec: {predictor: spec.patch}}),
                                   contentType: "application/merge-patch+json"});
      waiting = spec;
      await refresh();
    } catch (err) {
      put(notice, errorBox(err));
    }
  };
  let last = "";
  const refresh = async () => {
    const obj = await request("GET", url, {signal});
    const text = JSON.stringify(obj);
    if (text === last && !waiting) return;  // unchanged: keep the controls in place
    last = text;
    put(head, summary(obj));
    put(roll, rollout(obj, act));
    put(conds, conditions(obj));
    put(comps, components(obj));
    if (waiting && waiting.done(obj)) {
      put(notice, h("p", {class: "ok"}, waiting.message(obj)));
      waiting = null;
    }
    if (!panelShown && readyCondition(obj).state === "Ready") {
      panelShown = true;
      renderInferencePanel(infer, obj, signal);
    } else if (!panelShown) {
      put(infer, h("p", {class: "muted"}, "The model is not ready yet."));
    }
  };
  del.addEventListener("click", async () => {
    if (!window.confirm(`Delete model ${name}? Its servers stop.`)) return;
    del.disabled = true;
    try {
      await request("DELETE", url);
      window.location.hash = "#/models";
    } catch (err) {
      put(notice, errorBox(err));
      del.disabled = false;
    }
  });
  poll(async () => {
    try {
      await refresh();
    } catch (err) {
      if (signal.aborted) return false;
      put(head, errorBox(err));
      if (err.status === 404) return false;
    }
    return true;
  }, 1500, signal);
}
