"""A namespace's ResourceQuota, as Kubernetes' quota admission judges a new pod against it.

A Profile's ``spec.resourceQuotaSpec`` (``{"hard": {...}}``) becomes the namespace's quota,
named ``kf-resource-quota`` as Kubeflow's profile controller names it. On Kubernetes the API
server enforces it; the local runtime asks :func:`refusal` before starting a workload, with
the workloads of the namespace that have started (or are starting) and not finished as the
usage, and holds a refused one until it fits, unless it never can (``Refusal.final``). Pure
functions.

What is counted, in Kubernetes' terms: ``pods`` (and ``count/pods``); ``requests.cpu``
(``cpu``), ``requests.memory`` (``memory``), ``requests.ephemeral-storage``
(``ephemeral-storage``), and ``limits.cpu``, ``limits.memory``, ``limits.ephemeral-storage``,
where a workload's request defaults to its limit as in a pod. A quota on a compute resource
refuses a workload that names neither, the way the API server does ("must specify"), so
leaving the resources out is no way around it. For a new claim (:func:`volume_refusal`):
``persistentvolumeclaims`` and ``requests.storage``. Other resource names (other object
counts, GPUs) are stored and, on Kubernetes, enforced by the API server; the local runtime
does not count them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import RuntimeBackendError
from .models import Phase, WorkloadSpec, WorkloadStatus
from .quantity import parse_quantity

#: The quota's name, Kubeflow's.
QUOTA_NAME = "kf-resource-quota"
#: The reason a refused workload's status gives.
EXCEEDED = "ExceededQuota"
#: How often a workload waiting for room under its quota is tried again.
QUOTA_RETRY_SECONDS = 1.0

_COMPUTE = ("cpu", "memory", "ephemeral-storage")
#: Each counted name -> (which of the workload's resources, which resource); pods: ("pods", "").
COUNTED: dict[str, tuple[str, str]] = {
    "pods": ("pods", ""),
    "count/pods": ("pods", ""),
    **{name: ("requests", name) for name in _COMPUTE},
    **{f"requests.{name}": ("requests", name) for name in _COMPUTE},
    **{f"limits.{name}": ("limits", name) for name in _COMPUTE},
}


def hard_of(
    quota_spec: Mapping[str, Any] | None, field: str = "spec.resourceQuotaSpec"
) -> dict[str, str]:
    """The ``hard`` map of a ResourceQuotaSpec, each value a valid quantity; ValueError naming
    the field otherwise. None or no ``hard``: no quota ({})."""
    if quota_spec is None:
        return {}
    if not isinstance(quota_spec, Mapping):
        raise ValueError(f"{field}: must be an object with a 'hard' map")
    hard = quota_spec.get("hard")
    if hard is None:
        return {}
    if not isinstance(hard, Mapping):
        raise ValueError(f"{field}.hard: must be a map of resource names to quantities")
    out: dict[str, str] = {}
    for name, value in hard.items():
        where = f"{field}.hard[{name}]"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: a resource name is required")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"{where}: must be a quantity such as 4, 500m or 8Gi")
        if _milli(value, where) < 0:
            raise ValueError(f"{where}: must not be negative")
        out[name] = str(value)
    return out


def _milli(value: str | int | float, field: str) -> int:
    """A quantity in thousandths: exact sums for cpu's millicores and memory's bytes alike."""
    return round(parse_quantity(value, field) * 1000)


def _amount(spec: WorkloadSpec, kind: str, resource: str) -> int | None:
    """What ``spec`` uses of one counted resource (thousandths); None: it names none."""
    if kind == "pods":
        return 1000
    limits, requests = spec.resources.limits, spec.resources.requests
    if kind == "requests":
        value = requests.get(resource, limits.get(resource))
    else:
        value = limits.get(resource)
    if value is None:
        return None
    return _milli(value, f"resources.{kind}.{resource}")


_BINARY = tuple(
    (s, 1024**p) for s, p in (("Ei", 6), ("Pi", 5), ("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1))
)
_DECIMAL = tuple(
    (s, 1000**p) for s, p in (("E", 6), ("P", 5), ("T", 4), ("G", 3), ("M", 2), ("k", 1))
)


def _words(milli: int, binary: bool) -> str:
    """A quantity as the API server prints it: the largest suffix that divides it exactly,
    binary (``768Mi``) where the quota's own value is binary, else decimal (``500m``, ``2``)."""
    if milli % 1000:
        return f"{milli}m"
    whole = milli // 1000
    for suffix, size in _BINARY if binary else _DECIMAL:
        if whole and whole % size == 0:
            return f"{whole // size}{suffix}"
    return str(whole)


