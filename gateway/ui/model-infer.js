// The Models page's test-inference panel: a V1 (:predict) or V2 (Open Inference Protocol
// /infer) JSON body, prefilled from the model's V2 metadata (/v2/models/{name}: input names,
// shapes, datatypes) when the server gives it, sent through the gateway's /serving path;
// the answer and the round-trip time are shown.

import {request} from "./api.js";
import {errorBox, h, put} from "./dom.js";

const base = (obj) =>
  `/serving/${obj.metadata.namespace}/${encodeURIComponent(obj.metadata.name)}`;

function endpoint(obj, protocol) {
  const name = encodeURIComponent(obj.metadata.name);
  return protocol === "v2" ? `${base(obj)}/v2/models/${name}/infer`
    : `${base(obj)}/v1/models/${name}:predict`;
}

const sample = (datatype) => (datatype === "BYTES" ? "hello" : 0);

// One row of the input: a zero (or "hello") for every element after the batch dimension.
function row(input) {
  const dims = (input.shape || [-1]).slice(1).map((d) => (d > 0 ? d : 1));
  const fill = (level) => (level === dims.length ? sample(input.datatype)
    : Array.from({length: dims[level]}, () => fill(level + 1)));
  return fill(0);
}

export function bodyFor(protocol, metadata) {
  const inputs = (metadata && metadata.inputs) || [];
  if (protocol === "v2") {
    return {inputs: inputs.map((i) => {
      const shape = (i.shape || [-1]).map((d) => (d > 0 ? d : 1));
      const count = shape.reduce((a, b) => a * b, 1);
      return {name: i.name, shape, datatype: i.datatype,
              data: Array.from({length: count}, () => sample(i.datatype))};
    })};
  }
  return {instances: inputs.length ? [row(inputs[0])] : []};
}

export async function renderInferencePanel(panel, obj, signal) {
  const p = (obj.spec && obj.spec.predictor) || {};
  const declared = ((p.model || {}).protocolVersion || "v1").toLowerCase();
  let metadata = null;
  try {
    metadata = await request("GET", `${base(obj)}/v2/models/${encodeURIComponent(
      obj.metadata.name)}`, {signal});
  } catch (_) {
    metadata = null;  // a V1-only or custom server: the body starts empty
  }
  const protocol = h("select", {id: "infer-protocol"},
    h("option", {value: "v1", selected: declared !== "v2"}, "V1 (:predict)"),
    h("option", {value: "v2", selected: declared === "v2"}, "V2 (infer)"));
  const editor = h("textarea", {id: "infer-body", rows: 8, spellcheck: "false",
                                class: "code-input"});
  const send = h("button", {class: "button primary", type: "submit", id: "infer-send"}, "Send");
  const target = h("code", {class: "small"});
  const latency = h("span", {class: "muted", id: "infer-latency", role: "status"});
  const output = h("pre", {class: "log", id: "infer-response", "aria-label": "Response"});
  const fill = () => {
    editor.value = JSON.stringify(bodyFor(protocol.value, metadata), null, 2);
    target.textContent = `POST ${endpoint(obj, protocol.value)}`;
  };
  protocol.addEventListener("change", fill);
  fill();
  const form = h("form", {class: "form infer", "aria-label": "Test inference"},
    h("div", {class: "field-row"},
      h("div", {class: "field"}, h("label", {for: "infer-protocol"}, "Protocol"), protocol),
      h("div", {class: "field"}, h("span", {class: "muted"}, "Endpoint"), target)),
    h("p", {class: "hint muted"}, metadata && (metadata.inputs || []).length
      ? "Inputs from the model's metadata: " + metadata.inputs.map((i) =>
        `${i.name} ${i.datatype} [${(i.shape || []).join(", ")}]`).join("; ")
      : "The model's metadata names no inputs: write the body yourself."),
    h("div", {class: "field"}, h("label", {for: "infer-body"}, "Request body"), editor),
    h("div", {class: "actions"}, send, latency),
    output);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = JSON.stringify(JSON.parse(editor.value));
    } catch (err) {
      put(output, errorBox(new Error(`The body is not JSON: ${err.message}`)));
      return;
    }
    send.disabled = true;
    latency.textContent = "sending…";
    const started = performance.now();
    try {
      const text = await request("POST", endpoint(obj, protocol.value),
                                 {body, contentType: "application/json", text: true});
      const ms = Math.round(performance.now() - started);
      let shown = text;
      try {
        shown = JSON.stringify(JSON.parse(text), null, 2);
      } catch (_) { /* not JSON: as it came */ }
      put(output, shown);
      latency.textContent = `answered in ${ms} ms`;
    } catch (err) {
      latency.textContent = `failed after ${Math.round(performance.now() - started)} ms`;
      put(output, errorBox(err));
    } finally {
      send.disabled = false;
    }
  });
  put(panel, form);
}
