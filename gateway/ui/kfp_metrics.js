// KFP metrics, read from the run's output artifacts (their metadata, as the SDK logged it):
// system.Metrics as a table of scalars, system.ClassificationMetrics as a confusion matrix
// and an ROC curve; and the compare page (runs' parameters and scalar metrics side by side).

import {add, errorBox, h, pageHeader, put, s, table} from "./dom.js";
import {kfp, runWorkflow, stateBadge} from "./kfp_api.js";

// [{task, name, type, metadata}] for every metrics artifact of a Workflow's steps.
export function metricsOf(wf) {
  const out = [];
  for (const node of Object.values((wf && wf.status && wf.status.nodes) || {})) {
    for (const art of (node.outputs && node.outputs.artifacts) || []) {
      const type = art.kfp && art.kfp.type && art.kfp.type.schemaTitle;
      if (type === "system.Metrics" || type === "system.ClassificationMetrics") {
        out.push({task: node.displayName || node.name, name: art.name, type,
                  metadata: art.kfp.metadata || {}});
      }
    }
  }
  return out.sort((a, b) => `${a.task}/${a.name}`.localeCompare(`${b.task}/${b.name}`));
}

// {"task/metric": value} of the scalar metrics (system.Metrics) of a Workflow.
export function scalarsOf(wf) {
  const out = {};
  for (const m of metricsOf(wf)) {
    if (m.type !== "system.Metrics") continue;
    for (const [key, value] of Object.entries(m.metadata)) {
      if (key !== "display_name" && typeof value === "number") out[`${m.task}/${key}`] = value;
    }
  }
  return out;
}

export function fmt(value) {
  if (typeof value !== "number") return value === undefined ? "—" : String(value);
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
}

function confusionMatrix(cm) {
  const cats = (cm.annotationSpecs || []).map((a) => a.displayName);
  const rows = (cm.rows || []).map((r) => r.row || []);
  const max = Math.max(1, ...rows.flat());
  return h("table", {class: "confusion", "aria-label": "confusion matrix"},
    h("thead", {}, h("tr", {}, h("th", {}, "actual \\ predicted"),
      cats.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((row, i) => h("tr", {}, h("th", {}, cats[i]), row.map((v) => {
      const cell = h("td", {class: "num"}, fmt(v));
      cell.style.background = `rgba(31, 79, 216, ${(0.08 + 0.6 * v / max).toFixed(2)})`;
      return cell;
    })))));
}

const COLORS = ["#1f4fd8", "#d8771f", "#1e8a4c", "#c8333a", "#7b3fc4", "#0f8a8a"];

// ROC curves (one per series: {label, points}), with a legend when there are several.
function rocCurve(series, size = 260) {
  const pad = 34;
  const inner = size - 2 * pad;
  const x = (p) => pad + p.falsePositiveRate * inner;
  const y = (p) => pad + (1 - p.recall) * inner;
  const curves = series.map((one, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = [...one.points].sort((a, b) => a.falsePositiveRate - b.falsePositiveRate ||
                                              a.recall - b.recall);
    return s("g", {class: "series", dataset: {label: one.label}},
      s("polyline", {class: "curve", stroke: color, points: pts.map((p) => `${x(p)},${y(p)}`)
        .join(" ")}),
      pts.map((p) => s("circle", {class: "point", r: 3, cx: x(p), cy: y(p), fill: color},
        s("title", {}, `${one.label}: threshold ${fmt(p.confidenceThreshold)}, ` +
                       `FPR ${fmt(p.falsePositiveRate)}, TPR ${fmt(p.recall)}`))));
  });
  const legend = series.length > 1 ? series.map((one, i) => s("text", {class: "legend",
    x: size + 8, y: pad + 14 * i + 10, fill: COLORS[i % COLORS.length]}, one.label)) : null;
  const width = series.length > 1 ? size + 220 : size;
  return s("svg", {class: "roc", width, height: size, viewBox: `0 0 ${width} ${size}`,
                   role: "img", "aria-label": "ROC curve"},
    s("rect", {class: "frame", x: pad, y: pad, width: inner, height: inner}),
    s("line", {class: "chance", x1: pad, y1: pad + inner, x2: pad + inner, y2: pad}),
    curves, legend,
    s("text", {x: size / 2, y: size - 6, "text-anchor": "middle"}, "false positive rate"),
    s("text", {x: 12, y: size / 2, transform: `rotate(-90 12 ${size / 2})`,
               "text-anchor": "middle"}, "true positive rate"));
}

// The run page's Metrics section (null when the run logged none).
export function metricsSection(wf) {
  const all = metricsOf(wf);
  if (!all.length) return null;
  const scalars = [];
  for (const m of all.filter((x) => x.type === "system.Metrics")) {
    for (const [key, value] of Object.entries(m.metadata)) {
      if (key !== "display_name") scalars.push({name: `${m.task}/${key}`, task: m.task,
                                                 metric: key, value});
    }
  }
  const classification = all.filter((x) => x.type === "system.ClassificationMetrics");
  return h("section", {"aria-label": "Metrics"}, h("h2", {class: "section"}, "Metrics"),
    scalars.length ? h("div", {class: "card"}, table([
      {title: "Step", cell: (r) => r.task},
      {title: "Metric", cell: (r) => h("code", {}, r.metric)},
      {title: "Value", class: "num", cell: (r) => fmt(r.value)},
    ], scalars)) : null,
    classification.map((m) => h("div", {class: "card pad classification"},
      h("h3", {}, `${m.task} · ${m.name}`),
      h("div", {class: "charts-row"},
        m.metadata.confusionMatrix ? confusionMatrix(m.metadata.confusionMatrix) : null,
        (m.metadata.confidenceMetrics || []).length
          ? rocCurve([{label: m.name, points: m.metadata.confidenceMetrics}]) : null))));
}

const valueText = (v) => (v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v)
  : String(v));

