"""Every kind the platform serves, and how the CLI resolves names like ``pvc`` or ``wf``."""

from __future__ import annotations

from services.automl.models import KINDS as AUTOML_KINDS
from services.common.resources import PrinterColumn, ResourceKind
from services.notebook.models import KINDS as NOTEBOOK_KINDS
from services.pipeline.models import KINDS as PIPELINE_KINDS
from services.serving.models import KINDS as SERVING_KINDS

PROFILE = ResourceKind(
    "kubeflow.org",
    "v1",
    "Profile",
    "profiles",
    None,
    "gateway",
    namespaced=False,
    columns=(PrinterColumn("OWNER", "spec.owner.name"),),
)

ALL_KINDS: tuple[ResourceKind, ...] = (
    *NOTEBOOK_KINDS,
    *AUTOML_KINDS,
    *PIPELINE_KINDS,
    *SERVING_KINDS,
    PROFILE,
)


class UnknownKindError(LookupError):
    pass


def resolve(name: str) -> ResourceKind:
    """A kind by kind name, plural, singular or short name (case-insensitive)."""
    wanted = name.lower()
    for kind in ALL_KINDS:
        names = {kind.kind.lower(), kind.plural, kind.singular, *kind.short_names}
        if wanted in names or wanted in {f"{n}.{kind.group}" for n in names}:
            return kind
    known = ", ".join(sorted(k.plural for k in ALL_KINDS))
    raise UnknownKindError(f'the server doesn\'t have a resource type "{name}" (known: {known})')


def for_object(api_version: str | None, kind_name: str | None) -> ResourceKind:
    for kind in ALL_KINDS:
        if kind.kind == kind_name and (api_version in (None, kind.api_version)):
            return kind
    raise UnknownKindError(
        f"no kind {kind_name!r} in apiVersion {api_version!r} is served by "
        f"shipyard (see `shipyard get --help` for the kinds)"
    )
