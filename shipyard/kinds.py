"""Every kind the platform serves, and how the CLI resolves names like ``pvc`` or ``wf``.

The kinds come from ``services.common.catalog`` (data only): the CLI loads no service code.
"""

from __future__ import annotations

from services.common.catalog import ALL_KINDS, PROFILE, KindInfo

__all__ = ["ALL_KINDS", "PROFILE", "KindInfo", "UnknownKindError", "for_object", "resolve"]


class UnknownKindError(LookupError):
    pass


def resolve(name: str) -> KindInfo:
    """A kind by kind name, plural, singular or short name (case-insensitive).

    ``plural.group`` (``inferenceservices.serving.kubeflow.org``) picks a group; a bare name
    means the first kind in the catalog that has it.
    """
    wanted = name.lower()
    for kind in ALL_KINDS:
        names = {kind.kind.lower(), kind.plural, kind.singular, *kind.short_names}
        if wanted in {f"{n}.{kind.group}" for n in names}:
            return kind
    for kind in ALL_KINDS:
        if wanted in {kind.kind.lower(), kind.plural, kind.singular, *kind.short_names}:
            return kind
    known = ", ".join(sorted({k.plural for k in ALL_KINDS}))
    raise UnknownKindError(f'the server doesn\'t have a resource type "{name}" (known: {known})')


def for_object(api_version: str | None, kind_name: str | None) -> KindInfo:
    for kind in ALL_KINDS:
        if kind.kind == kind_name and (api_version in (None, kind.api_version)):
            return kind
    raise UnknownKindError(
        f"no kind {kind_name!r} in apiVersion {api_version!r} is served by "
        f"shipyard (see `shipyard get --help` for the kinds)"
    )
