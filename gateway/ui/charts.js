// The two pictures: a workflow's DAG (layered, top to bottom) and a Katib-style
// parallel-coordinates chart of trials. Plain SVG built from data; no layout library.

import {s} from "./dom.js";

const NODE_W = 168;
const NODE_H = 38;
const GAP_X = 28;
const GAP_Y = 54;
const MAX_NODES = 400;

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// Layers by longest path from the roots (Argo's `children` edges form a DAG), then one
// barycenter pass so children sit under their parents. Returns null above MAX_NODES.
export function layoutDag(nodes) {
  const ids = Object.keys(nodes);
  if (ids.length > MAX_NODES) return null;
  const parents = new Map(ids.map((id) => [id, []]));
  for (const id of ids) {
    for (const child of nodes[id].children || []) {
      if (parents.has(child)) parents.get(child).push(id);
    }
  }
  const layer = new Map();
  const indegree = new Map(ids.map((id) => [id, parents.get(id).length]));
  const queue = ids.filter((id) => indegree.get(id) === 0);
  queue.forEach((id) => layer.set(id, 0));
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const child of nodes[id].children || []) {
      if (!indegree.has(child)) continue;
      layer.set(child, Math.max(layer.get(child) || 0, layer.get(id) + 1));
      indegree.set(child, indegree.get(child) - 1);
      if (indegree.get(child) === 0) queue.push(child);
    }
  }
  for (const id of ids) if (!layer.has(id)) layer.set(id, 0);  // a cycle: flatten, never hang
  const layers = [];
  for (const id of ids) (layers[layer.get(id)] ||= []).push(id);
  const order = new Map();
  layers.forEach((row, depth) => {
    if (depth > 0) {
      const center = (id) => {
        const ps = parents.get(id).filter((p) => order.has(p));
        return ps.length ? ps.reduce((a, p) => a + order.get(p), 0) / ps.length : 0;
      };
      row.sort((a, b) => center(a) - center(b) || a.localeCompare(b));
    } else {
      row.sort((a, b) => (nodes[a].startedAt || "").localeCompare(nodes[b].startedAt || ""));
    }
    row.forEach((id, i) => order.set(id, i));
  });
  const widest = Math.max(1, ...layers.map((row) => (row ? row.length : 0)));
  const width = widest * (NODE_W + GAP_X) + GAP_X;
  const pos = new Map();
  layers.forEach((row, depth) => {
    const rowWidth = row.length * (NODE_W + GAP_X) - GAP_X;
    const left = (width - rowWidth) / 2;
    row.forEach((id, i) => pos.set(id, {x: left + i * (NODE_W + GAP_X),
                                         y: GAP_X / 2 + depth * (NODE_H + GAP_Y)}));
  });
  const height = layers.length * (NODE_H + GAP_Y) - GAP_Y + GAP_X;
  return {pos, parents, width, height};
}

export function dagSvg(nodes, {selected, onSelect}) {
  const layout = layoutDag(nodes);
  if (!layout) return null;
  const {pos, width, height} = layout;
  const edges = [];
  for (const [id, node] of Object.entries(nodes)) {
    for (const child of node.children || []) {
      if (!pos.has(child)) continue;
      const a = pos.get(id);
      const b = pos.get(child);
      const x1 = a.x + NODE_W / 2;
      const y1 = a.y + NODE_H;
      const x2 = b.x + NODE_W / 2;
      const y2 = b.y;
      const mid = (y1 + y2) / 2;
      edges.push(s("path", {class: "edge", d: `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2}`,
                            "marker-end": "url(#arrow)"}));
    }
  }
  const boxes = Object.entries(nodes).map(([id, node]) => {
    const p = pos.get(id);
    const group = ["DAG", "Steps", "StepGroup", "TaskGroup"].includes(node.type);
    const label = node.displayName || node.name || id;
    const phase = (node.phase || "Pending").toLowerCase();
    const g = s("g", {class: `node phase-${phase}${group ? " group" : ""}` +
                       (id === selected ? " selected" : ""),
                      transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "button",
                      "aria-label": `${label}: ${node.phase || "Pending"}`,
                      dataset: {node: label, id, phase: node.phase || "Pending"}},
      s("title", {}, `${label} (${node.type || "node"}) — ${node.phase || "Pending"}` +
                     (node.message ? `\n${node.message}` : "")),
      s("rect", {width: NODE_W, height: NODE_H, rx: group ? NODE_H / 2 : 6}),
      s("circle", {class: "dot", cx: 16, cy: NODE_H / 2, r: 5}),
      s("text", {x: 28, y: NODE_H / 2 + 4}, shorten(label, 19)));
    const pick = () => onSelect(id);
    g.addEventListener("click", pick);
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") pick(); });
    return g;
  });
  return s("svg", {class: "dag", width, height, viewBox: `0 0 ${width} ${height}`,
                   role: "img", "aria-label": "workflow graph"},
    s("defs", {}, s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                               markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"},
                    s("path", {d: "M0,0 L10,5 L0,10 z", class: "arrowhead"}))),
    edges, boxes);
}

