"""The spawner form of the Jupyter web app: a form body to a Notebook and its new PVCs.

What Kubeflow's ``POST /api/namespaces/{ns}/notebooks`` does (crud-web-apps/jupyter: the
notebook template, ``form.py``'s setters and ``volumes.py``), checked field by field: every
refusal is a :class:`~services.common.errors.ApiError` with the form field's path as its
cause (``cpu``, ``workspace.newPvc.spec``, ``datavols[1].mount``), so a UI can show it in place.

Where a field is missing the spawner configuration's value is used (Kubeflow answers 400; its
UI always sends every field), and a ``readOnly`` field of the configuration takes the
configured value and refuses a form that sends another, as Kubeflow's ``get_form_value``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import ApiError, Cause
from services.common.resources.names import check_labels, check_name
from services.common.runtime.quantity import parse_quantity

SERVER_TYPE_ANNOTATION = "notebooks.kubeflow.org/server-type"
CREATOR_ANNOTATION = "notebooks.kubeflow.org/creator"
HEADERS_ANNOTATION = "notebooks.kubeflow.org/http-headers-request-set"
URI_REWRITE_ANNOTATION = "notebooks.kubeflow.org/http-rewrite-uri"
SERVER_TYPES = ("jupyter", "group-one", "group-two")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")
_MISSING = object()


def bad(path: str, message: str, code: int = 400) -> ApiError:
    """The form's error for ``path``: its message names the field, its cause carries it."""
    return ApiError(code, f"{path}: {message}", causes=[Cause(path, message)])


@dataclass
class Form:
    """The form body with the configuration's defaults; ``value`` reads one field."""

    body: dict[str, Any]
    defaults: dict[str, Any]

    def value(self, name: str, config_name: str | None = None) -> Any:
        entry = self.defaults.get(config_name or name)
        given = self.body.get(name, _MISSING)
        if not isinstance(entry, dict) or "value" not in entry:
            return None if given is _MISSING else given
        if entry.get("readOnly"):
            if given is not _MISSING and given != entry["value"]:
                raise bad(name, f"is read-only (the configuration sets {entry['value']!r})")
            return copy.deepcopy(entry["value"])
        return copy.deepcopy(entry["value"]) if given is _MISSING else given


@dataclass
class Spawn:
    """What a form makes: the Notebook and the PVCs to create first."""

    notebook: dict[str, Any]
    pvcs: list[dict[str, Any]] = field(default_factory=list)


def notebook_template(name: str, namespace: str, creator: str) -> dict[str, Any]:
    """Kubeflow's ``notebook_template.yaml`` (as kubeflow.org/v1)."""
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Notebook",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
            "annotations": {SERVER_TYPE_ANNOTATION: "", CREATOR_ANNOTATION: creator},
        },
        "spec": {
            "template": {
                "spec": {
                    "serviceAccountName": "default-editor",
                    "containers": [
                        {
                            "name": name,
                            "image": "",
                            "volumeMounts": [],
                            "env": [],
                            "resources": {"requests": {"cpu": "0.1", "memory": "0.1Gi"}},
                        }
                    ],
                    "volumes": [],
                    "tolerations": [],
                }
            }
        },
    }


