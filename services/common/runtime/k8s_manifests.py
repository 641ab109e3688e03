"""The Kubernetes objects a workload becomes, as pure functions from a spec to plain dicts.

Nothing here talks to the API, so every manifest can be checked against the Kubernetes
schemas on its own (tests validate them with kubernetes-validate). What a workload becomes:

* a **Pod** (``restartPolicy`` Never or OnFailure for a job, Always for a server unless the
  spec says otherwise) with Pod Security "restricted" (non-root uid, no privilege escalation,
  every capability dropped, the runtime's default seccomp profile), no service-account token
  automounted and, in its place, a projected token for the audience of the platform, short
  lived, in the standard layout (token, namespace, ca.crt);
* a **Service** for a server, selecting its pod, reached at ``http://<svc>.<ns>.svc:<port>``;
* a **Secret** ``<workload>-files`` when the spec has ``files``, one secret volume per
  directory (a directory of files is replaced by that read-only volume, as any secret
  volume does: put files in a directory of their own);
* **PersistentVolumeClaims** for volumes.

A spec's ``initContainers`` become the pod's, in order, each with the main container's
mounts (``files`` included), environment, resources and security context, and its own
command, args, image (default: the workload's) and extra env.

Every object carries :data:`MANAGED_LABELS` (the Helm chart's NetworkPolicy and RBAC rely on
``app.kubernetes.io/managed-by: shipyard``) plus ``shipyard.io/workload``. What the spec
said that a Pod cannot hold as such (its own labels apart from ours, its owner, the image it
asked for) rides in the ``shipyard.io/workload`` annotation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import MAIN_CONTAINER, Probe, WorkloadSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_LABELS: Mapping[str, str] = {MANAGED_BY: "shipyard"}
#: The selector of everything this runtime made.
MANAGED_SELECTOR = f"{MANAGED_BY}=shipyard"
WORKLOAD_LABEL = "shipyard.io/workload"
#: The workload network (``WorkloadSpec.network.group``) a pod belongs to.
NETWORK_LABEL = "shipyard.io/network"
KIND_LABEL = "shipyard.io/kind"
#: Pods that are not workloads (the readers of ``read_file``) say what they are here.
ROLE_LABEL = "shipyard.io/role"
READER_ROLE = "volume-reader"
#: JSON: the spec's kind, image, labels and owner, the Service's name and port.
WORKLOAD_ANNOTATION = "shipyard.io/workload"
#: A workload that cannot start (an unknown claim, a host path) is a Pod held back by this
#: scheduling gate, with the reason and message in the two annotations below: it is listed,
#: it says why, and it never runs, even if the claim appears later.
NOT_RUNNABLE_GATE = "shipyard.io/not-runnable"
FAILED_REASON_ANNOTATION = "shipyard.io/failed-reason"
FAILED_MESSAGE_ANNOTATION = "shipyard.io/failed-message"
#: Set by stop_all: the pod was ended by the platform (its deadline brought forward).
STOPPED_ANNOTATION = "shipyard.io/stopped"
#: Set when a job restarted (OnFailure) more than its backoffLimit: ended the same way. A
#: bare Pod has no backoffLimit (a batch Job's), so the runtime keeps count of restarts.
BACKOFF_ANNOTATION = "shipyard.io/backoff-limit-exceeded"
CONTAINER = MAIN_CONTAINER
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = "shipyard-identity"
FILES_VOLUME_PREFIX = "shipyard-files-"
#: The port a server listens on unless it declares a containerPort (as locally).
DEFAULT_SERVER_PORT = 8080
#: Kubernetes' minimum for a projected token's lifetime.
TOKEN_EXPIRATION_SECONDS = 600
READER_MOUNT = "/shipyard-volume"

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY_BAD = re.compile(r"[^-._a-zA-Z0-9]")


@dataclass(frozen=True)
class PodOptions:
    """What the runtime adds to every pod (from its settings)."""

    platform_image: str
    run_as_user: int = 1000
    run_as_group: int = 1000
    token_audience: str = "shipyard"
    service_account: str = "default-editor"
    #: Platform variables every workload gets (the gateway's URL), before its own env.
    platform_env: Mapping[str, str] = field(default_factory=dict)


def _short(value: str, limit: int) -> str:
    """``value`` if it fits in ``limit`` characters, else a prefix plus a hash of it."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return f"{value[: limit - 11].rstrip('-.')}-{digest}"


