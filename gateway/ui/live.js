// Keeping a view current: a list followed by its watch stream (with polling as the fallback),
// and plain polling for details. Everything stops when the view's AbortSignal fires.

import {getJSON, watch} from "./api.js";

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, {once: true});
  });
}

// Calls `onChange(items, live)` with the collection's current items whenever it changes.
// `live` says whether a watch stream is open (true) or the view is polling (false).
// The loop is bounded by the view's lifetime; each failure backs off up to 10 s.
export async function followList(path, signal, onChange) {
  let failures = 0;
  while (!signal.aborted) {
    try {
      const list = await getJSON(path, signal);
      const items = new Map((list.items || []).map((o) => [o.metadata.name, o]));
      onChange([...items.values()], true);
      failures = 0;
      await watch(path, list.metadata && list.metadata.resourceVersion, (event) => {
        const obj = event.object || {};
        const name = obj.metadata && obj.metadata.name;
        if (event.type === "ERROR" || !name) return;
        if (event.type === "DELETED") items.delete(name);
        else items.set(name, obj);
        onChange([...items.values()], true);
      }, signal);
    } catch (err) {
      if (signal.aborted) return;
      failures += 1;
      onChange(null, false, err);
    }
    await sleep(Math.min(10000, 1000 * 2 ** Math.min(failures, 4)), signal);
  }
}

// Calls `fn()` now and then every `ms` while it returns true and the view is open.
export async function poll(fn, ms, signal) {
  while (!signal.aborted) {
    let again = true;
    try {
      again = await fn();
    } catch (err) {
      if (signal.aborted) return;
    }
    if (!again) return;
    await sleep(ms, signal);
  }
}

export function byNewest(items) {
  return [...items].sort((a, b) =>
    (b.metadata.creationTimestamp || "").localeCompare(a.metadata.creationTimestamp || "") ||
    a.metadata.name.localeCompare(b.metadata.name));
}