def spawn(body: Any, namespace: str, creator: str, defaults: dict[str, Any]) -> Spawn:
    """The Notebook (and new PVCs) the form ``body`` asks for; ApiError 400 naming the field."""
    if not isinstance(body, dict):
        raise bad("body", "the form must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise bad("name", "Required value: the notebook server's name")
    causes = check_name(name, "name")
    if causes:
        raise ApiError(400, f"name: {causes[0].message}", causes=causes)
    form = Form(body, defaults)
    nb = notebook_template(name, namespace, creator)
    set_image(nb, form)
    set_resources(nb, form)
    set_gpus(nb, form)
    set_placement(nb, form)
    set_configurations(nb, form)
    set_shm(nb, form)
    set_environment(nb, form)
    result = Spawn(nb)
    volumes: list[tuple[str, Any]] = []
    if "workspace" in body and body["workspace"] is None:
        pass  # explicitly no workspace volume
    else:
        workspace = form.value("workspace", "workspaceVolume")
        if workspace:
            volumes.append(("workspace", workspace))
    datavols = form.value("datavols", "dataVolumes") or []
    if not isinstance(datavols, list):
        raise bad("datavols", "must be a list of volumes")
    volumes += [(f"datavols[{i}]", v) for i, v in enumerate(datavols)]
    for path, vol in volumes:
        add_volume(result, path, vol, name)
    return result


def set_image(nb: dict[str, Any], form: Form) -> None:
    container = nb["spec"]["template"]["spec"]["containers"][0]
    server_type = form.value("serverType") or "jupyter"
    if server_type not in SERVER_TYPES:
        raise bad("serverType", f"must be one of {', '.join(SERVER_TYPES)}, not {server_type!r}")
    config_key = {"jupyter": "image", "group-one": "imageGroupOne", "group-two": "imageGroupTwo"}
    custom = form.body.get("customImage")
    if custom:
        if not form.defaults.get("allowCustomImage", True):
            raise bad("customImage", "custom images are not allowed by the configuration")
        if (form.defaults.get(config_key[server_type]) or {}).get("readOnly"):
            raise bad("customImage", "the image is read-only in the configuration")
        image = custom
        path = "customImage"
    else:
        image = form.value("image", config_key[server_type])
        path = "image"
    if not isinstance(image, str) or not image.strip():
        raise bad(path, "Required value: an image name")
    container["image"] = image.strip()
    policy = form.value("imagePullPolicy") or "IfNotPresent"
    if policy not in PULL_POLICIES:
        raise bad("imagePullPolicy", f"must be one of {', '.join(PULL_POLICIES)}")
    container["imagePullPolicy"] = policy
    meta = nb["metadata"]
    meta["annotations"][SERVER_TYPE_ANNOTATION] = server_type
    if server_type in ("group-one", "group-two"):
        meta["annotations"][URI_REWRITE_ANNOTATION] = "/"
    if server_type == "group-two":
        prefix = f"/notebook/{meta['namespace']}/{meta['name']}/"
        meta["annotations"][HEADERS_ANNOTATION] = json.dumps({"X-RStudio-Root-Path": prefix})


def _quantity(value: Any, path: str) -> tuple[str, float]:
    """A form quantity as text and its value; 400 naming ``path`` when it is none."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise bad(path, f"{value!r} is not a quantity (e.g. 0.5, 500m, 1Gi)")
    try:
        amount = parse_quantity(value.strip(), path)
    except ValueError:
        raise bad(path, f"{value!r} is not a quantity (e.g. 0.5, 500m, 1Gi)") from None
    if amount != amount or amount <= 0:  # NaN, zero or negative
        raise bad(path, f"{value!r} must be a positive quantity")
    return value.strip(), amount


def _scaled(text: str, amount: float, factor: float) -> str:
    """The request times ``factor``: in the request's own unit, rounded to 0.1 as Kubeflow
    does (``1.0Gi`` * 1.2 = ``1.2Gi``), or as a plain number when the request is written
    with an exponent."""
    m = _NUMBER.match(text)
    if m:
        number = float(m.group(1))
        rounded = round(number * factor, 1)
        # Rounding must not bring the limit under a small request (0.01 CPU * 1.2 is not 0).
        return f"{rounded if rounded >= number else f'{number * factor:g}'}{m.group(2)}"
    return f"{amount * factor:g}"


def _set_resource(nb: dict[str, Any], form: Form, resource: str) -> None:
    container = nb["spec"]["template"]["spec"]["containers"][0]
    limit_field = resource + "Limit"
    request, amount = _quantity(form.value(resource), resource)
    container["resources"]["requests"][resource] = request
    limit = form.body.get(limit_field)
    factor = str((form.defaults.get(resource) or {}).get("limitFactor", "none"))
    if limit in (None, ""):
        if factor == "none":
            return  # no limit, as the configuration says
        try:
            scale = float(factor)
        except ValueError:
            raise ApiError(
                500, f"the spawner configuration's {resource}.limitFactor {factor!r} is no number"
            ) from None
        limit = _scaled(request, amount, scale)
    limit, limit_amount = _quantity(limit, limit_field)
    if limit_amount < amount:
        raise bad(limit_field, f"the limit {limit} is less than the request {request}")
    container["resources"].setdefault("limits", {})[resource] = limit


def set_resources(nb: dict[str, Any], form: Form) -> None:
    _set_resource(nb, form, "cpu")
    _set_resource(nb, form, "memory")


def set_gpus(nb: dict[str, Any], form: Form) -> None:
    gpus = form.value("gpus")
    if gpus in (None, {}):
        return
    if not isinstance(gpus, dict) or "num" not in gpus:
        raise bad("gpus", 'must be {"num": "none" | N, "vendor": LIMITS_KEY}')
    if gpus["num"] in ("none", None, ""):
        return
    try:
        num = int(gpus["num"])
    except (TypeError, ValueError):
        num = 0
    if num <= 0:
        raise bad("gpus.num", f"{gpus['num']!r} is not a positive number of GPUs")
    vendors = [
        v.get("limitsKey")
        for v in (form.defaults.get("gpus") or {}).get("value", {}).get("vendors", [])
        if isinstance(v, dict)
    ]
    vendor = gpus.get("vendor")
    if vendor not in vendors:
        raise bad("gpus.vendor", f"{vendor!r} is not one of the configured vendors {vendors}")
    container = nb["spec"]["template"]["spec"]["containers"][0]
    container["resources"].setdefault("limits", {})[vendor] = str(num)


def _option(form: Form, name: str, key: str) -> dict[str, Any] | None:
    """The configuration's option of ``name`` (tolerationGroup, affinityConfig) the form picks."""
    picked = form.value(name)
    if picked in (None, "", "none"):
        return None
    options = (form.defaults.get(name) or {}).get("options") or []
    for option in options:
        if isinstance(option, dict) and option.get(key) == picked:
            return option
    known = [o.get(key) for o in options if isinstance(o, dict)]
    raise bad(name, f"{picked!r} is not one of the configured options {known}")


def set_placement(nb: dict[str, Any], form: Form) -> None:
    pod = nb["spec"]["template"]["spec"]
    group = _option(form, "tolerationGroup", "groupKey")
    if group is not None:
        pod["tolerations"].extend(copy.deepcopy(group.get("tolerations") or []))
    affinity = _option(form, "affinityConfig", "configKey")
    if affinity is not None:
        pod["affinity"] = copy.deepcopy(affinity.get("affinity") or {})


def set_configurations(nb: dict[str, Any], form: Form) -> None:
    """The PodDefaults picked: their selector labels, set to "true" on the Notebook."""
    labels = form.value("configurations") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise bad("configurations", "must be a list of PodDefault labels")
    picked = {label: "true" for label in labels}
    causes = check_labels(picked, "configurations")
    if causes:
        raise ApiError(400, f"configurations: {causes[0].message}", causes=causes)
    nb["metadata"]["labels"].update(picked)


def set_shm(nb: dict[str, Any], form: Form) -> None:
    if not form.value("shm"):
        return
    pod = nb["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    pod["containers"][0]["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})


