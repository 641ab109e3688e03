"""A profile a person registers for themselves is held to the platform's registration quota.

Kubeflow lets any signed-in person register the namespace their identity maps to: the
dashboard's registration flow (``/api/workgroup/create``), a Profile or KFAM profile they
create, or one made at their first login (``SHIPYARD_AUTO_CREATE_PROFILE``). Such a profile
would otherwise have no quota, and a hostile tenant could start workloads until the host gives
out. So it gets ``SHIPYARD_REGISTRATION_QUOTA`` (``kubectl create quota --hard`` syntax,
default ``pods=20``; empty: none) as its ``spec.resourceQuotaSpec.hard``:

* a name the person's own quota leaves out is added with the registration value;
* a name they give may be stricter, never looser (a 403 saying which and by how much).

A cluster admin registering a profile (for anyone) sets whatever quota they like, and only a
cluster admin may change a quota later (gateway/profiles_api.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.runtime.quantity import parse_quantity
from services.common.runtime.quota import hard_of

from .errors import GatewayError

DEFAULT = "pods=20"


def parse_hard(text: str, field: str = "SHIPYARD_REGISTRATION_QUOTA") -> dict[str, str]:
    """``pods=20,limits.memory=16Gi`` as a ``hard`` map, each value a valid quantity;
    ValueError naming ``field`` otherwise. Empty: {}."""
    hard: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = (word.strip() for word in part.partition("="))
        if not eq or not name:
            raise ValueError(f"{field}: {part!r} is not name=quantity (e.g. pods=20)")
        if parse_quantity(value, f"{field}[{name}]") < 0:
            raise ValueError(f"{field}[{name}]: must not be negative")
        hard[name] = value
    return hard


def registered_spec(spec: Mapping[str, Any], limit: Mapping[str, str], user: str) -> dict[str, Any]:
    """A self-registered profile's ``spec`` with the registration quota in its quota."""
    if not limit:
        return dict(spec)
    try:
        theirs = hard_of(spec.get("resourceQuotaSpec"))
    except ValueError as exc:
        raise GatewayError(422, str(exc), "Invalid") from None
    looser = [
        f"hard[{name}] {theirs[name]} is more than {cap}"
        for name, cap in limit.items()
        if name in theirs and parse_quantity(theirs[name]) > parse_quantity(cap)
    ]
    if looser:
        raise GatewayError(
            403,
            f'User "{user}" cannot register a profile with a resource quota above the '
            f"registration quota: {'; '.join(looser)} (ask a cluster admin)",
            "Forbidden",
            {"user": user, "verb": "create", "kind": "profiles"},
        )
    quota = dict(spec.get("resourceQuotaSpec") or {})
    quota["hard"] = {**limit, **theirs}
    return {**spec, "resourceQuotaSpec": quota}


def sheds_quota(hard: Mapping[str, str], limit: Mapping[str, str]) -> bool:
    """Whether a profile with quota ``hard``, deleted and registered again by its owner (with
    the registration quota ``limit``), would come back with a looser quota."""
    return any(
        name not in limit or parse_quantity(value) < parse_quantity(limit[name])
        for name, value in hard.items()
    )


async def register(gw: Any, p: Any, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create the Profile ``body`` for principal ``p``: who may (``Authorizer.check_register``),
    and with the registration quota unless ``p`` is a cluster admin."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    if not isinstance(meta, Mapping) or not isinstance(spec, Mapping):
        raise GatewayError(422, "metadata and spec must be objects", "Invalid")
    owner = (spec.get("owner") or {}).get("name")
    gw.authz.check_register(p, str(meta.get("name", "")), str(owner))
    if gw.authz.is_cluster_admin(p):
        return await gw.store.create_profile(dict(body))
    spec = registered_spec(spec, gw.settings.registration_hard, p.user)
    return await gw.store.create_profile({**body, "spec": spec})
