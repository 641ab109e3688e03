// The dashboard shell: who is logged in, which namespace, and a hash router over the views.
// Routes: #/pipelines, #/pipelines/<name>, #/experiments, #/experiments/<name>, #/notebooks,
// #/notebooks/+new, #/notebooks/<name>, #/volumes, #/models, #/models/<name>, #/contributors.
// Each view gets an AbortSignal that fires when the user leaves it.

import {getJSON, hasSession, init, signOut} from "./api.js";
import {openCreateDialog} from "./create.js";
import {add, clear, errorBox, h, put} from "./dom.js";
import {renderExperiment, renderExperiments} from "./experiments.js";
import {renderWorkflow, renderWorkflows} from "./pipelines.js";
import {renderKfp} from "./kfp.js";
import {renderNotebook, renderNotebookForm, renderNotebooks} from "./notebooks.js";
import {renderModel, renderModels} from "./models.js";
import {renderContributors} from "./profile.js";
import {renderVolumes} from "./volumes.js";

const NS_KEY = "shipyard.namespace";
const NAV = [
  ["pipelines", "Pipelines"],
  ["experiments", "Experiments"],
  ["notebooks", "Notebooks"],
  ["volumes", "Volumes"],
  ["models", "Models"],
  ["contributors", "Contributors"],
];

// Views reached through another nav entry's tabs: #/kfp/... (Kubeflow Pipelines) is Pipelines'.
const SECTIONS = {kfp: "pipelines"};

const state = {env: null, ns: null, controller: null};
const main = document.getElementById("main");

function parseHash() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const known = NAV.some(([id]) => id === parts[0]) || Object.hasOwn(SECTIONS, parts[0]);
  const view = known ? parts[0] : "pipelines";
  return {view, name: parts[1] || null};
}

function toast(message) {
  const el = h("div", {class: "toast", role: "status"}, message);
  document.body.append(el);
  setTimeout(() => el.remove(), 4000);
}

function route() {
  if (state.controller) state.controller.abort();
  state.controller = new AbortController();
  const {view, name} = parseHash();
  const navView = SECTIONS[view] || view;
  for (const link of document.querySelectorAll("nav.side a")) {
    link.classList.toggle("active", link.dataset.view === navView);
    if (link.dataset.view === navView) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  if (!state.ns) {
    add(main, h("div", {class: "empty"}, h("p", {class: "empty-title"}, "No namespace"),
      h("p", {class: "empty-hint"}, `${state.env.user} has no profile yet. Ask an admin to `,
        "add you as a contributor, or create a profile.")));
    return;
  }
  const ctx = {main, ns: state.ns, env: state.env, signal: state.controller.signal};
  document.title = `${name || NAV.find(([id]) => id === navView)[1]} · shipyard`;
  if (view === "pipelines") name ? renderWorkflow(ctx, name) : renderWorkflows(ctx);
  else if (view === "kfp") renderKfp(ctx);
  else if (view === "experiments") name ? renderExperiment(ctx, name) : renderExperiments(ctx);
  else if (view === "notebooks") {
    if (name === "+new") renderNotebookForm(ctx);
    else if (name) renderNotebook(ctx, name);
    else renderNotebooks(ctx);
  }
  else if (view === "models") name ? renderModel(ctx, name) : renderModels(ctx);
  else if (view === "contributors") renderContributors(ctx);
  else if (view === "volumes") renderVolumes(ctx);
}

function header() {
  const env = state.env;
  const namespaces = (env.namespaces || []).map((n) => n.namespace);
  const select = h("select", {id: "namespace", "aria-label": "namespace"},
    namespaces.map((ns) => h("option", {value: ns, selected: ns === state.ns}, ns)));
  select.addEventListener("change", () => {
    state.ns = select.value;
    localStorage.setItem(NS_KEY, state.ns);
    const {view} = parseHash();
    window.location.hash = `#/${view}`;
    route();
  });
  const create = h("button", {class: "button primary", id: "create-yaml", type: "button",
                              disabled: !state.ns}, "Create from YAML");
  create.addEventListener("click", () => openCreateDialog(state, (done) => {
    const last = done[done.length - 1];
    toast(done.map((d) => `${d.info.kind.toLowerCase()}/${d.created.metadata.name} created`)
      .join(", "));
    const target = `#/${last.info.view}`;
    if (window.location.hash === target) route();
    else window.location.hash = target;
  }));
  const logoutUrl = env.platform && env.platform.logoutUrl;
  let logout = null;
  if (logoutUrl && hasSession()) {
    logout = h("button", {class: "button ghost small", id: "logout", type: "button"}, "Log out");
    logout.addEventListener("click", () => signOut(logoutUrl).catch((err) => toast(err.message)));
  }
  const bar = document.getElementById("topbar");
  put(bar, 
    h("a", {class: "brand", href: "#/pipelines"},
      h("img", {src: "/ui/logo.svg", alt: "", width: 26, height: 26}), "shipyard"),
    h("div", {class: "spacer"}),
    h("label", {class: "ns"}, h("span", {class: "muted"}, "Namespace"), select),
    create,
    h("span", {class: "user", id: "user", title: env.isClusterAdmin ? "cluster admin" : ""},
      env.user),
    logout);
  const nav = document.getElementById("nav");
  put(nav, NAV.map(([id, label]) =>
    h("a", {href: `#/${id}`, dataset: {view: id}}, label)));
}

async function start() {
  try {
    await init();
    state.env = await getJSON("/api/workgroup/env-info");
  } catch (err) {
    put(main, errorBox(err));
    return;
  }
  const namespaces = (state.env.namespaces || []).map((n) => n.namespace);
  const saved = localStorage.getItem(NS_KEY);
  state.ns = namespaces.includes(saved) ? saved : (namespaces[0] || null);
  header();
  window.addEventListener("hashchange", route);
  route();
}

start();
