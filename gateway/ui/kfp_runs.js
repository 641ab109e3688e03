// KFP runs: the list (active or archived, live status), with selection for compare, archive,
// restore and delete, as Kubeflow Pipelines' run list does.

import {add, ago, clear, duration, emptyState, errorBox, h, pageHeader, put, spanOf, table}
  from "./dom.js";
import {action, byCreated, kfp, kfpList, stateBadge} from "./kfp_api.js";
import {poll} from "./live.js";

const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"]);

export function renderRuns(ctx, query) {
  const {main, ns, signal} = ctx;
  const experimentId = query.get("experiment") || "";
  let archived = query.get("archived") === "1";
  const selected = new Set();
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading runs…"));
  const toolbar = h("div", {class: "toolbar"});
  const title = h("span", {}, "Runs");
  const filter = h("input", {type: "search", id: "run-filter", "aria-label": "Filter runs",
                             placeholder: "Filter by name", oninput: () => draw()});
  add(main, pageHeader(title, filter, h("a", {class: "button primary", id: "create-run",
    href: `#/kfp/runs/+new${experimentId ? `?experiment=${experimentId}` : ""}`}, "Create run")),
      toolbar, messages, body);
  let runs = [];
  let experiments = new Map();
  let pipelines = new Map();

  const bulk = (label, fn) => action(label, async () => {
    clear(messages);
    for (const id of [...selected]) await fn(id);
    selected.clear();
    await refresh();
  }, messages, {disabled: selected.size === 0});

  const drawToolbar = () => {
    const view = (flag, label) => h("button", {class: `button small${archived === flag
      ? " primary" : ""}`, type: "button", "aria-pressed": String(archived === flag),
      onclick: () => { archived = flag; selected.clear(); draw(); }}, label);
    const compare = h("a", {class: "button small", id: "compare-runs", role: "button",
      "aria-disabled": String(selected.size < 2),
      href: selected.size >= 2 ? `#/kfp/compare/${[...selected].join(",")}` : null},
      `Compare runs${selected.size ? ` (${selected.size})` : ""}`);
    put(toolbar, h("span", {class: "row-actions"}, view(false, "Active"), view(true, "Archived")),
      h("span", {class: "spacer"}), compare,
      archived ? bulk("Restore", (id) => kfp("POST", `/runs/${id}:unarchive`))
        : bulk("Archive", (id) => kfp("POST", `/runs/${id}:archive`)),
      bulk("Delete", async (id) => {
        const run = runs.find((r) => r.run_id === id);
        if (window.confirm(`Delete run ${run ? run.display_name : id}? Its workflow goes too.`)) {
          await kfp("DELETE", `/runs/${id}`);
        }
      }));
  };

  const draw = () => {
    drawToolbar();
    const needle = filter.value.trim().toLowerCase();
    const rows = runs.filter((r) => (r.storage_state === "ARCHIVED") === archived &&
                                    r.display_name.toLowerCase().includes(needle));
    if (!rows.length) {
      put(body, emptyState(archived ? "No archived runs" : "No runs yet", "Press ",
        h("strong", {}, "Create run"), " to run a pipeline version."));
      return;
    }
    put(body, table([
      {title: "", cell: (r) => h("input", {type: "checkbox", "aria-label": `Select ${r.name}`,
        checked: selected.has(r.run_id), onchange: (e) => {
          if (e.target.checked) selected.add(r.run_id);
          else selected.delete(r.run_id);
          drawToolbar();
        }})},
      {title: "Run", cell: (r) => h("a", {href: `#/kfp/runs/${r.run_id}`}, r.display_name)},
      {title: "Status", cell: (r) => stateBadge(r.state)},
      {title: "Duration", class: "num", cell: (r) => duration(
        spanOf(r.created_at, FINAL.has(r.state) ? r.finished_at : null))},
      {title: "Pipeline", cell: (r) => {
        const id = (r.pipeline_version_reference || {}).pipeline_id;
        return id && pipelines.has(id) ? h("a", {href: `#/kfp/pipelines/${id}`},
                                           pipelines.get(id)) : "—";
      }},
      {title: "Experiment", cell: (r) => experiments.get(r.experiment_id) || "—"},
      {title: "Recurring run", cell: (r) => (r.recurring_run_id ? h("a",
        {href: "#/kfp/recurring"}, r.recurring_run_id.slice(0, 8)) : "—")},
      {title: "Created", cell: (r) => ago(r.created_at)},
    ], rows.map((r) => ({...r, name: r.display_name}))));
  };

  const refresh = async () => {
    const path = experimentId ? `/runs?experiment_id=${encodeURIComponent(experimentId)}`
      : "/runs";
    const [list, exps, pips] = await Promise.all([kfpList(path, "runs", ns, signal),
      kfpList("/experiments", "experiments", ns, signal),
      kfpList("/pipelines", "pipelines", ns, signal)]);
    runs = byCreated(list);
    experiments = new Map(exps.map((e) => [e.experiment_id, e.display_name]));
    pipelines = new Map(pips.map((p) => [p.pipeline_id, p.display_name]));
    title.textContent = experimentId
      ? `Runs of ${experiments.get(experimentId) || experimentId}` : "Runs";
    for (const id of [...selected]) if (!runs.some((r) => r.run_id === id)) selected.delete(id);
    draw();
  };
  poll(async () => {
    try {
      await refresh();
    } catch (err) {
      if (!signal.aborted) put(messages, errorBox(err));
    }
    return true;
  }, 2000, signal);
}
