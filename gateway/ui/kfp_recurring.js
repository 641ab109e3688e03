// KFP recurring runs: the list (enable, disable, delete) and one recurring run's settings and
// the runs it started, as Kubeflow Pipelines' UI shows them.

import {add, ago, emptyState, h, keepFresh, pageHeader, put, table} from "./dom.js";
import {action, byCreated, kfp, kfpList, shortId, stateBadge, triggerText} from "./kfp_api.js";

function actions(r, after, messages) {
  const act = (label, fn) => action(label, async () => { await fn(); await after(); },
                                    messages, {"aria-label": `${label} ${r.display_name}`});
  const path = `/recurringruns/${r.recurring_run_id}`;
  return h("span", {class: "row-actions"},
    r.status === "ENABLED" ? act("Disable", () => kfp("POST", `${path}:disable`))
      : act("Enable", () => kfp("POST", `${path}:enable`)),
    act("Delete", async () => {
      if (window.confirm(`Delete recurring run ${r.display_name}? Its runs stay.`)) {
        await kfp("DELETE", path);
        if (window.location.hash.startsWith("#/kfp/recurring/")) {
          window.location.hash = "#/kfp/recurring";
        }
      }
    }));
}

export function renderRecurringRuns(ctx) {
  const {main, ns, signal} = ctx;
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading…"));
  add(main, pageHeader("Recurring runs", h("a", {class: "button primary",
    href: "#/kfp/runs/+new"}, "Create run")), messages, body);
  const refresh = async () => {
    const [recs, runs, exps] = await Promise.all([
      kfpList("/recurringruns", "recurringRuns", ns, signal), kfpList("/runs", "runs", ns, signal),
      kfpList("/experiments", "experiments", ns, signal)]);
    const names = new Map(exps.map((e) => [e.experiment_id, e.display_name]));
    const count = (r) => runs.filter((x) => x.recurring_run_id === r.recurring_run_id).length;
    put(body, recs.length ? table([
      {title: "Name", cell: (r) => h("a", {href: `#/kfp/recurring/${r.recurring_run_id}`},
                                     r.display_name)},
      {title: "Status", cell: (r) => stateBadge(r.status)},
      {title: "Trigger", cell: (r) => triggerText(r.trigger)},
      {title: "Max concurrency", class: "num", cell: (r) => r.max_concurrency},
      {title: "Runs started", class: "num", cell: (r) => String(count(r))},
      {title: "Experiment", cell: (r) => names.get(r.experiment_id) || shortId(r.experiment_id)},
      {title: "Created", cell: (r) => ago(r.created_at)},
      {title: "", class: "right", cell: (r) => actions(r, refresh, messages)},
    ], byCreated(recs).map((r) => ({...r, name: r.display_name})))
      : emptyState("No recurring runs", "Create a run and choose ", h("strong", {}, "Recurring"),
                   " to start runs on a schedule."));
  };
  keepFresh(body, refresh, signal);
}

export function renderRecurringRun(ctx, id) {
  const {main, ns, signal} = ctx;
  const header = h("div");
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const facts = h("div", {class: "card pad"}, h("p", {class: "muted"}, "Loading…"));
  const runsBox = h("div", {class: "card"});
  add(main, header, messages, facts, h("h2", {class: "section"}, "Runs it started"), runsBox);
  const refresh = async () => {
    const [r, runs, exps, pips] = await Promise.all([
      kfp("GET", `/recurringruns/${id}`, undefined, signal), kfpList("/runs", "runs", ns, signal),
      kfpList("/experiments", "experiments", ns, signal),
      kfpList("/pipelines", "pipelines", ns, signal)]);
    const exp = exps.find((e) => e.experiment_id === r.experiment_id);
    const ref = r.pipeline_version_reference || {};
    const pipeline = pips.find((p) => p.pipeline_id === ref.pipeline_id);
    const params = Object.entries((r.runtime_config || {}).parameters || {});
    put(header, pageHeader(r.display_name, h("a", {class: "button ghost",
      href: "#/kfp/recurring"}, "← All recurring runs"), actions(r, refresh, messages)));
    put(facts, h("dl", {class: "facts wide"},
      [["Status", stateBadge(r.status)], ["Trigger", triggerText(r.trigger)],
       ["Max concurrency", r.max_concurrency], ["Catch up", r.no_catchup ? "no" : "yes"],
       ["Pipeline", pipeline ? h("a", {href: `#/kfp/pipelines/${pipeline.pipeline_id}`},
                                 pipeline.display_name) : shortId(ref.pipeline_id)],
       ["Experiment", exp ? exp.display_name : shortId(r.experiment_id)],
       ["Created", ago(r.created_at)],
       ...params.map(([k, v]) => [`Parameter ${k}`, typeof v === "object" ? JSON.stringify(v)
                                                                           : String(v)])]
        .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
    const mine = byCreated(runs.filter((x) => x.recurring_run_id === id));
    put(runsBox, mine.length ? table([
      {title: "Run", cell: (x) => h("a", {href: `#/kfp/runs/${x.run_id}`}, x.display_name)},
      {title: "Status", cell: (x) => stateBadge(x.state)},
      {title: "Created", cell: (x) => ago(x.created_at)},
    ], mine.map((x) => ({...x, name: x.display_name})))
      : h("p", {class: "muted pad"}, "No runs yet."));
  };
  keepFresh(messages, refresh, signal);
}
