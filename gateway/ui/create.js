// "Create from YAML": posts each document to its kind's collection, as YAML, and shows the
// API's own rejection (message and field paths) when it says no.

import {ApiError, KINDS, collectionPath, kindInfo, request} from "./api.js";
import {add, clear, errorBox, h, put} from "./dom.js";

const EXAMPLES = {
  "Volume (PersistentVolumeClaim)": `apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: my-volume
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
`,
  "Workflow (Argo)": `apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: hello-
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: hello, template: say}
      - {name: world, template: say, dependencies: [hello]}
  - name: say
    container:
      image: python:3.11
      command: [python3, -c, "print('hello from shipyard')"]
`,
};

function unquote(value) {
  const v = value.trim().replace(/\s+#.*$/, "");
  return /^(['"]).*\1$/.test(v) ? v.slice(1, -1) : v;
}

// Just enough YAML to route a document: top-level apiVersion and kind, and the namespace in
// metadata (block or flow style). The service parses the document itself.
export function routeOf(doc) {
  const text = doc.trim();
  if (text.startsWith("{")) {
    try {
      const obj = JSON.parse(text);
      return {apiVersion: obj.apiVersion, kind: obj.kind,
              namespace: obj.metadata && obj.metadata.namespace, json: true};
    } catch (_) { /* fall through: let the API say what is wrong */ }
  }
  const top = (key) => {
    const m = new RegExp(`^${key}:[ \\t]*(.+)$`, "m").exec(text);
    return m ? unquote(m[1]) : undefined;
  };
  let namespace;
  const flow = /^metadata:[ \t]*\{(.*)\}/m.exec(text);
  if (flow) {
    const m = /(?:^|,)\s*namespace:\s*([^,}]+)/.exec(flow[1]);
    if (m) namespace = unquote(m[1]);
  } else {
    const block = /^metadata:[ \t]*\n((?:[ \t]+.*\n?|\s*\n)*)/m.exec(text);
    if (block) {
      const indent = (/^([ \t]+)\S/m.exec(block[1]) || [null, ""])[1];
      const m = new RegExp(`^${indent}namespace:[ \\t]*(.+)$`, "m").exec(block[1]);
      if (m) namespace = unquote(m[1]);
    }
  }
  return {apiVersion: top("apiVersion"), kind: top("kind"), namespace, json: false};
}

export function splitDocuments(text) {
  return text.split(/^---[ \t]*(?:#.*)?$/m).filter((d) => d.replace(/^\s*#.*$/gm, "").trim());
}

async function createOne(doc, ns) {
  const route = routeOf(doc);
  if (!route.apiVersion || !route.kind) {
    throw new ApiError(400, "apiVersion and kind are required at the top level of the document");
  }
  const info = kindInfo(route.apiVersion, route.kind);
  if (!info) {
    const known = KINDS.map((k) => `${k.kind} (${k.apiVersion})`).join(", ");
    throw new ApiError(400, `cannot create ${route.kind} (${route.apiVersion}) here; ` +
                            `the dashboard knows ${known}`);
  }
  const target = route.namespace || ns;
  // Strict, as kubectl asks: a misspelt field is an error shown in place, not dropped.
  const path = collectionPath(info.apiVersion, info.plural, target) + "?fieldValidation=Strict";
  const created = await request("POST", path, {
    body: doc, contentType: route.json ? "application/json" : "application/yaml"});
  return {info, created};
}

export function openCreateDialog(ctx, onCreated) {
  const output = h("div", {class: "dialog-output"});
  const text = h("textarea", {id: "yaml-input", spellcheck: "false", rows: 18,
    placeholder: "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: my-volume\n..."});
  const submit = h("button", {class: "button primary", type: "submit", id: "yaml-submit"},
                   "Create");
  const picker = h("select", {"aria-label": "insert an example"},
    h("option", {value: ""}, "Insert an example…"),
    Object.keys(EXAMPLES).map((k) => h("option", {value: k}, k)));
  picker.addEventListener("change", () => {
    if (picker.value) text.value = EXAMPLES[picker.value];
    picker.value = "";
    text.focus();
  });
  const dialog = h("dialog", {class: "create-dialog", "aria-labelledby": "create-title"},
    h("form", {method: "dialog"},
      h("header", {}, h("h2", {id: "create-title"}, "Create from YAML"), picker),
      h("p", {class: "muted"}, "Objects without metadata.namespace go to ",
        h("code", {}, ctx.ns), ". Several documents may be separated by ", h("code", {}, "---"), "."),
      text, output,
      h("footer", {},
        h("button", {class: "button ghost", type: "button", value: "cancel",
                     onclick: () => dialog.close()}, "Cancel"),
        submit)));
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(output);
    const docs = splitDocuments(text.value);
    if (!docs.length) {
      add(output, errorBox(new ApiError(400, "paste a YAML or JSON object first")));
      return;
    }
    submit.disabled = true;
    const done = [];
    try {
      for (const doc of docs.slice(0, 50)) {
        const {info, created} = await createOne(doc, ctx.ns);
        done.push({info, created});
      }
    } catch (err) {
      if (done.length) {
        add(output, h("p", {class: "ok"}, `Created ${done.map((d) =>
          `${d.info.kind.toLowerCase()}/${d.created.metadata.name}`).join(", ")}.`));
      }
      add(output, errorBox(err));
      submit.disabled = false;
      return;
    }
    submit.disabled = false;
    dialog.close();
    onCreated(done);
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  text.focus();
}
