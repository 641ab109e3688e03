// The Pipelines section's tabs and the Kubeflow Pipelines routes under #/kfp/:
//   #/kfp/pipelines, #/kfp/pipelines/<id>, #/kfp/runs[?experiment=<id>], #/kfp/runs/+new
//   [?pipeline=<id>&version=<id>], #/kfp/runs/<id>, #/kfp/compare/<id>,<id>[,...],
//   #/kfp/recurring, #/kfp/recurring/<id>, #/kfp/artifacts, #/kfp/experiments.
// The Argo Workflows list (#/pipelines, pipelines.js) is the section's first tab.

import {h} from "./dom.js";
import {renderArtifacts} from "./kfp_artifacts.js";
import {renderExperimentsKfp} from "./kfp_experiments.js";
import {renderCompare} from "./kfp_metrics.js";
import {renderPipeline, renderPipelines} from "./kfp_pipelines.js";
import {renderRecurringRun, renderRecurringRuns} from "./kfp_recurring.js";
import {renderRun} from "./kfp_run.js";
import {renderRunForm} from "./kfp_run_form.js";
import {renderRuns} from "./kfp_runs.js";

const TABS = [
  ["#/pipelines", "Workflows", "workflows"],
  ["#/kfp/pipelines", "Pipelines", "pipelines"],
  ["#/kfp/runs", "Runs", "runs"],
  ["#/kfp/recurring", "Recurring runs", "recurring"],
  ["#/kfp/artifacts", "Artifacts", "artifacts"],
  ["#/kfp/experiments", "KFP experiments", "experiments"],
];

// The tab strip shown on every page of the section; `current` is a TABS key.
export function sectionTabs(current) {
  return h("nav", {class: "tabs", "aria-label": "Pipelines sections"},
    TABS.map(([href, label, key]) => h("a", {href, class: key === current ? "tab active" : "tab",
                                             "aria-current": key === current ? "page" : null},
                                       label)));
}

// The part of the hash after #/kfp/: path segments and the query.
function parse() {
  const raw = window.location.hash.replace(/^#\/?kfp\/?/, "");
  const [path, query] = raw.split("?");
  return {parts: path.split("/").filter(Boolean).map(decodeURIComponent),
          query: new URLSearchParams(query || "")};
}

export function renderKfp(ctx) {
  const {parts, query} = parse();
  const [page, id] = parts;
  const tab = page === "compare" ? "runs" : (page || "pipelines");
  ctx.main.append(sectionTabs(tab));
  if (page === "runs" && id === "+new") renderRunForm(ctx, query);
  else if (page === "runs" && id) renderRun(ctx, id);
  else if (page === "runs") renderRuns(ctx, query);
  else if (page === "compare") renderCompare(ctx, (id || "").split(",").filter(Boolean));
  else if (page === "recurring" && id) renderRecurringRun(ctx, id);
  else if (page === "recurring") renderRecurringRuns(ctx);
  else if (page === "experiments") renderExperimentsKfp(ctx);
  else if (page === "artifacts") renderArtifacts(ctx);
  else if (id) renderPipeline(ctx, id);
  else renderPipelines(ctx);
}
