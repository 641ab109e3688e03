// Volumes: PersistentVolumeClaims of the namespace, live, with what uses each one (notebooks
// and workflows that mount it, InferenceServices whose storageUri is pvc://<claim>/...);
// create (name, size, access mode) and delete. The API itself refuses (409) to delete a
// claim a running workload mounts, naming the workloads; the page says so before asking.
// Route: #/volumes.

import {getJSON, pathFor, request} from "./api.js";
import {add, ago, badge, emptyState, errorBox, h, pageHeader, put, table} from "./dom.js";
import {byNewest, followList, poll} from "./live.js";

const USERS = [
  {kind: "Notebook", label: "notebook", view: "notebooks"},
  {kind: "InferenceService", label: "model", view: "models"},
  {kind: "Workflow", label: "workflow", view: "pipelines"},
];
const ACCESS_MODES = ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"];

// Every claim an object's spec refers to: persistentVolumeClaim.claimName anywhere, and
// storageUri values of the form pvc://<claim>/<path>.
export function claimsOf(spec) {
  const found = new Set();
  const walk = (value) => {
    if (Array.isArray(value)) { value.forEach(walk); return; }
    if (!value || typeof value !== "object") return;
    for (const [key, v] of Object.entries(value)) {
      if (key === "persistentVolumeClaim" && v && typeof v.claimName === "string") {
        found.add(v.claimName);
      } else if (key === "storageUri" && typeof v === "string" && v.startsWith("pvc://")) {
        found.add(v.slice("pvc://".length).split("/")[0]);
      } else {
        walk(v);
      }
    }
  };
  walk(spec);
  return found;
}

// claim name -> [{label, name, view}] for the namespace's notebooks, models and workflows.
async function usersByClaim(ns, signal) {
  const map = new Map();
  await Promise.all(USERS.map(async (u) => {
    let list;
    try {
      list = await getJSON(pathFor(u.kind, ns), signal);
    } catch (_) {
      return;  // a kind this person may not list: left out
    }
    for (const obj of list.items || []) {
      for (const claim of claimsOf(obj.spec)) {
        if (!map.has(claim)) map.set(claim, []);
        map.get(claim).push({label: u.label, name: obj.metadata.name, view: u.view});
      }
    }
  }));
  const order = (u) => USERS.findIndex((x) => x.label === u.label);
  for (const list of map.values()) {
    list.sort((a, b) => order(a) - order(b) || a.name.localeCompare(b.name));
  }
  return map;
}

function usedByCell(users) {
  if (!users || !users.length) return h("span", {class: "muted"}, "—");
  return h("span", {class: "used-by"}, users.map((u, i) => [i ? ", " : "",
    h("a", {href: `#/${u.view}/${encodeURIComponent(u.name)}`}, `${u.label} ${u.name}`)]));
}

function phase(o) {
  if (o.metadata.deletionTimestamp) return "Terminating";
  return (o.status && o.status.phase) || "Pending";
}