def set_environment(nb: dict[str, Any], form: Form) -> None:
    env = form.value("environment") or {}
    if isinstance(env, str):  # Kubeflow's UI sends it as a JSON text
        try:
            env = json.loads(env) if env.strip() else {}
        except json.JSONDecodeError as exc:
            raise bad("environment", f"is not a JSON object: {exc}") from None
    if not isinstance(env, dict):
        raise bad("environment", 'must be an object of variables, e.g. {"A": "1"}')
    container = nb["spec"]["template"]["spec"]["containers"][0]
    container["env"] += [{"name": str(k), "value": str(v)} for k, v in env.items()]


def add_volume(result: Spawn, path: str, vol: Any, notebook: str) -> None:
    """One form volume (``{mount, newPvc | existingSource}``) into the pod and the PVCs."""
    if not isinstance(vol, dict):
        raise bad(path, "must be an object with mount and newPvc or existingSource")
    mount = vol.get("mount")
    if not isinstance(mount, str) or not mount.startswith("/"):
        raise bad(f"{path}.mount", "Required value: an absolute mount path")
    if ("newPvc" in vol) == ("existingSource" in vol):
        raise bad(path, "needs exactly one of newPvc and existingSource")
    if "newPvc" in vol:
        claim = new_pvc(result, f"{path}.newPvc", vol["newPvc"], notebook)
        source: dict[str, Any] = {"persistentVolumeClaim": {"claimName": claim}}
        volume_name = claim
    else:
        source = vol["existingSource"]
        pvc = source.get("persistentVolumeClaim") if isinstance(source, dict) else None
        if not isinstance(pvc, dict) or set(source) != {"persistentVolumeClaim"}:
            raise bad(
                f"{path}.existingSource",
                "only a persistentVolumeClaim can be mounted here (the runtime mounts "
                "PersistentVolumeClaims and emptyDir volumes)",
            )
        claim_name = pvc.get("claimName")
        if not isinstance(claim_name, str) or check_name(claim_name):
            raise bad(
                f"{path}.existingSource.persistentVolumeClaim.claimName",
                f"Required value: the name of a PVC of the namespace, not {claim_name!r}",
            )
        volume_name = claim_name
        source = copy.deepcopy(source)
    pod = result.notebook["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if any(m.get("mountPath") == mount for m in container["volumeMounts"]):
        raise bad(f"{path}.mount", f"{mount} is already mounted by another volume")
    if any(v.get("name") == volume_name for v in pod["volumes"]):
        raise bad(path, f"the volume {volume_name} is mounted twice")
    pod["volumes"].append({"name": volume_name, **source})
    container["volumeMounts"].append({"name": volume_name, "mountPath": mount})


def new_pvc(result: Spawn, path: str, spec: Any, notebook: str) -> str:
    """Record the PVC a ``newPvc`` asks for; its name (``{notebook-name}`` filled in)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("metadata"), dict):
        raise bad(path, "must be a PersistentVolumeClaim with metadata.name")
    pvc = copy.deepcopy(spec)
    meta = pvc["metadata"]
    if meta.get("namespace") is not None:
        raise bad(f"{path}.metadata.namespace", "a new PVC takes the notebook's namespace")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"{path}.metadata.name", "Required value")
    name = name.replace("{notebook-name}", notebook)
    causes = check_name(name, f"{path}.metadata.name")
    if causes:
        raise ApiError(400, f"{causes[0].field}: {causes[0].message}", causes=causes)
    if any(p["metadata"]["name"] == name for p in result.pvcs):
        raise bad(f"{path}.metadata.name", f"the PVC {name} is asked for twice")
    meta["name"] = name
    pvc.update(apiVersion="v1", kind="PersistentVolumeClaim")
    result.pvcs.append(pvc)
    return name
