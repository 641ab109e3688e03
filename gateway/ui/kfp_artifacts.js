// KFP artifacts of the namespace (/apis/v2beta1/artifacts, newest first, a page at a time):
// name, type, the run that made it, size, metadata, and a download through the signed URL the
// API hands out (the object store answers it, as a download).

import {add, ago, errorBox, h, pageHeader, put, table} from "./dom.js";
import {kfp} from "./kfp_api.js";

const PAGE = 50;

// The run id in an artifact's uri: s3://<bucket>/v2/artifacts/<namespace>/<run id>/...
function runOf(uri, ns) {
  const marker = `/artifacts/${ns}/`;
  const at = (uri || "").indexOf(marker);
  return at < 0 ? null : uri.slice(at + marker.length).split("/")[0] || null;
}

function metadataText(meta) {
  const flat = Object.entries(meta || {})
    .filter(([, v]) => v === null || typeof v !== "object")
    .map(([k, v]) => `${k}=${typeof v === "number" ? Number(v.toPrecision(4)) : v}`);
  const nested = Object.keys(meta || {}).filter((k) => meta[k] && typeof meta[k] === "object");
  return [...flat, ...nested].join(", ") || "—";
}

function size(bytes) {
  if (bytes === undefined) return "—";
  const n = Number(bytes);
  if (n < 1024) return `${n} B`;
  return n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
}

export function renderArtifacts(ctx) {
  const {main, ns, signal} = ctx;
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading artifacts…"));
  const more = h("div", {class: "actions pad"});
  add(main, pageHeader("Artifacts"), messages, body, more);
  const rows = [];
  const download = async (a) => {
    const got = await kfp("GET", `/artifacts/${a.artifact_id}?view=DOWNLOAD`, undefined, signal);
    window.location.assign(got.download_url);
  };
  const draw = (token) => {
    put(body, rows.length ? table([
      {title: "Name", cell: (a) => h("code", {}, a.name)},
      {title: "Type", cell: (a) => a.artifact_type},
      {title: "Run", cell: (a) => {
        const run = runOf(a.uri, ns);
        return run ? h("a", {href: `#/kfp/runs/${run}`}, run.slice(0, 8)) : "—";
      }},
      {title: "Metadata", cell: (a) => h("span", {class: "small"}, metadataText(a.metadata))},
      {title: "Size", class: "num", cell: (a) => size(a.artifact_size)},
      {title: "Created", cell: (a) => ago(a.created_at)},
      {title: "", class: "right", cell: (a) => (a.artifact_size === undefined ? null
        : h("button", {class: "button small", type: "button",
                       "aria-label": `Download ${a.name} ${a.artifact_id}`,
                       onclick: () => download(a).catch((err) => put(messages, errorBox(err)))},
            "Download"))},
    ], rows) : h("p", {class: "muted pad"}, "No artifacts yet: KFP runs record their outputs here."));
    put(more, token ? h("button", {class: "button", type: "button",
                                   onclick: () => load(token)}, "More") : null);
  };
  const load = async (token) => {
    try {
      const q = new URLSearchParams({namespace: ns, page_size: String(PAGE),
                                     sort_by: "created_at desc"});
      if (token) q.set("page_token", token);
      const page = await kfp("GET", `/artifacts?${q}`, undefined, signal);
      rows.push(...(page.artifacts || []));
      draw(page.next_page_token);
    } catch (err) {
      if (!signal.aborted) put(body, errorBox(err));
    }
  };
  load(null);
}