// #/kfp/compare/<id>,<id>: parameters and scalar metrics of two or more runs, side by side.
export async function renderCompare(ctx, ids) {
  const {main, ns, signal} = ctx;
  const body = h("div", {}, h("p", {class: "muted"}, "Loading runs…"));
  add(main, pageHeader(`Comparing ${ids.length} runs`,
    h("a", {class: "button ghost", href: "#/kfp/runs"}, "← All runs")), body);
  let runs;
  try {
    runs = await Promise.all(ids.map(async (id) => {
      const run = await kfp("GET", `/runs/${id}`, undefined, signal);
      const wf = await runWorkflow(ns, id, signal);
      return {run, scalars: scalarsOf(wf), metrics: metricsOf(wf)};
    }));
  } catch (err) {
    if (!signal.aborted) put(body, errorBox(err));
    return;
  }
  const columns = (pick) => [
    {title: "", cell: (row) => h("code", {}, row.name)},
    ...runs.map((r, i) => ({title: h("a", {href: `#/kfp/runs/${r.run.run_id}`},
      r.run.display_name), class: "num", cell: (row) => pick(row, i)})),
  ];
  const names = (lists) => [...new Set(lists.flat())].sort().map((name) => ({name}));
  const params = runs.map((r) => (r.run.runtime_config || {}).parameters || {});
  const paramRows = names(params.map(Object.keys));
  const metricRows = names(runs.map((r) => Object.keys(r.scalars)));
  const rocSeries = runs.flatMap((r) => r.metrics
    .filter((m) => (m.metadata.confidenceMetrics || []).length)
    .map((m) => ({label: `${r.run.display_name} · ${m.task}/${m.name}`,
                  points: m.metadata.confidenceMetrics})));
  put(body,
    h("div", {class: "card"}, table(columns((row, i) => (i === undefined ? ""
      : stateBadge(runs[i].run.state))), [{name: "status"}])),
    h("h2", {class: "section"}, "Parameters"),
    h("div", {class: "card", role: "region", "aria-label": "parameters compared"}, paramRows.length
      ? table(columns((row, i) => valueText(params[i][row.name])), paramRows)
      : h("p", {class: "muted pad"}, "None of these runs has parameters.")),
    h("h2", {class: "section"}, "Metrics"),
    h("div", {class: "card", role: "region", "aria-label": "metrics compared"}, metricRows.length
      ? table(columns((row, i) => fmt(runs[i].scalars[row.name])), metricRows)
      : h("p", {class: "muted pad"}, "None of these runs logged scalar metrics.")),
    rocSeries.length ? [h("h2", {class: "section"}, "ROC curves"),
                        h("div", {class: "card pad"}, rocCurve(rocSeries))] : null);
}
