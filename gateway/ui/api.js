// The dashboard's only door to the platform: same-origin fetches through the gateway, with
// the browser's session cookie. Errors come back as Kubernetes Status objects; ApiError keeps
// their message and field causes so views can show exactly what the API rejected.

let csrfToken = null;
// Where a notebook is served: "{scheme}://{name}.{namespace}.<domain>[:port]/notebook/...",
// its own origin, so its pages never run with the dashboard's (docs/security.md).
let notebookUrlTemplate = null;
// The host an InferenceService answers on: "{name}.{namespace}.<ingress domain>".
let inferenceHostTemplate = null;

export class ApiError extends Error {
  constructor(status, message, causes = [], body = null) {
    super(message);
    this.status = status;
    this.causes = causes;
    this.body = body;
  }
}

// Cookie sessions (OIDC mode) need the session's CSRF token on unsafe methods; single-user
// and bearer modes have none, and /oauth2/userinfo then simply leaves it out.
export async function init() {
  try {
    const resp = await fetch("/oauth2/userinfo", {credentials: "same-origin",
                                                  headers: {Accept: "application/json"}});
    if (resp.ok) {
      const info = await resp.json();
      csrfToken = info.csrfToken || null;
      notebookUrlTemplate = info.notebookUrl || null;
      inferenceHostTemplate = info.inferenceHost || null;
    }
  } catch (_) {
    csrfToken = null;
  }
}

// The address of a notebook server: on its own origin, or (a gateway without a notebook
// domain) on the dashboard's.
export function notebookUrl(namespace, name) {
  const path = `/notebook/${namespace}/${encodeURIComponent(name)}/`;
  if (!notebookUrlTemplate) return path;
  return notebookUrlTemplate.replaceAll("{namespace}", namespace)
    .replaceAll("{name}", encodeURIComponent(name));
}

// The host name of an InferenceService (its gRPC authority), or null if the gateway gave none.
export function inferenceHost(namespace, name) {
  if (!inferenceHostTemplate) return null;
  return inferenceHostTemplate.replaceAll("{namespace}", namespace).replaceAll("{name}", name);
}

async function errorFrom(resp) {
  let body = null;
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const text = await resp.text();
    try {
      body = JSON.parse(text);
      // A Kubernetes Status, a model server's {"error"}, or the Jupyter web app's {"log"}.
      message = body.message || body.error || body.log || message;
    } catch (_) {
      if (text.trim()) message = text.trim().slice(0, 500);
    }
  } catch (_) { /* keep the status line */ }
  const causes = (body && body.details && Array.isArray(body.details.causes))
    ? body.details.causes : [];
  return new ApiError(resp.status, message, causes, body);
}

export async function request(method, path,
                              {body, contentType, text = false, signal, headers: extra} = {}) {
  const headers = {Accept: text ? "text/plain, */*" : "application/json", ...extra};
  if (contentType) headers["Content-Type"] = contentType;
  if (csrfToken && !["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = csrfToken;
  const resp = await fetch(path, {method, headers, body, signal, credentials: "same-origin"});
  if (resp.status === 401) {
    // The session ended: log in again and come back to the dashboard.
    window.location.assign("/oauth2/start?rd=" + encodeURIComponent("/" + window.location.hash));
    throw new ApiError(401, "session expired; redirecting to login");
  }
  if (!resp.ok) throw await errorFrom(resp);
  return text ? resp.text() : resp.json();
}

// True for a browser login session (OIDC mode): the only case where logging out means anything.
export const hasSession = () => csrfToken !== null;

// Sign-out is a POST with the CSRF token (the gateway refuses GET and revokes the session);
// it answers where to go next (the provider's end-session page), since a fetch cannot follow
// a cross-origin redirect for the page.
export async function signOut(url) {
  const {location} = await request("POST", url);
  window.location.assign(location || "/");
}

export const getJSON = (path, signal) => request("GET", path, {signal});
export const getText = (path, signal) => request("GET", path, {text: true, signal});

// Follows a `?watch=1` stream of {"type","object"} lines until it ends or `signal` aborts.
export async function watch(path, resourceVersion, onEvent, signal) {
  const sep = path.includes("?") ? "&" : "?";
  const url = `${path}${sep}watch=1` +
    (resourceVersion ? `&resourceVersion=${encodeURIComponent(resourceVersion)}` : "");
  const resp = await fetch(url, {credentials: "same-origin", signal,
                                 headers: {Accept: "application/json"}});
  if (!resp.ok || !resp.body) throw await errorFrom(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (!line) continue;
      try {
        onEvent(JSON.parse(line));
      } catch (_) { /* a partial or foreign line: skip it */ }
    }
  }
}

// Where each kind lives, Kubernetes-style: core kinds under /api/v1, the rest under /apis.
export const KINDS = [
  {apiVersion: "v1", kind: "PersistentVolumeClaim", plural: "persistentvolumeclaims",
   view: "volumes"},
  {apiVersion: "kubeflow.org/v1", kind: "Notebook", plural: "notebooks", view: "notebooks"},
  {apiVersion: "kubeflow.org/v1beta1", kind: "Experiment", plural: "experiments",
   view: "experiments"},
  {apiVersion: "argoproj.io/v1alpha1", kind: "Workflow", plural: "workflows", view: "pipelines"},
  {apiVersion: "argoproj.io/v1alpha1", kind: "CronWorkflow", plural: "cronworkflows",
   view: "pipelines"},
  {apiVersion: "argoproj.io/v1alpha1", kind: "WorkflowTemplate", plural: "workflowtemplates",
   view: "pipelines"},
  {apiVersion: "serving.kserve.io/v1beta1", kind: "InferenceService",
   plural: "inferenceservices", view: "models"},
];

export function kindInfo(apiVersion, kind) {
  return KINDS.find((k) => k.apiVersion === apiVersion && k.kind === kind) || null;
}

export function collectionPath(apiVersion, plural, ns) {
  const root = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  return `${root}/namespaces/${encodeURIComponent(ns)}/${plural}`;
}

export function pathFor(kind, ns) {
  const info = KINDS.find((k) => k.kind === kind);
  return collectionPath(info.apiVersion, info.plural, ns);
}