// One axis per parameter plus the objective. Numeric axes are linear between the observed
// min and max; anything else is categorical, spread evenly in sorted order.
function axisFor(name, values) {
  const present = values.filter((v) => v !== null && v !== undefined && v !== "");
  const numeric = present.length > 0 && present.every((v) => Number.isFinite(Number(v)));
  if (numeric) {
    const nums = present.map(Number);
    let lo = Math.min(...nums);
    let hi = Math.max(...nums);
    if (lo === hi) { lo -= 1; hi += 1; }
    return {name, numeric: true, lo, hi, scale: (v) => (Number(v) - lo) / (hi - lo)};
  }
  const cats = [...new Set(present.map(String))].sort();
  return {name, numeric: false, cats,
          scale: (v) => (cats.length < 2 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1))};
}

function fmt(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (Number.isInteger(n)) return String(n);
  return Math.abs(n) >= 1000 || Math.abs(n) < 0.001 ? n.toExponential(2) : n.toPrecision(4);
}

// Better objective → warmer, darker line; direction follows the objective's type.
function colorFor(t) {
  const hue = 210 - 190 * t;
  return `hsl(${hue.toFixed(0)}, 70%, ${(58 - 14 * t).toFixed(0)}%)`;
}

export function parallelCoordinates(summary, {width = 1000, height = 320, best} = {}) {
  const trials = summary.trials || [];
  const objectiveName = summary.objective ? summary.objective.name : "objective";
  const axes = [
    ...(summary.parameters || []).map((p) => axisFor(p, trials.map((t) => t.parameters[p]))),
    axisFor(objectiveName, trials.map((t) => t.objective)),
  ];
  const pad = {top: 34, bottom: 30, left: 70, right: 90};
  const innerH = height - pad.top - pad.bottom;
  const step = axes.length > 1 ? (width - pad.left - pad.right) / (axes.length - 1) : 0;
  const xOf = (i) => pad.left + i * step;
  const yOf = (t) => pad.top + (1 - t) * innerH;
  const objAxis = axes[axes.length - 1];
  const maximize = !summary.objective || summary.objective.type !== "minimize";
  const lines = trials.map((trial) => {
    const values = [...(summary.parameters || []).map((p) => trial.parameters[p]),
                    trial.objective];
    const pts = [];
    values.forEach((v, i) => {
      if (v !== null && v !== undefined && v !== "") pts.push(`${xOf(i)},${yOf(axes[i].scale(v))}`);
    });
    const scored = trial.objective !== null && trial.objective !== undefined;
    let quality = scored && objAxis.numeric ? objAxis.scale(trial.objective) : 0;
    if (!maximize) quality = 1 - quality;
    const isBest = best && trial.name === best;
    const line = s("polyline", {class: `pc-line${scored ? "" : " unscored"}${isBest ? " best" : ""}`,
                                points: pts.join(" "), stroke: scored ? colorFor(quality) : null,
                                dataset: {trial: trial.name}},
      s("title", {}, `${trial.name} (${trial.status})\n` +
        (summary.parameters || []).map((p) => `${p} = ${trial.parameters[p]}`).join("\n") +
        `\n${objectiveName} = ${scored ? fmt(trial.objective) : "—"}`));
    return line;
  });
  lines.sort((a, b) => (a.classList.contains("best") ? 1 : 0) - (b.classList.contains("best") ? 1 : 0));
  const axisEls = axes.map((axis, i) => {
    const x = xOf(i);
    const ticks = axis.numeric
      ? [0, 0.5, 1].map((t) => [t, fmt(axis.lo + t * (axis.hi - axis.lo))])
      : axis.cats.slice(0, 12).map((c) => [axis.scale(c), c]);
    return s("g", {class: `pc-axis${i === axes.length - 1 ? " objective" : ""}`},
      s("line", {x1: x, x2: x, y1: pad.top, y2: pad.top + innerH}),
      s("text", {class: "pc-name", x, y: pad.top - 14, "text-anchor": "middle"}, axis.name),
      ticks.map(([t, label]) => {
        // The objective's ticks go on its right, clear of the lines arriving from the left.
        const side = i === axes.length - 1 ? 1 : -1;
        return [
          s("line", {class: "tick", x1: x + 4 * side, x2: x, y1: yOf(t), y2: yOf(t)}),
          s("text", {class: "pc-tick", x: x + 7 * side, y: yOf(t) + 4,
                     "text-anchor": side > 0 ? "start" : "end"}, String(label).slice(0, 12)),
        ];
      }));
  });
  return s("svg", {class: "parallel", width, height, viewBox: `0 0 ${width} ${height}`,
                   role: "img", "aria-label": "trials in parallel coordinates"},
    s("g", {class: "pc-lines"}, lines), axisEls);
}