def label_value(name: str) -> str:
    """A workload name as a label value (at most 63 characters)."""
    return _short(name, 63)


def service_name(name: str) -> str:
    """The Service of a server: its own name when that is a DNS-1035 label, else derived."""
    if len(name) <= 63 and _DNS_1035.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    stem = re.sub(r"[^-a-z0-9]", "-", name)[:40].strip("-")
    return f"svc-{stem}-{digest}" if stem else f"svc-{digest}"


def files_secret_name(name: str) -> str:
    return _short(f"{name}-files", 253)


def server_port(spec: WorkloadSpec) -> int:
    for port in spec.ports:
        if port.container_port:
            return int(port.container_port)
    return DEFAULT_SERVER_PORT


def check_labels(labels: Mapping[str, str], field: str = "labels") -> None:
    """Kubernetes' rules for label keys and values; ValueError naming the label."""
    for key, value in labels.items():
        prefix, slash, name = key.rpartition("/")
        if (
            not name
            or (slash and not prefix)
            or len(name) > 63
            or not _LABEL_NAME.match(name)
            or (prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)))
        ):
            raise ValueError(f"{field}[{key!r}]: not a valid Kubernetes label key")
        if len(value) > 63 or not _LABEL_NAME.match(value):
            raise ValueError(
                f"{field}[{key!r}]: {value!r} is not a valid Kubernetes label value "
                "(at most 63 letters, digits, '-', '_' or '.', starting and ending with one "
                "letter or digit)"
            )


def workload_labels(spec: WorkloadSpec) -> dict[str, str]:
    """The spec's labels plus ours (ours win: the runtime finds its objects by them)."""
    check_labels(spec.labels)
    labels = {
        **spec.labels,
        **MANAGED_LABELS,
        WORKLOAD_LABEL: label_value(spec.name),
        KIND_LABEL: spec.kind,
    }
    if spec.network is not None:
        labels[NETWORK_LABEL] = label_value(spec.network.group)
    return labels


