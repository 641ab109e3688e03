// Small DOM helpers. Every string becomes a text node (never innerHTML), so object names and
// API messages cannot inject markup.

import {poll} from "./live.js";

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
export const s = (tag, attrs, ...children) =>
  build(document.createElementNS(SVG_NS, tag), attrs, children);

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// Appends children (nested arrays, strings, nodes; null and false are skipped).
export const add = (el, ...children) => build(el, {}, children);
// Replaces an element's children.
export const put = (el, ...children) => build(clear(el), {}, children);

export function parseTime(value) {
  const t = value ? Date.parse(value) : NaN;
  return Number.isNaN(t) ? null : t;
}

export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "—";
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${sec}s`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min}m ${sec % 60}s`;
  const hours = Math.floor(min / 60);
  if (hours < 48) return `${hours}h ${min % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function ago(value) {
  const t = parseTime(value);
  if (t === null) return h("span", {class: "muted"}, "—");
  const text = Date.now() - t < 5000 ? "just now" : `${duration(Date.now() - t)} ago`;
  return h("time", {datetime: value, title: new Date(t).toLocaleString()}, text);
}

export function spanOf(start, end) {
  const a = parseTime(start);
  if (a === null) return null;
  const b = parseTime(end);
  return (b === null ? Date.now() : b) - a;
}

export function badge(phase) {
  const text = phase || "Unknown";
  return h("span", {class: `badge phase-${text.toLowerCase()}`}, text);
}

export function progressBar(progress) {
  const m = /^(\d+)\/(\d+)$/.exec(progress || "");
  if (!m) return h("span", {class: "muted"}, progress || "—");
  const [done, total] = [Number(m[1]), Number(m[2])];
  const bar = h("span", {class: "progress-fill"});
  bar.style.width = `${total ? Math.round((100 * done) / total) : 0}%`;
  return h("span", {class: "progress", title: `${done} of ${total} steps finished`},
           h("span", {class: "progress-track"}, bar), h("span", {}, progress));
}

export function table(columns, rows, {rowClass} = {}) {
  return h("table", {class: "grid"},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {class: c.class}, c.title)))),
    h("tbody", {}, rows.map((row) =>
      h("tr", {class: rowClass ? rowClass(row) : undefined, dataset: {name: row.metadata
        ? row.metadata.name : (row.name || "")}},
        columns.map((c) => h("td", {class: c.class}, c.cell(row)))))));
}

export function emptyState(title, ...hint) {
  return h("div", {class: "empty"}, h("p", {class: "empty-title"}, title),
           h("p", {class: "empty-hint"}, ...hint));
}

export function errorBox(err) {
  const causes = (err && err.causes) || [];
  return h("div", {class: "error", role: "alert"},
    h("p", {class: "error-message"}, (err && err.message) || String(err)),
    causes.length ? h("ul", {class: "causes"}, causes.map((c) =>
      h("li", {}, h("code", {class: "field"}, c.field || "(object)"), " ", c.message || c.reason)))
      : null);
}

export function pageHeader(title, ...extra) {
  return h("div", {class: "page-header"}, h("h1", {}, title), h("div", {class: "actions"},
           ...extra));
}

// Calls `refresh` every `ms` until the view's signal fires; a refresh that fails shows its
// error in `body` (unless the view is already gone) and polling goes on.
export function keepFresh(body, refresh, signal, ms = 3000) {
  poll(async () => {
    try {
      await refresh();
    } catch (err) {
      if (!signal.aborted) put(body, errorBox(err));
    }
    return true;
  }, ms, signal);
}
