// Manage contributors, as Kubeflow's central dashboard does it: the namespaces you belong to
// (owner or contributor), and for the selected namespace its contributors with their roles,
// read, added and removed through Kubeflow's KFAM API (/kfam/v1/bindings). Only the
// namespace's owner (or a cluster admin) may add or remove; others see the list.
// Route: #/contributors.

import {getJSON, request} from "./api.js";
import {add, emptyState, errorBox, h, pageHeader, put, table} from "./dom.js";

const ROLES = {"kubeflow-admin": "admin", "kubeflow-edit": "edit", "kubeflow-view": "view"};
const KFAM = "/kfam/v1/bindings";

function binding(ns, user, role) {
  return {user: {kind: "User", name: user}, referredNamespace: ns,
          RoleRef: {apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole",
                    name: `kubeflow-${role}`}};
}

function membership(env) {
  const rows = (env.namespaces || []).map((n) => ({...n, name: n.namespace}));
  return table([
    {title: "Namespace", cell: (n) => n.namespace},
    {title: "Role", cell: (n) => n.role},
  ], rows);
}

function addForm(ns, errors, onAdded) {
  const email = h("input", {id: "contributor-email", name: "contributor-email", type: "email",
                            required: true, autocomplete: "off", placeholder: "someone@example.com"});
  const role = h("select", {id: "contributor-role", name: "contributor-role"},
                 h("option", {value: "edit"}, "edit"), h("option", {value: "view"}, "view"));
  const submit = h("button", {class: "button primary", type: "submit", id: "contributor-add"},
                   "Add");
  const form = h("form", {class: "form", "aria-label": "Add contributor"},
    h("div", {class: "field-row"},
      h("div", {class: "field"}, h("label", {for: "contributor-email"}, "Email"), email),
      h("div", {class: "field"}, h("label", {for: "contributor-role"}, "Role"), role)),
    h("div", {class: "actions"}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    put(errors);
    try {
      await request("POST", KFAM, {body: JSON.stringify(binding(ns, email.value.trim(),
        role.value)), contentType: "application/json"});
      email.value = "";
      await onAdded();
    } catch (err) {
      put(errors, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function renderContributors(ctx) {
  const {main, ns, env, signal} = ctx;
  const mine = (env.namespaces || []).find((n) => n.namespace === ns);
  const manages = env.isClusterAdmin || (mine && mine.role === "owner");
  const list = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading…"));
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const refresh = async () => {
    const [{bindings}, owners] = await Promise.all([
      getJSON(`${KFAM}?namespace=${encodeURIComponent(ns)}`, signal),
      getJSON("/api/workgroup/get-all-namespaces", signal)]);
    const owner = (owners.find(([n]) => n === ns) || [])[1];
    const rows = (bindings || []).map((b) => ({name: b.user.name, role: ROLES[b.RoleRef.name] ||
      b.RoleRef.name, owner: b.user.name === owner}))
      .sort((a, b) => Number(b.owner) - Number(a.owner) || a.name.localeCompare(b.name));
    put(list, rows.length ? table([
      {title: "User", cell: (r) => r.name},
      {title: "Role", cell: (r) => (r.owner ? "owner" : r.role)},
      {title: "", class: "right", cell: (r) => (manages && !r.owner ? h("button", {
        class: "button small", type: "button", "aria-label": `Remove ${r.name}`,
        onclick: async (event) => {
          if (!window.confirm(`Remove ${r.name} from ${ns}?`)) return;
          event.target.disabled = true;
          try {
            await request("DELETE", KFAM, {body: JSON.stringify(binding(ns, r.name, r.role)),
                                           contentType: "application/json"});
            await refresh();
          } catch (err) {
            put(errors, errorBox(err));
            event.target.disabled = false;
          }
        }}, "Remove") : null)},
    ], rows) : emptyState("No contributors", "Nobody but the owner works in this namespace."));
  };
  add(main, pageHeader("Manage contributors"),
      h("h2", {class: "section-title"}, "Your namespaces"), h("div", {class: "card"}, membership(env)),
      h("h2", {class: "section-title"}, `Contributors of ${ns}`), errors, list,
      manages ? h("section", {class: "card pad", "aria-label": "Add contributor"},
                  addForm(ns, errors, refresh))
        : h("p", {class: "muted"}, `Only the owner of ${ns} can add or remove contributors.`),
      h("p", {class: "hint muted"}, "Contributors sign in as themselves (OIDC or trusted-header ",
        "mode). A single-user platform has one person, so a binding there gives nobody access."));
  refresh().catch((err) => { if (!signal.aborted) put(list, errorBox(err)); });
}
