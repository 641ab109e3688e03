// One KFP run: its state and parameters, the graph with step states (from the Workflow the run
// executes as), a step's inputs, outputs, artifacts (preview and download) and log, the run's
// metrics, and the run's actions (archive, restore, terminate, retry, delete).

import {getText, pathFor} from "./api.js";
import {dagSvg} from "./charts.js";
import {add, ago, badge, clear, duration, errorBox, h, pageHeader, put, spanOf, table}
  from "./dom.js";
import {action, kfp, runWorkflow, shortId, stateBadge} from "./kfp_api.js";
import {metricsSection} from "./kfp_metrics.js";
import {poll} from "./live.js";

const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"]);
const LOG_LIMIT = 200000;
const PREVIEW_BYTES = 64 * 1024;

export const artifactUrl = (ns, wf, node, art) =>
  `/artifact-files/${encodeURIComponent(ns)}/workflows/${encodeURIComponent(wf)}/` +
  `${encodeURIComponent(node)}/outputs/${encodeURIComponent(art)}`;

// The first PREVIEW_BYTES of an artifact as text, or a note that it is binary.
async function previewText(url, signal) {
  const resp = await fetch(url, {credentials: "same-origin", signal});
  if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).slice(0, 300)}`);
  const reader = resp.body.getReader();
  const chunks = [];
  let size = 0;
  while (size < PREVIEW_BYTES) {
    const {value, done} = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.length;
  }
  reader.cancel().catch(() => {});
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  const head = bytes.slice(0, PREVIEW_BYTES);
  if (head.includes(0)) return "(binary content: download it to look inside)";
  const text = new TextDecoder().decode(head);
  return size > PREVIEW_BYTES ? `${text}\n… (preview cut at ${PREVIEW_BYTES} bytes)` : text;
}

function paramTable(params, empty) {
  const rows = (params || []).map((p) => ({name: p.name, value: p.value}));
  if (!rows.length) return h("p", {class: "muted"}, empty);
  return table([{title: "Name", cell: (p) => h("code", {}, p.name)},
                {title: "Value", cell: (p) => h("code", {class: "value"}, String(p.value ?? ""))}],
               rows);
}

function artifactList(ns, wfName, node, signal) {
  const arts = (node.outputs && node.outputs.artifacts) || [];
  if (!arts.length) return h("p", {class: "muted"}, "No output artifacts.");
  return h("ul", {class: "artifacts"}, arts.map((art) => {
    const url = artifactUrl(ns, wfName, node.id, art.name);
    const preview = h("pre", {class: "preview", hidden: true, "aria-label": `${art.name} preview`});
    const type = art.kfp && art.kfp.type && art.kfp.type.schemaTitle;
    return h("li", {},
      h("div", {class: "artifact-head"}, h("code", {}, art.name),
        type ? h("span", {class: "muted"}, type) : null,
        !(art.s3 && art.s3.key) ? h("span", {class: "muted row-actions"}, "metadata only")
          : h("span", {class: "row-actions"},
          h("button", {class: "button small", type: "button", "aria-label": `Preview ${art.name}`,
            onclick: async () => {
              preview.hidden = false;
              preview.textContent = "Loading…";
              try {
                preview.textContent = await previewText(url, signal) || "(empty)";
              } catch (err) {
                preview.textContent = err.message;
              }
            }}, "Preview"),
          h("a", {class: "button small", href: url, download: art.name,
                  "aria-label": `Download ${art.name}`}, "Download"))),
      art.kfp && art.kfp.uri ? h("p", {class: "muted small"}, art.kfp.uri) : null, preview);
  }));
}

export function renderRun(ctx, id) {
  const {main, ns, signal} = ctx;
  const header = h("div");
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const summary = h("div", {class: "summary"}, h("span", {class: "muted"}, "Loading run…"));
  const params = h("div", {class: "card pad"});
  const graph = h("div", {class: "card dag-wrap"});
  const side = h("div", {class: "card node-panel"});
  const metrics = h("div", {class: "metrics"});
  add(main, header, messages, summary, h("h2", {class: "section"}, "Run parameters"), params,
      h("h2", {class: "section"}, "Graph"), h("div", {class: "split"}, graph, side), metrics);
  const logBox = h("pre", {class: "log", "aria-label": "step log"});
  let run = null;
  let wf = null;
  let selected = null;
  let sideFor = null;
  let source = null;  // the run's pipeline and version names, read once

  const showLog = async (node) => {
    try {
      let text = await getText(`${pathFor("Workflow", ns)}/${encodeURIComponent(
        wf.metadata.name)}/log?step=${encodeURIComponent(node.id)}`, signal);
      if (text.length > LOG_LIMIT) text = `… (earlier lines cut)\n${text.slice(-LOG_LIMIT)}`;
      logBox.textContent = text || "(no output yet)";
    } catch (err) {
      logBox.textContent = err.message;
    }
  };

  const drawSide = () => {
    const node = wf && selected && (wf.status.nodes || {})[selected];
    const key = node ? `${node.id}/${node.phase}` : null;
    if (key === sideFor) return;  // keep open previews while nothing changed
    sideFor = key;
    clear(side);
    if (!node) {
      add(side, h("p", {class: "muted pad"}, "Select a step to see its details and log."));
      return;
    }
    add(side,
      h("div", {class: "node-head"}, h("h2", {}, node.displayName || node.name), badge(node.phase)),
      h("dl", {class: "facts"},
        h("dt", {}, "Started"), h("dd", {}, ago(node.startedAt)),
        h("dt", {}, "Duration"), h("dd", {}, duration(spanOf(node.startedAt, node.finishedAt))),
        node.message ? [h("dt", {}, "Message"), h("dd", {}, node.message)] : null),
      h("h3", {}, "Inputs"), paramTable(node.inputs && node.inputs.parameters, "No inputs."),
      h("h3", {}, "Outputs"), paramTable(node.outputs && node.outputs.parameters, "No outputs."),
      h("h3", {}, "Artifacts"), artifactList(ns, wf.metadata.name, node, signal),
      node.type === "Pod" ? [h("h3", {}, "Log"), logBox] : null);
    if (node.type === "Pod") showLog(node);
  };

  const select = (nodeId) => {
    selected = nodeId;
    sideFor = null;
    logBox.textContent = "Loading log…";
    drawGraph();
  };

  const drawGraph = () => {
    const nodes = {...((wf && wf.status && wf.status.nodes) || {})};
    const root = wf && nodes[wf.metadata.name];
    if (root) nodes[wf.metadata.name] = {...root, displayName: run.display_name};
    put(graph, Object.keys(nodes).length ? (dagSvg(nodes, {selected, onSelect: select}) ||
      h("p", {class: "muted pad"}, "Too many steps to draw.")) : h("p", {class: "muted pad"},
      wf || !FINAL.has(run.state) ? "No steps have started yet."
        : "The run's workflow is gone (deleted or past retention)."));
    drawSide();
  };

  const drawHeader = () => {
    const archived = run.storage_state === "ARCHIVED";
    const act = (label, fn) => action(label, async () => { await fn(); await load(); }, messages);
    put(header, pageHeader(run.display_name,
      h("a", {class: "button ghost", href: "#/kfp/runs"}, "← All runs"),
      h("a", {class: "button small", href: `#/kfp/runs/+new?clone=${id}`}, "Clone run"),
      FINAL.has(run.state) ? null : act("Terminate", () => kfp("POST", `/runs/${id}:terminate`)),
      run.state === "FAILED" ? act("Retry", () => kfp("POST", `/runs/${id}:retry`)) : null,
      archived ? act("Restore", () => kfp("POST", `/runs/${id}:unarchive`))
        : act("Archive", () => kfp("POST", `/runs/${id}:archive`)),
      action("Delete", async () => {
        if (!window.confirm(`Delete run ${run.display_name}?`)) return;
        await kfp("DELETE", `/runs/${id}`);
        window.location.hash = "#/kfp/runs";
      }, messages)));
    const ref = run.pipeline_version_reference || {};
    put(summary, stateBadge(run.state),
      archived ? h("span", {class: "pill"}, "archived") : null,
      h("span", {}, "Created ", ago(run.created_at)),
      h("span", {}, "Duration ", duration(spanOf(run.created_at,
        FINAL.has(run.state) ? run.finished_at : null))),
      ref.pipeline_id ? h("a", {href: `#/kfp/pipelines/${ref.pipeline_id}`},
        source ? `Pipeline ${source}` : "Pipeline") : null,
      h("a", {href: `#/kfp/runs?experiment=${run.experiment_id}`}, "Experiment runs"),
      h("span", {class: "muted"}, `Run ${shortId(run.run_id)}`),
      run.error ? h("span", {class: "message"}, run.error.message) : null);
    const values = Object.entries((run.runtime_config || {}).parameters || {})
      .map(([name, value]) => ({name, value: typeof value === "object"
        ? JSON.stringify(value) : value}));
    put(params, paramTable(values, "No parameters."));
  };

  const names = async (ref) => {
    try {
      const [p, v] = await Promise.all([
        kfp("GET", `/pipelines/${ref.pipeline_id}`, undefined, signal),
        ref.pipeline_version_id ? kfp("GET", `/pipelines/${ref.pipeline_id}/versions/` +
                                        ref.pipeline_version_id, undefined, signal) : null]);
      return v ? `${p.display_name} · ${v.display_name}` : p.display_name;
    } catch (_) {
      return "";  // deleted since: the link still says Pipeline
    }
  };
  const load = async () => {
    run = await kfp("GET", `/runs/${id}`, undefined, signal);
    const ref = run.pipeline_version_reference || {};
    if (source === null && ref.pipeline_id) source = await names(ref);
    wf = await runWorkflow(ns, id, signal);
    drawHeader();
    if (wf) {
      wf.status = wf.status || {};
      if (!selected) {
        const pods = Object.values(wf.status.nodes || {}).filter((n) => n.type === "Pod");
        const failed = pods.find((n) => n.phase === "Failed" || n.phase === "Error");
        selected = (failed || pods[pods.length - 1] || {}).id || null;
      }
      if (!FINAL.has(run.state)) sideFor = null;  // a running step's log keeps growing
      put(metrics, metricsSection(wf));
    }
    drawGraph();
  };

  poll(async () => {
    try {
      await load();
    } catch (err) {
      if (!signal.aborted) put(messages, errorBox(err));
      return !err.status || err.status !== 404;
    }
    return !FINAL.has(run.state);
  }, 2000, signal);
}
