// The simple lists: volumes (PVCs) and models (InferenceServices).

import {pathFor} from "./api.js";
import {add, ago, badge, emptyState, errorBox, h, pageHeader, put, table} from "./dom.js";
import {byNewest, followList} from "./live.js";

function readyCondition(obj) {
  const cond = ((obj.status && obj.status.conditions) || []).find((c) => c.type === "Ready");
  if (!cond) return "Pending";
  return cond.status === "True" ? "Ready" : "NotReady";
}

const VIEWS = {
  volumes: {
    title: "Volumes", kind: "PersistentVolumeClaim",
    empty: () => emptyState("No volumes yet", "Create a PersistentVolumeClaim with ",
      h("code", {}, "shipyard apply -f tests/seed/pvc.yaml"), " or Create from YAML."),
    columns: [
      {title: "Name", cell: (o) => o.metadata.name},
      {title: "Status", cell: (o) => badge((o.status && o.status.phase) || "Pending")},
      {title: "Capacity", class: "num", cell: (o) => (o.status && o.status.capacity &&
        o.status.capacity.storage) || (o.spec.resources && o.spec.resources.requests &&
        o.spec.resources.requests.storage) || "—"},
      {title: "Access modes", cell: (o) => (o.spec.accessModes || []).join(", ") || "—"},
      {title: "Storage class", cell: (o) => o.spec.storageClassName || "default"},
      {title: "Created", cell: (o) => ago(o.metadata.creationTimestamp)},
    ],
  },
  models: {
    title: "Models", kind: "InferenceService",
    empty: () => emptyState("No models are served yet",
      "Apply an InferenceService (serving.kserve.io/v1beta1) with ",
      h("code", {}, "shipyard apply -f"), " or Create from YAML."),
    columns: [
      {title: "Name", cell: (o) => o.metadata.name},
      {title: "Ready", cell: (o) => badge(readyCondition(o))},
      {title: "Format", cell: (o) => {
        const p = (o.spec && o.spec.predictor) || {};
        const fmt = p.model && p.model.modelFormat && p.model.modelFormat.name;
        return fmt || Object.keys(p).find((k) => !["minReplicas", "maxReplicas",
          "canaryTrafficPercent", "model"].includes(k)) || "—";
      }},
      {title: "URL", cell: (o) => {
        const ns = o.metadata.namespace;
        const path = `/serving/${ns}/${o.metadata.name}/`;
        return readyCondition(o) === "Ready" ? h("code", {class: "small"}, path)
          : h("span", {class: "muted"}, "—");
      }},
      {title: "Created", cell: (o) => ago(o.metadata.creationTimestamp)},
    ],
  },
};

export function renderResourceList(ctx, view) {
  const {main, ns, signal} = ctx;
  const spec = VIEWS[view];
  const status = h("span", {class: "live"}, "connecting…");
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading…"));
  add(main, pageHeader(spec.title, status), body);
  followList(pathFor(spec.kind, ns), signal, (items, live, err) => {
    status.textContent = live ? "live" : "reconnecting…";
    status.classList.toggle("on", live);
    if (err) {
      if (!body.querySelector("table")) put(body, errorBox(err));
      return;
    }
    put(body, items.length ? table(spec.columns, byNewest(items)) : spec.empty());
  });
}
