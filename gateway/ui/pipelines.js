// Pipelines: Argo Workflows in the namespace, and one workflow's graph and step logs. The
// section's other tabs (Kubeflow Pipelines' pipelines, runs, experiments) are kfp.js's.

import {getJSON, getText, pathFor} from "./api.js";
import {dagSvg} from "./charts.js";
import {add, ago, badge, clear, duration, emptyState, errorBox, h, pageHeader, progressBar, put,
        spanOf, table} from "./dom.js";
import {sectionTabs} from "./kfp.js";
import {byNewest, followList, poll} from "./live.js";

const FINISHED = new Set(["Succeeded", "Failed", "Error"]);
const LOG_LIMIT = 200000;

export function renderWorkflows(ctx) {
  const {main, ns, signal} = ctx;
  const status = h("span", {class: "live", title: "updates as workflows change"}, "connecting…");
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading workflows…"));
  add(main, sectionTabs("workflows"), pageHeader("Workflows", status), body);
  let last = null;
  const draw = () => {
    if (last === null) return;
    clear(body);
    if (!last.length) {
      add(body, emptyState("No workflows yet",
        "Apply one with ", h("code", {}, "shipyard apply -f tests/seed/workflow.yaml"),
        ", or use ", h("strong", {}, "Create from YAML"), " above."));
      return;
    }
    add(body, table([
      {title: "Name", cell: (w) => h("a", {href: `#/pipelines/${encodeURIComponent(w.metadata.name)}`},
                                   w.metadata.name)},
      {title: "Phase", cell: (w) => badge((w.status && w.status.phase) || "Pending")},
      {title: "Progress", cell: (w) => progressBar(w.status && w.status.progress)},
      {title: "Started", cell: (w) => ago((w.status && w.status.startedAt) ||
                                          w.metadata.creationTimestamp)},
      {title: "Duration", class: "num", cell: (w) => duration(
        spanOf(w.status && w.status.startedAt, w.status && w.status.finishedAt))},
    ], byNewest(last)));
  };
  followList(pathFor("Workflow", ns), signal, (items, live, err) => {
    status.textContent = live ? "live" : "reconnecting…";
    status.classList.toggle("on", live);
    if (err && last === null) {
      put(body, errorBox(err));
      return;
    }
    if (items) last = items;
    draw();
  });
  // Durations of running workflows keep growing between events.
  const tick = setInterval(() => {
    if (last && last.some((w) => !FINISHED.has(w.status && w.status.phase))) draw();
  }, 5000);
  signal.addEventListener("abort", () => clearInterval(tick), {once: true});
}

function podNodes(wf) {
  return Object.values((wf.status && wf.status.nodes) || {})
    .filter((n) => n.type === "Pod")
    .sort((a, b) => (a.startedAt || "").localeCompare(b.startedAt || ""));
}

export function renderWorkflow(ctx, name) {
  const {main, ns, signal} = ctx;
  const path = `${pathFor("Workflow", ns)}/${encodeURIComponent(name)}`;
  const header = pageHeader(name, h("a", {class: "button ghost", href: "#/pipelines"},
                                      "← All workflows"));
  const summary = h("div", {class: "summary"});
  const graph = h("div", {class: "card dag-wrap"});
  const side = h("div", {class: "card node-panel"});
  add(main, sectionTabs("workflows"), header, summary, h("div", {class: "split"}, graph, side));
  let wf = null;
  let selected = null;
  let logFor = null;
  const logBox = h("pre", {class: "log", "aria-live": "polite"});

  const showLog = async (node, force) => {
    if (!node || node.type !== "Pod") return;
    if (!force && logFor === node.id && FINISHED.has(node.phase)) return;
    logFor = node.id;
    try {
      let text = await getText(`${path}/log?step=${encodeURIComponent(node.id)}`, signal);
      if (text.length > LOG_LIMIT) text = `… (earlier lines cut)\n${text.slice(-LOG_LIMIT)}`;
      logBox.textContent = text || "(no output yet)";
    } catch (err) {
      logBox.textContent = err.message;
    }
  };

  const drawSide = () => {
    clear(side);
    const node = wf && selected && wf.status.nodes[selected];
    if (!node) {
      add(side, h("p", {class: "muted pad"}, "Select a step to see its log."));
      return;
    }
    add(side, 
      h("div", {class: "node-head"}, h("h2", {}, node.displayName || node.name), badge(node.phase)),
      h("dl", {class: "facts"},
        h("dt", {}, "Type"), h("dd", {}, node.type || "—"),
        h("dt", {}, "Template"), h("dd", {}, node.templateName || "—"),
        h("dt", {}, "Started"), h("dd", {}, ago(node.startedAt)),
        h("dt", {}, "Duration"), h("dd", {}, duration(spanOf(node.startedAt, node.finishedAt))),
        node.message ? [h("dt", {}, "Message"), h("dd", {}, node.message)] : null),
      node.type === "Pod" ? [h("h3", {}, "Log"), logBox] : null);
  };

  const select = (id) => {
    selected = id;
    logBox.textContent = "Loading log…";
    draw();
    showLog(wf.status.nodes[id], true);
  };

  const draw = () => {
    const st = wf.status || {};
    put(summary, 
      badge(st.phase || "Pending"), progressBar(st.progress),
      h("span", {}, "Started ", ago(st.startedAt || wf.metadata.creationTimestamp)),
      h("span", {}, "Duration ", duration(spanOf(st.startedAt, st.finishedAt))),
      st.message ? h("span", {class: "message"}, st.message) : null);
    clear(graph);
    const nodes = st.nodes || {};
    if (!Object.keys(nodes).length) {
      add(graph, h("p", {class: "muted pad"}, "No steps have started yet."));
    } else {
      const svg = dagSvg(nodes, {selected, onSelect: select});
      add(graph, svg || h("p", {class: "muted pad"},
        `${Object.keys(nodes).length} nodes are too many to draw; pick a step on the right.`));
    }
    drawSide();
  };

  poll(async () => {
    try {
      wf = await getJSON(path, signal);
    } catch (err) {
      if (!wf) put(graph, errorBox(err));
      return err.status !== 404;
    }
    wf.status = wf.status || {};
    if (!selected) {
      const pods = podNodes(wf);
      const failed = pods.find((n) => n.phase === "Failed" || n.phase === "Error");
      selected = (failed || pods[pods.length - 1] || {}).id || null;
    }
    draw();
    const node = selected && wf.status.nodes && wf.status.nodes[selected];
    if (node) await showLog(node, false);
    return !FINISHED.has(wf.status.phase);
  }, 2000, signal);
}
