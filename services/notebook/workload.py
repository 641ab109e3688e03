"""From a Notebook to the runtime workload that serves it (Kubeflow's StatefulSet, locally).

Kubeflow's notebook controller turns the first container of ``spec.template.spec`` into a
one-replica StatefulSet whose image starts Jupyter with ``base_url=$NB_PREFIX``. The local
runtime pulls no image, so the "image's entrypoint" is the Jupyter server of the platform's
own environment; a container with an explicit ``command`` (a custom image) runs that
instead, with ``NB_PREFIX`` and ``PORT`` in its environment.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from services.common.hostpath import REFUSAL as HOST_PATH_REFUSAL
from services.common.runtime import SERVICE_LABEL, WorkloadSpec, placement

WORKLOAD_PREFIX = "nb-"
NAME_LABEL = "notebook-name"
GENERATION_LABEL = "notebooks.kubeflow.org/generation"
HOME = "/home/jovyan"
#: Where the server's token is (Jupyter reads it from there; never from its command line).
TOKEN_ENV = "JUPYTER_TOKEN"
# A Notebook's volumes may be any PodSpec volume; the runtime mounts these sources (never
# hostPath: the API refuses it, see services.common.hostpath).
_VOLUME_SOURCES = ("persistentVolumeClaim", "emptyDir")


def workload_name(notebook: str) -> str:
    return WORKLOAD_PREFIX + notebook


def prefix(namespace: str, name: str) -> str:
    """``NB_PREFIX``: where the gateway serves this notebook (no trailing slash, as Kubeflow)."""
    return f"/notebook/{namespace}/{name}"


def jupyter_argv(namespace: str, name: str, root_dir: str) -> list[str]:
    """The Jupyter server the platform's environment provides, behind the gateway.

    It requires its token (``JUPYTER_TOKEN`` in its environment, see :func:`build_workload`)
    and keeps Jupyter's XSRF check: the server must not trust whoever reaches its port, only
    the gateway, which authorizes each request and adds ``Authorization: token ...``
    (services.common.dataplane). The token is never an argument: command lines are readable
    by anyone on the host in ``/proc``. ``allow_origin='*'`` because the browser's Origin is
    the notebook's own origin at the gateway (``gateway.notebook_origin``), never the Host
    Jupyter sees; the gateway itself refuses cross-origin writes and WebSockets there.
    """
    return [
        "python3",
        "-m",
        "jupyter_server",
        "--ServerApp.ip=0.0.0.0",  # the workload's own interfaces; the runtime decides who gets in
        "--ServerApp.port=$(PORT)",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={prefix(namespace, name)}/",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.default_url=/lab",  # JupyterLab, as Kubeflow's notebook images open
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        "--ServerApp.allow_origin=*",
        "--PasswordIdentityProvider.hashed_password=",
    ]


def first_container(notebook: dict[str, Any]) -> dict[str, Any]:
    containers = ((notebook.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or []
    if not containers or not isinstance(containers[0], dict):
        raise ValueError("spec.template.spec.containers: at least one container is required")
    return containers[0]


def claims_of(notebook: dict[str, Any]) -> list[str]:
    """The PersistentVolumeClaims the pod template mounts."""
    pod = ((notebook.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("volumes") or []
        if isinstance(v, dict)
        and isinstance(v.get("persistentVolumeClaim"), dict)
        and v["persistentVolumeClaim"].get("claimName")
    ]


def server_env(
    namespace: str, name: str, container: dict[str, Any], token: str
) -> list[dict[str, str]]:
    """The server's environment: Kubeflow's ``NB_PREFIX``, the user's variables (values only),
    and the Jupyter token last (a user may not set it)."""
    env = [
        {"name": "NB_PREFIX", "value": prefix(namespace, name)},
        # Kernel connection files hold their keys: keep them in the workload's own /tmp,
        # not on the (shared, persistent) workspace volume.
        {"name": "JUPYTER_RUNTIME_DIR", "value": "/tmp/jupyter-runtime"},
    ]
    for i, var in enumerate(container.get("env") or []):
        if not isinstance(var, dict) or "name" not in var:
            raise ValueError(f"spec.template.spec.containers[0].env[{i}]: a name is required")
        if var["name"] == TOKEN_ENV:
            raise ValueError(
                f"spec.template.spec.containers[0].env[{i}].name: {TOKEN_ENV} is set by the "
                "platform (the gateway authenticates to the server with it)"
            )
        if "valueFrom" in var:
            raise ValueError(
                f"spec.template.spec.containers[0].env[{i}].valueFrom: not "
                "supported by the local runtime; use value"
            )
        env.append({"name": var["name"], "value": str(var.get("value", ""))})
    env.append({"name": TOKEN_ENV, "value": token})
    return env


# ---------------------------------------------------------------------- PodDefaults
POD_DEFAULT_ANNOTATION = "poddefault.admission.kubeflow.org/poddefault-"


def pod_labels(notebook: Mapping[str, Any]) -> dict[str, str]:
    """The labels of the notebook's pod, as Kubeflow's controller gives its StatefulSet's pods:
    the pod template's, the Notebook's own (where the spawner puts PodDefault labels), and
    ``statefulset``/``notebook-name``."""
    meta = notebook.get("metadata") or {}
    template = (notebook.get("spec") or {}).get("template") or {}
    labels = {
        str(k): str(v) for k, v in ((template.get("metadata") or {}).get("labels") or {}).items()
    }
    labels.update({str(k): str(v) for k, v in (meta.get("labels") or {}).items()})
    labels.update({"statefulset": str(meta.get("name", "")), NAME_LABEL: str(meta.get("name", ""))})
    return labels


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels and matchExpressions) against ``labels``; an
    empty selector matches every pod, as Kubernetes' ``LabelSelectorAsSelector``."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = [str(v) for v in expr.get("values") or []]
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def matching_pod_defaults(
    notebook: Mapping[str, Any], pod_defaults: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The PodDefaults of the notebook's namespace whose selector matches its pod, by name."""
    labels = pod_labels(notebook)
    ns = (notebook.get("metadata") or {}).get("namespace")
    found = [
        pd
        for pd in pod_defaults
        if (pd.get("metadata") or {}).get("namespace") == ns
        and selector_matches((pd.get("spec") or {}).get("selector"), labels)
    ]
    return sorted(found, key=lambda pd: str(pd["metadata"].get("name", "")))


