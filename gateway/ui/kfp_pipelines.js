// KFP pipelines: the list, uploading a package (KFP IR YAML/JSON or an Argo Workflow YAML; a
// file or a URL) as a pipeline or as a new version, and one pipeline's versions with a version's graph and inputs.

import {dagSvg} from "./charts.js";
import {add, ago, clear, emptyState, errorBox, h, keepFresh, pageHeader, put, table}
  from "./dom.js";
import {action, byCreated, field, kfp, kfpList, specGraph, specInputs, taskFacts,
        uploadPackage} from "./kfp_api.js";

const ACCEPT = ".yaml,.yml,.json";

// The package's own name: a file's, or the last part of a URL's path, without its extension.
const baseName = (path) => path.replace(/[?#].*$/, "").replace(/\/+$/, "").split("/").pop()
  .replace(/\.[^.]+$/, "");

// One source choice (file or URL) as a labelled radio button.
function sourceChoice(id, value, label, checked) {
  const input = h("input", {type: "radio", name: `${id}-source`, id: `${id}-source-${value}`,
                            value, checked});
  return h("span", {class: "inline"}, input, h("label", {for: input.id}, label));
}

// The upload form (hidden until asked for): a name, a description and the package, either a
// file or a URL the service downloads (KFP's package_url). onUpload gets {file, url, name,
// description}, with exactly one of file and url set.
function uploadForm(id, title, onUpload) {
  const name = h("input", {id: `${id}-name`, autocomplete: "off"});
  const description = h("input", {id: `${id}-description`, autocomplete: "off"});
  const file = h("input", {id: `${id}-file`, type: "file", accept: ACCEPT, required: true});
  const url = h("input", {id: `${id}-url`, type: "url", autocomplete: "off",
                          placeholder: "https://example.com/pipeline.yaml"});
  const fileField = field("Package file", file,
    "KFP IR (kfp.compiler output, YAML or JSON) or an Argo Workflow.");
  const urlField = field("Package URL", url, "An http(s) URL of a package, downloaded by the " +
    "platform (public addresses only, unless an operator allows the host).");
  urlField.hidden = true;
  const source = h("div", {class: "field", role: "radiogroup", "aria-label": "Package source"},
    h("span", {}, "Package source"), h("div", {class: "inline"},
      sourceChoice(id, "file", "Upload a file", true), sourceChoice(id, "url", "From URL", false)));
  const fromUrl = () => urlField.hidden === false;
  source.addEventListener("change", (e) => {
    urlField.hidden = e.target.value !== "url";
    fileField.hidden = !urlField.hidden;
    file.required = urlField.hidden;
    url.required = !urlField.hidden;
  });
  const errors = h("div", {class: "form-errors", "aria-live": "assertive"});
  const submit = h("button", {class: "button primary", type: "submit"}, "Upload");
  const form = h("form", {class: "form card pad", "aria-label": title, hidden: true},
    h("h2", {}, title), source, fileField, urlField,
    field("Name", name, "Defaults to the package's name."),
    field("Description", description),
    errors, h("div", {class: "actions"}, submit));
  file.addEventListener("change", () => {
    if (!name.value && file.files[0]) name.value = baseName(file.files[0].name);
  });
  url.addEventListener("change", () => {
    if (!name.value && url.value) name.value = baseName(url.value.trim());
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = "Uploading…";
    clear(errors);
    try {
      const link = fromUrl() ? url.value.trim() : "";
      await onUpload({file: link ? null : file.files[0], url: link,
                      name: name.value.trim() || (link ? baseName(link) : ""),
                      description: description.value.trim()});
      form.reset();
      urlField.hidden = true;
      fileField.hidden = false;
      file.required = true;
      url.required = false;
      form.hidden = true;
    } catch (err) {
      put(errors, errorBox(err));
    } finally {
      submit.disabled = false;
      submit.textContent = "Upload";
    }
  });
  return form;
}

export function renderPipelines(ctx) {
  const {main, ns, signal} = ctx;
  const body = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading pipelines…"));
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const form = uploadForm("upload", "Upload pipeline", async ({file, url, name, description}) => {
    const made = url
      ? await kfp("POST", "/pipelines/create", {
        pipeline: {display_name: name, description, namespace: ns},
        pipeline_version: {display_name: name, description, package_url: {pipeline_url: url}}})
      : await uploadPackage("/pipelines/upload",
        {namespace: ns, display_name: name, description}, file);
    window.location.hash = `#/kfp/pipelines/${encodeURIComponent(made.pipeline_id)}`;
  });
  const open = h("button", {class: "button primary", type: "button", id: "upload-pipeline",
                            onclick: () => { form.hidden = !form.hidden; }}, "Upload pipeline");
  add(main, pageHeader("Pipelines", open), form, messages, body);
  const refresh = async () => {
    const rows = byCreated(await kfpList("/pipelines", "pipelines", ns, signal));
    put(body, rows.length ? table([
      {title: "Name", cell: (p) => h("a", {href: `#/kfp/pipelines/${encodeURIComponent(
        p.pipeline_id)}`}, p.display_name)},
      {title: "Description", cell: (p) => p.description || h("span", {class: "muted"}, "—")},
      {title: "Uploaded", cell: (p) => ago(p.created_at)},
      {title: "", class: "right", cell: (p) => h("span", {class: "row-actions"},
        h("a", {class: "button small", href: `#/kfp/runs/+new?pipeline=${p.pipeline_id}`,
                "aria-label": `Create run of ${p.display_name}`}, "Create run"),
        action("Delete", async () => {
          if (!window.confirm(`Delete pipeline ${p.display_name} and all its versions?`)) return;
          await kfp("DELETE", `/pipelines/${p.pipeline_id}?cascade=true`);
          await refresh();
        }, messages, {"aria-label": `Delete ${p.display_name}`}))},
    ], rows.map((p) => ({...p, name: p.display_name}))) : emptyState("No pipelines yet",
      "Press ", h("strong", {}, "Upload pipeline"), " to add a compiled KFP pipeline or an ",
      "Argo Workflow YAML."));
  };
  keepFresh(body, refresh, signal, 5000);
}

function inputsTable(spec) {
  const inputs = specInputs(spec);
  if (!inputs.length) return h("p", {class: "muted pad"}, "This version takes no parameters.");
  return table([
    {title: "Parameter", cell: (i) => h("code", {}, i.name)},
    {title: "Type", cell: (i) => i.type},
    {title: "Default", cell: (i) => (i.value === "" ? h("span", {class: "muted"}, "—")
                                                    : h("code", {}, i.value))},
  ], inputs);
}

// The version's graph; picking a task shows what it runs in `panel`.
function versionGraph(spec, graph, panel, selected = null) {
  const nodes = specGraph(spec);
  if (!Object.keys(nodes).length) {
    put(graph, h("p", {class: "muted pad"}, "No tasks to draw."));
    return;
  }
  const svg = dagSvg(nodes, {selected, onSelect: (id) => {
    versionGraph(spec, graph, panel, id);
    put(panel, h("h3", {}, `Task ${id}`), h("dl", {class: "facts"},
      taskFacts(spec, id).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  }});
  svg.setAttribute("aria-label", "pipeline graph");
  put(graph, svg);
}

export async function renderPipeline(ctx, id) {
  const {main, signal} = ctx;
  const header = h("div");
  const messages = h("div", {class: "messages", "aria-live": "polite"});
  const versions = h("div", {class: "card"}, h("p", {class: "muted pad"}, "Loading…"));
  const graph = h("div", {class: "card dag-wrap"});
  const inputs = h("div", {class: "card"});
  const task = h("div", {class: "pad task-facts", "aria-live": "polite"},
                 h("p", {class: "muted"}, "Select a task to see what it runs."));
  const heading = h("h2", {class: "section"}, "Graph");
  add(main, header, messages, h("h2", {class: "section"}, "Versions"), versions, heading,
      h("div", {class: "split"}, graph, inputs));
  let pipeline;
  let selected = null;
  const form = uploadForm("upload-version", "Upload version", async (pkg) => {
    const {file, url, name, description} = pkg;
    const v = url
      ? await kfp("POST", `/pipelines/${id}/versions`,
        {display_name: name, description, package_url: {pipeline_url: url}})
      : await uploadPackage("/pipelines/upload_version",
        {pipelineid: id, display_name: name, description}, file);
    selected = v.pipeline_version_id;
    await refresh();
  });
  const show = (v) => {
    selected = v.pipeline_version_id;
    heading.textContent = `Graph of ${v.display_name}`;
    put(task, h("p", {class: "muted"}, "Select a task to see what it runs."));
    versionGraph(v.pipeline_spec, graph, task);
    put(inputs, h("h3", {class: "pad"}, "Parameters"), inputsTable(v.pipeline_spec), task);
  };
  const refresh = async () => {
    const list = byCreated((await kfp("GET", `/pipelines/${id}/versions?page_size=1000`,
                                      undefined, signal)).pipeline_versions || []);
    const current = list.find((v) => v.pipeline_version_id === selected) || list[0];
    if (current) show(current);
    else put(graph, h("p", {class: "muted pad"}, "This pipeline has no versions."));
    put(versions, table([
      {title: "Version", cell: (v) => h("button", {class: "linkish", type: "button",
        "aria-pressed": String(v.pipeline_version_id === selected), onclick: () => { show(v); refresh(); }},
        v.display_name)},
      {title: "Description", cell: (v) => v.description || h("span", {class: "muted"}, "—")},
      {title: "Uploaded", cell: (v) => ago(v.created_at)},
      {title: "", class: "right", cell: (v) => h("span", {class: "row-actions"},
        h("a", {class: "button small",
                href: `#/kfp/runs/+new?pipeline=${id}&version=${v.pipeline_version_id}`,
                "aria-label": `Create run of ${v.display_name}`}, "Create run"),
        action("Delete", async () => {
          if (!window.confirm(`Delete version ${v.display_name}? Its runs stay.`)) return;
          await kfp("DELETE", `/pipelines/${id}/versions/${v.pipeline_version_id}`);
          if (selected === v.pipeline_version_id) selected = null;
          await refresh();
        }, messages, {"aria-label": `Delete version ${v.display_name}`}))},
    ], list.map((v) => ({...v, name: v.display_name})), {rowClass: (v) =>
      (v.pipeline_version_id === selected ? "best" : undefined)}));
  };
  try {
    pipeline = await kfp("GET", `/pipelines/${id}`, undefined, signal);
  } catch (err) {
    if (!signal.aborted) put(header, errorBox(err));
    return;
  }
  const toggle = h("button", {class: "button", type: "button", id: "upload-version",
                              onclick: () => { form.hidden = !form.hidden; }}, "Upload version");
  put(header, pageHeader(pipeline.display_name,
    h("a", {class: "button ghost", href: "#/kfp/pipelines"}, "← All pipelines"), toggle,
    h("a", {class: "button primary", href: `#/kfp/runs/+new?pipeline=${id}`}, "Create run")),
    pipeline.description ? h("p", {class: "muted"}, pipeline.description) : null, form);
  try {
    await refresh();
  } catch (err) {
    if (!signal.aborted) put(messages, errorBox(err));
  }
}