def owner_reference(pod: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to a Pod (for its Service and Secret: they go when it goes)."""
    meta = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": meta["name"],
        "uid": meta["uid"],
        "blockOwnerDeletion": False,
        "controller": False,
    }


def _seconds(value: float, minimum: int = 0) -> int:
    """Kubernetes takes whole seconds: round up, never below ``minimum``."""
    return max(minimum, math.ceil(value))


def _quantities(values: Mapping[str, str | int | float]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


def secret_key(path: str) -> str:
    """A Secret data key for a file path: readable, valid, and unique per path."""
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    base = _SECRET_KEY_BAD.sub("_", path.rsplit("/", 1)[-1])[:200] or "file"
    return f"{digest}-{base}"


def files_by_directory(files: Mapping[str, str]) -> dict[str, list[str]]:
    """Paths grouped by their parent directory, both sorted."""
    groups: dict[str, list[str]] = {}
    for path in sorted(files):
        parent = path.rsplit("/", 1)[0] or "/"
        groups.setdefault(parent, []).append(path)
    return groups


def _probe(probe: Probe | None, port: int) -> dict[str, Any]:
    """The readiness probe: the spec's httpGet on the server's port, else a TCP connect."""
    if probe is None:
        return {"tcpSocket": {"port": port}, "periodSeconds": 2, "timeoutSeconds": 1}
    action: dict[str, Any]
    if probe.http_get is not None:
        action = {
            "httpGet": {
                "path": probe.http_get.path,
                "port": probe.http_get.port or port,
                "scheme": probe.http_get.scheme.upper(),
            }
        }
    else:
        action = {"tcpSocket": {"port": port}}
    return {
        **action,
        "initialDelaySeconds": _seconds(probe.initial_delay_seconds),
        "periodSeconds": _seconds(probe.period_seconds, 1),
        "timeoutSeconds": _seconds(probe.timeout_seconds, 1),
        "failureThreshold": max(1, probe.failure_threshold),
    }


def _env(spec: WorkloadSpec, opts: PodOptions) -> list[dict[str, Any]]:
    """Platform variables first, so the spec's own may refer to them with ``$(VAR)``."""
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1", "SHIPYARD_NAMESPACE": spec.namespace}
    if spec.kind == "server":
        env["PORT"] = str(server_port(spec))
    env.update(opts.platform_env)
    env["SHIPYARD_TOKEN_FILE"] = f"{TOKEN_DIR}/token"
    own = [{"name": e.name, "value": e.value} for e in spec.env]
    names = {e.name for e in spec.env}
    return [{"name": k, "value": v} for k, v in env.items() if k not in names] + own


def _identity_volume(opts: PodOptions) -> dict[str, Any]:
    """The in-cluster layout, with a token for the platform's audience only."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": opts.token_audience,
                        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                        "path": "token",
                    }
                },
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        "optional": True,
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


def _files_volumes(spec: WorkloadSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One secret volume per directory of ``files``, mounted read-only there."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    secret = files_secret_name(spec.name)
    for i, (directory, paths) in enumerate(files_by_directory(spec.files).items()):
        name = f"{FILES_VOLUME_PREFIX}{i}"
        items = [{"key": secret_key(p), "path": p.rsplit("/", 1)[1], "mode": 0o444} for p in paths]
        volumes.append(
            {"name": name, "secret": {"secretName": secret, "items": items, "defaultMode": 0o444}}
        )
        mounts.append({"name": name, "mountPath": directory, "readOnly": True})
    return volumes, mounts


def _spec_volumes(spec: WorkloadSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = []
    for vol in spec.volumes:
        if vol.persistent_volume_claim is not None:
            claim = vol.persistent_volume_claim
            source: dict[str, Any] = {
                "persistentVolumeClaim": {
                    "claimName": claim.claim_name,
                    "readOnly": claim.read_only,
                }
            }
        elif vol.empty_dir is not None:
            source = {"emptyDir": dict(vol.empty_dir)}
        else:
            continue  # a hostPath never reaches a pod: apply refuses it first
        volumes.append({"name": vol.name, **source})
    return volumes


def _container(
    spec: WorkloadSpec, opts: PodOptions, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image or opts.platform_image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(spec, opts),
        "volumeMounts": mounts,
        # On an error exit, the end of the output becomes the termination message: the
        # runtime shows it in the status as the local runtime does.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    # Kubernetes expands $(VAR) in command and args itself: passed through unexpanded.
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env_from:
        container["envFrom"] = [dict(e) for e in spec.env_from]
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    resources = {
        key: _quantities(values)
        for key, values in (
            ("requests", spec.resources.requests),
            ("limits", spec.resources.limits),
        )
        if values
    }
    if resources:
        container["resources"] = resources
    if spec.kind == "server":
        port = server_port(spec)
        ports = [
            {
                "containerPort": int(p.container_port),
                "protocol": p.protocol,
                **({"name": p.name} if p.name else {}),
            }
            for p in spec.ports
            if p.container_port
        ]
        container["ports"] = ports or [{"containerPort": port, "name": "http", "protocol": "TCP"}]
        container["readinessProbe"] = _probe(spec.readiness_probe, port)
    return container


def _init_containers(spec: WorkloadSpec, main: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's init steps as init containers: the main container's mounts, environment,
    resources and security, with the step's own command, args, image and extra env."""
    shared: dict[str, Any] = {
        k: main[k] for k in ("volumeMounts", "resources", "workingDir") if k in main
    }
    steps = []
    for step in spec.init_containers:
        names = {e.name for e in step.env}
        env = [e for e in main["env"] if e["name"] not in names]
        container: dict[str, Any] = {
            "name": step.name,
            "image": step.image or main["image"],
            "imagePullPolicy": "IfNotPresent",
            "env": env + [{"name": e.name, "value": e.value} for e in step.env],
            **shared,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": dict(main["securityContext"]),
        }
        if step.command:
            container["command"] = list(step.command)
        if step.args:
            container["args"] = list(step.args)
        if "envFrom" in main:
            container["envFrom"] = main["envFrom"]
        steps.append(container)
    return steps


def _locked_down_pod(opts: PodOptions, **security: Any) -> dict[str, Any]:
    """The pod-level fields every pod of the runtime has (a workload's or a reader's): the
    workloads' service account with no token mounted, no Service links, and a non-root user
    under the default seccomp profile; ``security`` adds to the pod's securityContext."""
    return {
        "serviceAccountName": opts.service_account,
        "automountServiceAccountToken": False,
        # Service links would put every Service of the namespace in the environment.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": opts.run_as_user,
            "runAsGroup": opts.run_as_group,
            **security,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def pod_manifest(
    spec: WorkloadSpec, opts: PodOptions, failure: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The Pod of a workload. ``failure`` (reason, message): a pod that must never run."""
    files_volumes, files_mounts = _files_volumes(spec)
    mounts: list[dict[str, Any]] = [
        {
            "name": m.name,
            "mountPath": m.mount_path,
            "readOnly": m.read_only,
            **({"subPath": m.sub_path} if m.sub_path else {}),
        }
        for m in spec.volume_mounts
    ]
    mounts += files_mounts
    mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
    annotations = {WORKLOAD_ANNOTATION: json.dumps(_workload_record(spec), sort_keys=True)}
    main = _container(spec, opts, mounts)
    pod_spec: dict[str, Any] = {
        "restartPolicy": spec.effective_restart_policy,
        "terminationGracePeriodSeconds": _seconds(spec.termination_grace_period_seconds),
        **_locked_down_pod(opts, fsGroup=opts.run_as_group),
        "containers": [main],
        "volumes": [*_spec_volumes(spec), *files_volumes, _identity_volume(opts)],
    }
    if spec.init_containers:
        pod_spec["initContainers"] = _init_containers(spec, main)
    if spec.active_deadline_seconds is not None:
        pod_spec["activeDeadlineSeconds"] = _seconds(spec.active_deadline_seconds, 1)
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.affinity:
        pod_spec["affinity"] = dict(spec.affinity)
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [dict(s) for s in spec.image_pull_secrets]
    if failure is not None:
        pod_spec["schedulingGates"] = [{"name": NOT_RUNNABLE_GATE}]
        annotations[FAILED_REASON_ANNOTATION] = failure[0]
        annotations[FAILED_MESSAGE_ANNOTATION] = failure[1]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": workload_labels(spec),
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


def _workload_record(spec: WorkloadSpec) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": spec.kind,
        "image": spec.image,
        "labels": spec.labels,
        "owner": spec.owner,
    }
    if spec.kind == "server":
        record["service"] = service_name(spec.name)
        record["port"] = server_port(spec)
    if spec.kind == "job" and spec.backoff_limit is not None:
        record["backoffLimit"] = spec.backoff_limit
    return record


def workload_record(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`pod_manifest` recorded of the spec (empty for a pod not made by us)."""
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(WORKLOAD_ANNOTATION)
    try:
        record = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def service_manifest(spec: WorkloadSpec, pod: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Service of a server; owned by its pod when ``pod`` (as created) is given."""
    port = server_port(spec)
    metadata: dict[str, Any] = {
        "name": service_name(spec.name),
        "namespace": spec.namespace,
        "labels": workload_labels(spec),
    }
    if pod is not None and pod.get("metadata", {}).get("uid"):
        metadata["ownerReferences"] = [owner_reference(pod)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": {**MANAGED_LABELS, WORKLOAD_LABEL: label_value(spec.name)},
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


def network_service_manifest(
    spec: WorkloadSpec, pod: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The headless Service that makes a grouped workload's ``network.hostname`` resolve to
    its pod, as the Training Operator makes one per replica (``<job>-master-0``); None when
    the workload has no hostname. Ready or not, its address is published: ranks rendezvous
    before anything is ready."""
    if spec.network is None or not spec.network.hostname:
        return None
    metadata: dict[str, Any] = {
        "name": spec.network.hostname,
        "namespace": spec.namespace,
        "labels": workload_labels(spec),
    }
    if pod is not None and pod.get("metadata", {}).get("uid"):
        metadata["ownerReferences"] = [owner_reference(pod)]
    ports = [
        {
            "name": p.name or f"port-{p.container_port}",
            "port": p.container_port,
            "protocol": p.protocol,
        }
        for p in spec.ports
        if p.container_port
    ]
    service: dict[str, Any] = {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {**MANAGED_LABELS, WORKLOAD_LABEL: label_value(spec.name)},
    }
    if ports:
        service["ports"] = ports
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": service}


def network_policy_name(group: str) -> str:
    return _short(f"shipyard-network-{group}", 253)


def network_policy_manifest(spec: WorkloadSpec) -> dict[str, Any] | None:
    """Ingress between the pods of one workload network: the profile's policy lets only the
    gateway in (k8s_profile.py), and a group's members must reach each other on any port
    (gloo picks its ports at run time). Owned by the group's pods; None outside a group."""
    if spec.network is None:
        return None
    members = {**MANAGED_LABELS, NETWORK_LABEL: label_value(spec.network.group)}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(spec.network.group),
            "namespace": spec.namespace,
            "labels": {**MANAGED_LABELS},
        },
        "spec": {
            "podSelector": {"matchLabels": members},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": members}}]}],
        },
    }


def files_secret_manifest(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": files_secret_name(spec.name),
            "namespace": spec.namespace,
            "labels": workload_labels(spec),
        },
        "data": {
            secret_key(path): base64.b64encode(text.encode()).decode()
            for path, text in sorted(spec.files.items())
        },
    }


def pvc_manifest(
    namespace: str,
    name: str,
    size: str,
    labels: Mapping[str, str] | None,
    storage_class: str | None,
) -> dict[str, Any]:
    check_labels(labels or {})
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**(labels or {}), **MANAGED_LABELS},
        },
        "spec": spec,
    }


