"""The workflow engine's vocabulary: what a pass returns, what runs pods, templates in scope.

Shared by the engine (``engine.py``) and the modules it is split into (``engine_scope``,
``engine_groups``, ``engine_dag``, ``engine_steps``, ``engine_retry``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

RESUME_ANNOTATION = "pipeline.shipyard.io/resume-generation"
CACHE_ANNOTATION = "pipeline.shipyard.io/cache"
MAX_ITEMS = 10_000
MAX_RETRIES = 100  # "no limit" still stops somewhere


@dataclass
class PodResult:
    phase: str  # Succeeded | Failed | Error; Pending: made, waiting for quota room
    message: str | None = None
    exit_code: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    result: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)


class PodRunner(Protocol):
    """Runs leaf templates (container, script, plugin) as workloads.

    ``start`` returns None once the workload is made (or has failed: ``poll`` says so), or
    the quota's message when the runtime refused to make it for now (start it again later).
    ``poll`` returns the finished result, None while it runs, or a ``Pending`` result with the
    quota's message while the made workload waits for room."""

    async def start(
        self,
        wf: dict[str, Any],
        node: dict[str, Any],
        template: dict[str, Any],
        volumes: list[dict[str, Any]],
    ) -> str | None: ...

    async def poll(self, wf: dict[str, Any], node: dict[str, Any]) -> PodResult | None: ...

    async def kill(self, wf: dict[str, Any], node: dict[str, Any]) -> None: ...


class Cache(Protocol):
    async def get(
        self, namespace: str, key: str, max_age: float | None
    ) -> dict[str, Any] | None: ...

    async def put(
        self, namespace: str, key: str, outputs: dict[str, Any], workflow: str, node: str
    ) -> None: ...


class TemplateError(Exception):
    """A template problem found while running (becomes an Error node)."""


class TemplateBook:
    """Templates by scope: ``local`` (the workflow's own) and ``namespaced/<WorkflowTemplate>``."""

    def __init__(self, local: list[dict[str, Any]], stored: Mapping[str, dict[str, Any]]) -> None:
        self.local = {t["name"]: t for t in local}
        self.stored = stored

    def get(self, scope: str, name: str) -> dict[str, Any]:
        tmpl = self.local.get(name) if scope == "local" else self.stored.get(f"{scope}/{name}")
        if tmpl is None:
            where = "the workflow" if scope == "local" else scope.replace("namespaced/", "")
            raise TemplateError(f"template {name!r} not found in {where}")
        return tmpl

    def for_task(self, scope: str, task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ref = task.get("templateRef")
        if ref:
            ref_scope = f"namespaced/{ref['name']}"
            return ref_scope, self.get(ref_scope, ref["template"])
        return scope, self.get(scope, task["template"])


def duration_seconds(text: str | int | float | None) -> float | None:
    """Argo durations: plain seconds ("30") or Go style ("1m30s", "2h", "500ms")."""
    if text is None or text == "":
        return None
    if isinstance(text, int | float):
        return float(text)
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return total


def template_type(tmpl: dict[str, Any]) -> str:
    for key, kind in (
        ("container", "Pod"),
        ("script", "Pod"),
        ("plugin", "Pod"),
        ("dag", "DAG"),
        ("steps", "Steps"),
        ("suspend", "Suspend"),
    ):
        if tmpl.get(key) is not None:
            return kind
    raise TemplateError(
        f"template {tmpl.get('name')!r} has no container, script, dag, steps or suspend"
    )


@dataclass
class Scope:
    """Variables and artifacts visible while expanding one template's tasks or steps."""

    values: dict[str, str]
    artifacts: dict[str, dict[str, Any]]

    def child(self) -> Scope:
        return Scope(dict(self.values), dict(self.artifacts))


@dataclass
class PassResult:
    changed: bool = False
    requeue_after: float | None = None
    node_events: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # node, old
    run_event: str | None = None  # "started" | "succeeded" | "failed" | ...