// The objective over trials, Katib-style: one point per finished trial with an objective, in
// the order trials completed, and the best-so-far line (direction from the objective's type).
// `points` is [{name, objective, order}] sorted by completion; `best` names the best trial.
export function objectiveOverTrials(points, {width = 1000, height = 260, type = "maximize",
                                             metric = "objective", best} = {}) {
  const pad = {top: 20, bottom: 38, left: 64, right: 24};
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const values = points.map((p) => Number(p.objective));
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) { lo -= 1; hi += 1; }
  const n = Math.max(points.length, 2);
  const xOf = (i) => pad.left + (points.length < 2 ? innerW / 2 : (i * innerW) / (n - 1));
  const yOf = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * innerH;
  const better = type === "minimize" ? Math.min : Math.max;
  let running = null;
  const bestSoFar = points.map((p, i) => {
    running = running === null ? values[i] : better(running, values[i]);
    return `${xOf(i)},${yOf(running)}`;
  });
  const yTicks = [0, 0.5, 1].map((t) => lo + t * (hi - lo));
  const xTicks = [...new Set([0, Math.floor((points.length - 1) / 2), points.length - 1])]
    .filter((i) => i >= 0);
  return s("svg", {class: "objective-chart", width, height, viewBox: `0 0 ${width} ${height}`,
                   role: "img", "aria-label": `${metric} over trials`},
    s("g", {class: "oc-axes"},
      s("line", {x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + innerH}),
      s("line", {x1: pad.left, x2: pad.left + innerW, y1: pad.top + innerH, y2: pad.top + innerH}),
      yTicks.map((v) => s("text", {class: "oc-tick", x: pad.left - 6, y: yOf(v) + 4,
                                   "text-anchor": "end"}, fmt(v))),
      xTicks.map((i) => s("text", {class: "oc-tick", x: xOf(i), y: pad.top + innerH + 16,
                                   "text-anchor": "middle"}, String(i + 1))),
      s("text", {class: "oc-name", x: pad.left + innerW / 2, y: height - 4,
                 "text-anchor": "middle"}, "trials in completion order"),
      s("text", {class: "oc-name", x: 12, y: pad.top + innerH / 2, "text-anchor": "middle",
                 transform: `rotate(-90 12 ${pad.top + innerH / 2})`}, metric)),
    points.length ? s("polyline", {class: "oc-best-line", points: bestSoFar.join(" ")},
                      s("title", {}, `best ${metric} so far`)) : null,
    points.map((p, i) => s("circle", {class: `oc-point${p.name === best ? " best" : ""}`,
                                      cx: xOf(i), cy: yOf(values[i]),
                                      r: p.name === best ? 6 : 4, dataset: {trial: p.name}},
      s("title", {}, `#${i + 1} ${p.name}: ${metric} = ${fmt(p.objective)}`))));
}