#: Runs in the reader pod: prints one file of the volume, base64-encoded between markers.
#: Each path component is opened with O_NOFOLLOW, so a link a workload planted in the
#: volume leads nowhere; only a regular file is read, and never more than the limit + 1.
READER_SCRIPT = r"""
import base64, errno, os, stat, sys
root, rel, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
def say(*words):
    sys.stdout.write(" ".join(["SHIPYARD-READ", *words]) + "\n")
parts = [p for p in rel.split("/") if p not in ("", ".")]
flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
try:
    fd = os.open(root, flags | os.O_DIRECTORY)
    for part in parts[:-1]:
        nxt = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    ffd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    if not stat.S_ISREG(os.fstat(ffd).st_mode):
        say("ERR", "notfound", "not a regular file")
        sys.exit(0)
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(ffd, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        say("ERR", "toolarge", str(limit))
        sys.exit(0)
    say("OK", str(size))
    sys.stdout.write(base64.encodebytes(b"".join(chunks)).decode())
    say("END")
except OSError as exc:
    lost = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
    say("ERR", "notfound" if exc.errno in lost else "error", exc.strerror or "")
"""


def reader_pod_manifest(
    namespace: str, pod_name: str, claim: str, path: str, max_bytes: int, opts: PodOptions
) -> dict[str, Any]:
    """A short-lived pod that prints one file of ``claim`` (see READER_SCRIPT)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "labels": {**MANAGED_LABELS, ROLE_LABEL: READER_ROLE},
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 300,
            "terminationGracePeriodSeconds": 0,
            **_locked_down_pod(opts),
            "containers": [
                {
                    "name": CONTAINER,
                    "image": opts.platform_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-I", "-c", READER_SCRIPT],
                    "args": [READER_MOUNT, path, str(max_bytes)],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "volumeMounts": [{"name": "data", "mountPath": READER_MOUNT, "readOnly": True}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True,
                        "readOnlyRootFilesystem": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            ],
        },
    }
