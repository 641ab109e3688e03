"""ConfigMaps: the kind's admission, and Katib trial templates read from them.

An Experiment may keep its trial Job in a ConfigMap (``trialTemplate.configMap``:
``configMapName``, ``configMapNamespace``, ``templatePath``, the key whose value is the Job's
YAML). As Katib's admission webhook does, creating (or changing the template of) such an
experiment reads the ConfigMap and checks the Job there, so a missing ConfigMap, key or a bad
Job is a 422 with the field path rather than a failed trial later. As Katib's controller does,
the template is read again for every new trial, so editing the ConfigMap changes the
trials that follow. Reads stay inside the experiment's namespace.
"""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from services.automl.models import CONFIG_MAP
from services.automl.template import TemplateError
from services.automl.validation import check_trial_spec
from services.common import safe_yaml
from services.common.errors import ApiError, Cause
from services.common.resources import ResourceStore

SOURCE = "spec.trialTemplate.configMap"


class TemplateSourceError(TemplateError):
    """The ConfigMap source is unusable; ``field`` is the configMap field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


async def trial_template(
    store: ResourceStore, session: AsyncSession, experiment: dict[str, Any]
) -> dict[str, Any]:
    """The experiment's ``trialTemplate`` with its Job inline (``trialSpec``).

    Raises TemplateSourceError (its message says what is missing) when the ConfigMap or its
    key is unusable.
    """
    template = experiment["spec"]["trialTemplate"]
    source = template.get("configMap")
    if not source:
        return template  # type: ignore[no-any-return]
    namespace = experiment["metadata"]["namespace"]
    cm_namespace = source.get("configMapNamespace") or namespace
    name, key = source.get("configMapName"), source.get("templatePath")
    if cm_namespace != namespace:
        raise TemplateSourceError(
            "configMapNamespace",
            f"configMapNamespace {cm_namespace!r} is not the experiment's namespace "
            f"{namespace!r}: a trial template is read from the experiment's own namespace; "
            "copy the ConfigMap there",
        )
    config_map = await store.find(CONFIG_MAP, namespace, name, session=session)
    if config_map is None:
        raise TemplateSourceError(
            "configMapName",
            f"ConfigMap {namespace}/{name} not found; create it first "
            f"(shipyard apply -f configmap.yaml)",
        )
    data = config_map.get("data") or {}
    if key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise TemplateSourceError(
            "templatePath", f"ConfigMap {namespace}/{name} has no key {key!r} (keys: {keys})"
        )
    try:
        trial_spec = safe_yaml.load(data[key])
    except safe_yaml.YamlError as exc:
        raise TemplateSourceError(
            "templatePath", f"{key!r} in ConfigMap {namespace}/{name} is refused: {exc}"
        ) from None
    except yaml.YAMLError as exc:
        raise TemplateSourceError(
            "templatePath", f"{key!r} in ConfigMap {namespace}/{name} is not YAML: {exc}"
        ) from None
    resolved = {k: v for k, v in template.items() if k != "configMap"}
    resolved["trialSpec"] = trial_spec
    return resolved


async def check_trial_template(
    store: ResourceStore,
    session: AsyncSession,
    new: dict[str, Any],
    current: dict[str, Any] | None,
) -> None:
    """Katib's webhook check of a ConfigMap trial template, on create and template change."""
    template = (new.get("spec") or {}).get("trialTemplate") or {}
    if not template.get("configMap"):
        return
    if current is not None and (current.get("spec") or {}).get("trialTemplate") == template:
        return  # unchanged: a later edit (say maxTrialCount) needs no fresh read
    name = new["metadata"].get("name") or new["metadata"].get("generateName") or ""
    try:
        resolved = await trial_template(store, session, new)
    except TemplateSourceError as exc:
        raise ApiError.invalid(
            "Experiment", name, [Cause(f"{SOURCE}.{exc.field}", str(exc))]
        ) from None
    causes = check_trial_spec(resolved["trialSpec"], resolved, f"{SOURCE}.templatePath")
    if causes:
        raise ApiError.invalid("Experiment", name, causes)


async def admit_config_map(
    session: AsyncSession, new: dict[str, Any], current: dict[str, Any] | None
) -> None:
    """``immutable: true`` freezes data and binaryData, and itself (Kubernetes' rule)."""
    if current is None or not current.get("immutable"):
        return
    for field in ("data", "binaryData", "immutable"):
        if new.get(field) != current.get(field):
            raise ApiError.invalid(
                "ConfigMap",
                current["metadata"]["name"],
                [Cause(field, "field is immutable when `immutable` is set", "FieldValueInvalid")],
            )