function createForm(ns, messages, onDone) {
  const name = h("input", {id: "vol-name", name: "vol-name", required: true, autocomplete: "off",
                           placeholder: "my-data"});
  const size = h("input", {id: "vol-size", name: "vol-size", value: "1Gi", required: true});
  const mode = h("select", {id: "vol-mode", name: "vol-mode"},
                 ACCESS_MODES.map((m) => h("option", {value: m}, m)));
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const submit = h("button", {class: "button primary", type: "submit", id: "vol-submit"},
                   "Create");
  const form = h("form", {class: "form card pad", "aria-label": "New volume", hidden: true},
    h("div", {class: "field-row volume-row"},
      h("div", {class: "field"}, h("label", {for: "vol-name"}, "Name"), name),
      h("div", {class: "field"}, h("label", {for: "vol-size"}, "Size"), size),
      h("div", {class: "field"}, h("label", {for: "vol-mode"}, "Access mode"), mode)),
    errors, h("div", {class: "actions"}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    put(errors);
    const body = {apiVersion: "v1", kind: "PersistentVolumeClaim",
                  metadata: {name: name.value.trim()},
                  spec: {accessModes: [mode.value],
                         resources: {requests: {storage: size.value.trim()}}}};
    try {
      await request("POST", pathFor("PersistentVolumeClaim", ns),
                    {body: JSON.stringify(body), contentType: "application/json"});
      put(messages, h("p", {class: "ok", role: "status"},
                      `persistentvolumeclaim/${body.metadata.name} created`));
      form.hidden = true;
      name.value = "";
      onDone();
    } catch (err) {
      put(errors, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function renderVolumes(ctx) {
  const {main, ns, signal} = ctx;
  const status = h("span", {class: "live"}, "connecting…");
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading…"));
  const remove = async (event, o) => {
    const name = o.metadata.name;
    const using = users.get(name) || [];
    const question = using.length
      ? `Volume ${name} is used by ${using.map((u) => `${u.label} ${u.name}`).join(", ")}. ` +
        "Delete it anyway? A volume a running workload mounts cannot be deleted until it stops."
      : `Delete volume ${name}? Its data is lost.`;
    if (!window.confirm(question)) return;
    event.target.disabled = true;
    try {
      await request("DELETE", `${pathFor("PersistentVolumeClaim", ns)}/${encodeURIComponent(name)}`);
      put(messages, h("p", {class: "ok", role: "status"}, `persistentvolumeclaim/${name} deleted`));
    } catch (err) {
      put(messages, errorBox(err));
      event.target.disabled = false;
    }
  };
  const columns = [
    {title: "Name", cell: (o) => o.metadata.name},
    {title: "Status", cell: (o) => badge(phase(o))},
    {title: "Capacity", class: "num", cell: (o) => (o.status && o.status.capacity &&
      o.status.capacity.storage) || (o.spec.resources && o.spec.resources.requests &&
      o.spec.resources.requests.storage) || "—"},
    {title: "Access modes", cell: (o) => (o.spec.accessModes || []).join(", ") || "—"},
    {title: "Used by", cell: (o) => usedByCell(users.get(o.metadata.name))},
    {title: "Created", cell: (o) => ago(o.metadata.creationTimestamp)},
    {title: "", class: "right", cell: (o) => h("button", {class: "button small", type: "button",
      "aria-label": `Delete ${o.metadata.name}`, disabled: !!o.metadata.deletionTimestamp,
      onclick: (event) => remove(event, o)}, "Delete")},
  ];
  let items = null;
  let users = new Map();
  const draw = () => {
    if (items === null) return;
    put(body, items.length ? table(columns, byNewest(items)) : emptyState("No volumes yet",
      "Press ", h("strong", {}, "New volume"), " to create a PersistentVolumeClaim."));
  };
  let seen = "";
  const refreshUsers = async () => {
    users = await usersByClaim(ns, signal);
    const text = JSON.stringify([...users]);
    if (text !== seen) draw();  // unchanged: keep the rows (and their buttons) in place
    seen = text;
  };
  const form = createForm(ns, messages, refreshUsers);
  const newButton = h("button", {class: "button primary", type: "button", id: "new-volume",
    onclick: () => { form.hidden = !form.hidden; if (!form.hidden) form.querySelector("input")
      .focus(); }}, "New volume");
  add(main, pageHeader("Volumes", status, newButton), form, messages, body);

  followList(pathFor("PersistentVolumeClaim", ns), signal, (list, live, err) => {
    status.textContent = live ? "live" : "reconnecting…";
    status.classList.toggle("on", live);
    if (err) {
      if (!body.querySelector("table")) put(body, errorBox(err));
      return;
    }
    items = list;
    draw();
  });
  // What mounts each claim changes with other kinds: looked at again every few seconds.
  poll(async () => { await refreshUsers(); return true; }, 5000, signal);
}