def _merge_named(into: list[Any], extra: Sequence[Any]) -> None:
    """Add the named items of ``extra`` that ``into`` does not name already (its own win)."""
    names = {item.get("name") for item in into if isinstance(item, dict)}
    for item in extra:
        if isinstance(item, dict) and item.get("name") not in names:
            into.append(copy.deepcopy(item))
            names.add(item.get("name"))


def apply_pod_defaults(
    notebook: dict[str, Any], pod_defaults: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """The notebook with the matching PodDefaults merged into its pod template, as Kubeflow's
    admission webhook merges them into the pod: env, envFrom, volumes, volumeMounts (of the
    first container) and tolerations; and the labels and annotations the pod gets (with
    ``poddefault.admission.kubeflow.org/poddefault-NAME: resourceVersion`` for each).

    What the notebook sets itself wins over a PodDefault (an env var or volume of the same
    name is kept as the notebook has it).
    """
    merged = copy.deepcopy(notebook)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    matches = matching_pod_defaults(notebook, pod_defaults)
    if not matches:
        return merged, labels, annotations
    pod = merged.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    containers = pod.get("containers") or []
    container = containers[0] if containers and isinstance(containers[0], dict) else None
    for pd in matches:
        spec = pd.get("spec") or {}
        if container is not None:
            _merge_named(container.setdefault("env", []), spec.get("env") or [])
            container.setdefault("envFrom", []).extend(copy.deepcopy(spec.get("envFrom") or []))
            mounts = container.setdefault("volumeMounts", [])
            paths = {m.get("mountPath") for m in mounts if isinstance(m, dict)}
            for mount in spec.get("volumeMounts") or []:
                if isinstance(mount, dict) and mount.get("mountPath") not in paths:
                    mounts.append(copy.deepcopy(mount))
                    paths.add(mount.get("mountPath"))
        _merge_named(pod.setdefault("volumes", []), spec.get("volumes") or [])
        pod.setdefault("tolerations", []).extend(copy.deepcopy(spec.get("tolerations") or []))
        labels.update({str(k): str(v) for k, v in (spec.get("labels") or {}).items()})
        annotations.update({str(k): str(v) for k, v in (spec.get("annotations") or {}).items()})
        meta = pd.get("metadata") or {}
        annotations[POD_DEFAULT_ANNOTATION + str(meta.get("name"))] = str(
            meta.get("resourceVersion", "")
        )
    if container is not None and not container.get("envFrom"):
        container.pop("envFrom", None)
    return merged, labels, annotations


def mounted_volumes(
    pod: Mapping[str, Any], container: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The container's mounts and the volumes they use (PVC or emptyDir); ValueError with the
    field path for a volume the runtime cannot mount. An emptyDir at ``/dev/shm`` (the
    spawner form's ``shm``) is passed on: each runtime serves it its own way."""
    mounts = [m for m in container.get("volumeMounts") or [] if isinstance(m, dict)]
    used = {m.get("name") for m in mounts}
    volumes = []
    for i, vol in enumerate(pod.get("volumes") or []):
        if isinstance(vol, dict) and vol.get("hostPath") is not None:
            # Stored before the API refused it: still never mounted.
            raise ValueError(f"spec.template.spec.volumes[{i}].hostPath: {HOST_PATH_REFUSAL}")
        if not isinstance(vol, dict) or vol.get("name") not in used:
            continue  # an unmounted volume needs no backing here
        source = {k: vol[k] for k in _VOLUME_SOURCES if k in vol}
        if not source:
            raise ValueError(
                f"spec.template.spec.volumes[{i}]: only persistentVolumeClaim "
                "and emptyDir volumes can be mounted"
            )
        volumes.append({"name": vol["name"], **source})
    return mounts, volumes


def build_workload(
    notebook: dict[str, Any],
    token: str,
    pod_defaults: Iterable[Mapping[str, Any]] = (),
) -> WorkloadSpec:
    """The server workload for ``notebook``; ValueError (with the field path) if it cannot run.

    ``token`` is the server's Jupyter token (``services.common.dataplane.notebook_token``),
    given to every container as ``JUPYTER_TOKEN``, so a custom Jupyter image uses it too.
    ``pod_defaults`` are the namespace's PodDefaults: those that select the notebook's pod
    are merged in first (:func:`apply_pod_defaults`).
    """
    notebook, pd_labels, _ = apply_pod_defaults(notebook, pod_defaults)
    meta = notebook["metadata"]
    ns, name = meta["namespace"], meta["name"]
    pod = ((notebook.get("spec") or {}).get("template") or {}).get("spec") or {}
    container = first_container(notebook)
    mounts, volumes = mounted_volumes(pod, container)
    working_dir = container.get("workingDir") or HOME
    env = server_env(ns, name, container, token)
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if not command:
        # Kubernetes semantics: args without a command go to the image's entrypoint, which
        # here is the Jupyter server.
        command, args = jupyter_argv(ns, name, working_dir), args
    resources = container.get("resources") or {}
    try:
        return WorkloadSpec.model_validate(
            {
                "kind": "server",
                "namespace": ns,
                "name": workload_name(name),
                "image": container.get("image"),
                "command": command,
                "args": args,
                "env": env,
                "workingDir": working_dir,
                "resources": {
                    "requests": resources.get("requests") or {},
                    "limits": resources.get("limits") or {},
                },
                "volumeMounts": [
                    {k: m[k] for k in ("name", "mountPath", "readOnly", "subPath") if k in m}
                    for m in mounts
                ],
                "volumes": volumes,
                **placement(pod, container),
                "readinessProbe": {
                    # Jupyter's one unauthenticated API (the probe carries no token).
                    "httpGet": {"path": f"{prefix(ns, name)}/api"},
                    "periodSeconds": 5,
                    "failureThreshold": 3,
                },
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": float(
                    pod.get("terminationGracePeriodSeconds") or 5
                ),
                "labels": {
                    **pd_labels,
                    SERVICE_LABEL: "notebook",
                    NAME_LABEL: name,
                    GENERATION_LABEL: str(meta.get("generation", 1)),
                },
                "owner": {
                    "apiVersion": notebook.get("apiVersion", "kubeflow.org/v1"),
                    "kind": "Notebook",
                    "name": name,
                    "uid": meta.get("uid", ""),
                },
            }
        )
    except ValueError as exc:
        raise ValueError(f"spec.template.spec.containers[0]: {exc}") from None