@dataclass(frozen=True)
class Refusal:
    """Why quota admission refused a workload, in the API server's words; ``final`` when no
    amount of waiting helps (it names no amount of a limited resource, or asks more than the
    quota's whole limit), else it fits once others finish."""

    message: str
    final: bool


def refusal(
    hard: Mapping[str, str], spec: WorkloadSpec, live: Iterable[WorkloadSpec]
) -> Refusal | None:
    """Quota admission of ``spec`` beside the namespace's ``live`` workloads; None: admitted."""
    counted = {name: COUNTED[name] for name in hard if name in COUNTED}
    if not counted:
        return None
    missing = [name for name, (kind, res) in counted.items() if _amount(spec, kind, res) is None]
    if missing:
        return Refusal(
            f"failed quota: {QUOTA_NAME}: must specify {','.join(sorted(missing))}", True
        )
    used = dict.fromkeys(counted, 0)
    for other in live:
        for name, (kind, res) in counted.items():
            used[name] += _amount(other, kind, res) or 0
    asked = {name: _amount(spec, kind, res) or 0 for name, (kind, res) in counted.items()}
    return _judge(hard, asked, used)


def volume_refusal(
    hard: Mapping[str, str], size: str | None, live: Iterable[str | None]
) -> Refusal | None:
    """Quota admission of a claim of ``size`` beside the namespace's claims of ``live`` sizes:
    ``persistentvolumeclaims`` counts them and ``requests.storage`` adds their sizes (a
    platform-made claim with no size counts none); None: admitted."""
    counted = [name for name in ("persistentvolumeclaims", "requests.storage") if name in hard]
    if not counted:
        return None

    def amounts(claim_size: str | None) -> dict[str, int]:
        storage = _milli(claim_size, "spec.resources.requests.storage") if claim_size else 0
        every = {"persistentvolumeclaims": 1000, "requests.storage": storage}
        return {name: every[name] for name in counted}

    used = dict.fromkeys(counted, 0)
    for other in live:
        for name, amount in amounts(other).items():
            used[name] += amount
    return _judge(hard, amounts(size), used)


def _judge(
    hard: Mapping[str, str], asked: Mapping[str, int], used: Mapping[str, int]
) -> Refusal | None:
    """The refusal, in the API server's words, of what ``asked`` beside ``used`` (each in
    thousandths, by counted name) and past ``hard``; None if everything fits."""
    over: list[tuple[str, int, int, int]] = []
    for name in sorted(asked):
        limit = _milli(hard[name], f"hard[{name}]")
        if used[name] + asked[name] > limit:
            over.append((name, asked[name], used[name], limit))
    if not over:
        return None
    requested, using, limited = (
        ",".join(f"{o[0]}={_words(o[i], hard[o[0]].endswith('i'))}" for o in over)  # type: ignore[arg-type]
        for i in (1, 2, 3)
    )
    return Refusal(
        f"exceeded quota: {QUOTA_NAME}, requested: {requested}, used: {using}, limited: {limited}",
        final=any(asked > limit for _, asked, _, limit in over),
    )


class QuotaRefused(RuntimeBackendError):
    """The API server refused to create a workload under its namespace's quota (HTTP 403).
    Nothing was made. ``final`` as :attr:`Refusal.final`: else it fits once others finish, and
    the caller tries again later, as Argo's controller does with a pod over quota."""

    def __init__(self, message: str, final: bool) -> None:
        super().__init__(message)
        self.message, self.final = message, final


_API_EXCEEDED = re.compile(
    r"exceeded quota: [^,]+, requested: (?P<requested>\S+), used: \S+, limited: (?P<limited>\S+)"
)


def api_refusal(message: str) -> Refusal | None:
    """The quota refusal an API server's 403 message says (``exceeded quota: ...``, ``failed
    quota: ...``), judged as :func:`refusal` judges; None if it is about something else."""
    if "failed quota: " in message:
        return Refusal(message, final=True)
    found = _API_EXCEEDED.search(message)
    if found is None:
        return None

    def amounts(words: str) -> dict[str, int]:
        pairs = (pair.partition("=") for pair in words.rstrip(",").split(","))
        try:
            return {name: _milli(value, name) for name, _, value in pairs}
        except ValueError:  # words this parser does not know: wait, as Argo does
            return {}

    requested, limited = amounts(found["requested"]), amounts(found["limited"])
    final = any(asked > limited[name] for name, asked in requested.items() if name in limited)
    return Refusal(message, final)


def waiting_for_room(status: WorkloadStatus) -> str | None:
    """Why a workload has not started: the quota message of one its runtime holds until the
    namespace has room (the local runtime's ``Pending``, ``ExceededQuota``); else None."""
    if status.phase == Phase.PENDING and status.reason == EXCEEDED:
        return status.message or EXCEEDED
    return None
