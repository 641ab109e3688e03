"""``NotebookCuller``: stops notebook servers that have been idle too long (off by default).

Kubeflow's culler, with two of its known bugs fixed:

- activity is read from kernels *and* terminals (kubeflow#6920: a user working only in a
  terminal was culled);
- a freshly started server gets a fresh ``last-activity`` annotation from the controller
  (kubeflow#6648: a stale one culled it again right after a restart).

Every check period the culler asks each ready server (directly on its endpoint, so the
gateway's authorization is not in the way, kubeflow#7160) for ``/api/kernels`` and
``/api/terminals``, with the server's token (``services.common.dataplane``), as the gateway
sends it. A busy kernel means "active now"; otherwise the newest
``last_activity`` counts. It keeps the annotation ``notebooks.kubeflow.org/last-activity``
and sets ``kubeflow-resource-stopped`` once the server has been idle longer than the limit.
Jupyter's own ``/api/status`` is not used: polling the API counts as activity there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx

from services.common.dataplane import notebook_token
from services.common.resources import ResourceStore
from services.common.runtime.endpoint_http import EndpointTransport
from services.common.tasks import cancel_and_wait
from services.common.timestamps import now_rfc3339, parse_time
from services.notebook.models import NOTEBOOK
from services.notebook.notebooks import LAST_ACTIVITY_ANNOTATION, STOP_ANNOTATION
from services.notebook.workload import prefix

log = logging.getLogger(__name__)
#: Bound on what one answer of a server may be (a list of kernels or terminals).
MAX_BODY = 4 * 1024 * 1024


def last_activity(
    kernels: list[dict[str, Any]], terminals: list[dict[str, Any]], now: datetime
) -> datetime | None:
    """When the server was last used: now if a kernel is busy, else the newest activity."""
    if any(k.get("execution_state") not in (None, "idle", "dead") for k in kernels):
        return now
    times = [
        t
        for t in (parse_time(x.get("last_activity")) for x in [*kernels, *terminals])
        if t is not None
    ]
    return max(times) if times else None


class NotebookCuller:
    """A Lifecycle component; ``idle_seconds <= 0`` makes ``start`` a no-op."""

    def __init__(
        self,
        store: ResourceStore,
        *,
        dataplane_key: bytes,
        idle_seconds: float,
        period_seconds: float,
        request_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.dataplane_key = dataplane_key
        self.idle_seconds = idle_seconds
        self.period_seconds = max(0.1, period_seconds)
        self.request_timeout = request_timeout
        self._task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self.idle_seconds <= 0:
            return
        # EndpointTransport: a server's endpoint is http:// or a sandbox's http+sandbox://
        # broker (services.common.runtime.endpoint); kept-alive connections are reused.
        self._http = httpx.AsyncClient(transport=EndpointTransport(), timeout=self.request_timeout)
        self._task = asyncio.create_task(self._loop(), name="notebook-culler")
        log.info(
            "notebook culling on: idle after %.0fs, checked every %.1fs",
            self.idle_seconds,
            self.period_seconds,
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("notebook culling pass failed")
            await asyncio.sleep(self.period_seconds)

    async def check_all(self) -> None:
        notebooks = await self.store.list_all(NOTEBOOK)
        running = [
            nb
            for nb in notebooks
            if (nb.get("status") or {}).get("endpoint")
            and STOP_ANNOTATION not in (nb["metadata"].get("annotations") or {})
            and not nb["metadata"].get("deletionTimestamp")
        ]
        # Bounded: at most a handful of servers are asked at once, each with a timeout.
        limit = asyncio.Semaphore(8)

        async def one(nb: dict[str, Any]) -> None:
            async with limit:
                try:
                    await self.check(nb)
                except Exception:
                    log.exception(
                        "culling check of notebook %s/%s failed",
                        nb["metadata"]["namespace"],
                        nb["metadata"]["name"],
                    )

        await asyncio.gather(*(one(nb) for nb in running))

    async def _get_list(self, base: str, path: str, token: str) -> list[dict[str, Any]] | None:
        """A JSON list from the server (None if it does not answer with one)."""
        assert self._http is not None
        headers = {"Authorization": f"token {token}"}
        try:
            async with self._http.stream("GET", base.rstrip("/") + path, headers=headers) as resp:
                if resp.status_code == 404:
                    return []  # e.g. terminals not installed in a custom image
                if resp.status_code != 200:
                    return None
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        return None
        except httpx.HTTPError:
            return None
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        return [x for x in parsed if isinstance(x, dict)] if isinstance(parsed, list) else None

    async def check(self, notebook: dict[str, Any]) -> None:
        meta = notebook["metadata"]
        ns, name = meta["namespace"], meta["name"]
        base = notebook["status"]["endpoint"]
        token = notebook_token(self.dataplane_key, ns, name)
        kernels = await self._get_list(base, f"{prefix(ns, name)}/api/kernels", token)
        terminals = await self._get_list(base, f"{prefix(ns, name)}/api/terminals", token)
        if kernels is None or terminals is None:
            return  # not answering: not evidence of idleness
        now = datetime.now(UTC)
        annotations = meta.get("annotations") or {}
        recorded = parse_time(annotations.get(LAST_ACTIVITY_ANNOTATION))
        seen = last_activity(kernels, terminals, now)
        newest = max([t for t in (recorded, seen) if t is not None], default=None)
        if newest is None:
            newest = now  # nothing known yet: start the clock now
        newest = newest.replace(microsecond=0)  # the annotation keeps whole seconds
        if recorded is None or newest > recorded:
            await self.store.patch(
                NOTEBOOK,
                ns,
                name,
                {
                    "metadata": {
                        "annotations": {
                            LAST_ACTIVITY_ANNOTATION: newest.strftime("%Y-%m-%dT%H:%M:%SZ")
                        }
                    }
                },
            )
        idle = (now - newest).total_seconds()
        if idle > self.idle_seconds:
            log.info(
                "culling notebook %s/%s: idle for %.0fs (limit %.0fs)",
                ns,
                name,
                idle,
                self.idle_seconds,
            )
            await self.store.patch(
                NOTEBOOK, ns, name, {"metadata": {"annotations": {STOP_ANNOTATION: now_rfc3339()}}}
            )
