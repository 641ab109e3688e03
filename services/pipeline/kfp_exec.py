"""KFP IR tasks as workloads (filled in with the KFP API)."""

from __future__ import annotations

from typing import Any


async def prepare(runner: Any, wf: dict[str, Any], node: dict[str, Any], tmpl: dict[str, Any],
                  host_dir: Any, mount: str) -> tuple[list[str], list[dict[str, str]], str | None]:
    raise ValueError("KFP tasks are not supported yet")


async def collect(runner: Any, wf: dict[str, Any], node: dict[str, Any], host_dir: Any,
                  result: Any) -> None:
    return None
