"""From a Notebook to the runtime workload that serves it (Kubeflow's StatefulSet, locally).

Kubeflow's notebook controller turns the first container of ``spec.template.spec`` into a
one-replica StatefulSet whose image starts Jupyter with ``base_url=$NB_PREFIX``. The local
runtime pulls no image, so the "image's entrypoint" is the Jupyter server of the platform's
own environment; a container with an explicit ``command`` (a custom image) runs that
instead, with ``NB_PREFIX`` and ``PORT`` in its environment.
"""

from __future__ import annotations

from typing import Any

from services.common.app import SERVICE_LABEL
from services.common.runtime import WorkloadSpec

WORKLOAD_PREFIX = "nb-"
NAME_LABEL = "notebook-name"
GENERATION_LABEL = "notebooks.kubeflow.org/generation"
HOME = "/home/jovyan"
# A Notebook's volumes may be any PodSpec volume; the runtime mounts these sources.
_VOLUME_SOURCES = ("persistentVolumeClaim", "emptyDir", "hostPath")


def workload_name(notebook: str) -> str:
    return WORKLOAD_PREFIX + notebook


def prefix(namespace: str, name: str) -> str:
    """``NB_PREFIX``: where the gateway serves this notebook (no trailing slash, as Kubeflow)."""
    return f"/notebook/{namespace}/{name}"


def jupyter_argv(namespace: str, name: str, root_dir: str) -> list[str]:
    """The Jupyter server the platform's environment provides, behind the gateway.

    No token and no password: the server binds loopback only and the gateway, which
    authenticates every request, is the only way in. ``allow_origin='*'`` because the browser's
    Origin is the gateway's, never the loopback Host Jupyter sees; the gateway itself refuses
    cross-site requests and WebSockets for cookie sessions. For the same reason Jupyter's own
    ``_xsrf`` cookie check is off: it would make every API client repeat a check the gateway
    has already made.
    """
    return [
        "python3",
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=$(PORT)",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={prefix(namespace, name)}/",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.default_url=/lab",  # JupyterLab, as Kubeflow's notebook images open
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        "--ServerApp.allow_origin=*",
        "--ServerApp.disable_check_xsrf=True",
        "--IdentityProvider.token=",
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


def build_workload(notebook: dict[str, Any]) -> WorkloadSpec:
    """The server workload for ``notebook``; ValueError (with the field path) if it cannot run."""
    meta = notebook["metadata"]
    ns, name = meta["namespace"], meta["name"]
    pod = ((notebook.get("spec") or {}).get("template") or {}).get("spec") or {}
    container = first_container(notebook)
    mounts = [m for m in container.get("volumeMounts") or [] if isinstance(m, dict)]
    used = {m.get("name") for m in mounts}
    volumes = []
    for i, vol in enumerate(pod.get("volumes") or []):
        if not isinstance(vol, dict) or vol.get("name") not in used:
            continue  # an unmounted volume needs no backing here
        source = {k: vol[k] for k in _VOLUME_SOURCES if k in vol}
        if not source:
            raise ValueError(
                f"spec.template.spec.volumes[{i}]: only persistentVolumeClaim, "
                "emptyDir and hostPath volumes can be mounted by the local runtime"
            )
        volumes.append({"name": vol["name"], **source})
    working_dir = container.get("workingDir") or HOME
    env = [
        {"name": "NB_PREFIX", "value": prefix(ns, name)},
        # Kernel connection files hold their keys: keep them in the workload's own /tmp,
        # not on the (shared, persistent) workspace volume.
        {"name": "JUPYTER_RUNTIME_DIR", "value": "/tmp/jupyter-runtime"},
    ]
    for i, var in enumerate(container.get("env") or []):
        if not isinstance(var, dict) or "name" not in var:
            raise ValueError(f"spec.template.spec.containers[0].env[{i}]: a name is required")
        if "valueFrom" in var:
            raise ValueError(
                f"spec.template.spec.containers[0].env[{i}].valueFrom: not "
                "supported by the local runtime; use value"
            )
        env.append({"name": var["name"], "value": str(var.get("value", ""))})
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
                "readinessProbe": {
                    "httpGet": {"path": f"{prefix(ns, name)}/api/status"},
                    "periodSeconds": 5,
                    "failureThreshold": 3,
                },
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": float(
                    pod.get("terminationGracePeriodSeconds") or 5
                ),
                "labels": {
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
