"""Is the workload run a service-account token is bound to still going?

A workload's token carries its run (``wl`` = ``<ns>/<workload>/<run id>``) and the service
whose runtime ran it (``svc``). The gateway honours such a token only while that service
says the run is live, so a token copied out of a workload dies with the run (as Kubernetes'
bound tokens die with their pod), not ten minutes later. Answers are cached briefly: a live
run for ``LIVE_TTL`` seconds, an ended run for good (a run never comes back).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import httpx

from services.common.identity import ASSERTION_HEADER, Identity

log = logging.getLogger(__name__)
LIVE_TTL = 2.0
ENDED_MAX = 10_000


class WorkloadRuns:
    def __init__(
        self, http: httpx.AsyncClient, services: Mapping[str, str], sign: Callable[[Identity], str]
    ) -> None:
        self.http, self.services, self.sign = http, services, sign
        self._live: dict[tuple[str, str], float] = {}
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def is_live(self, service: str, binding: str) -> bool:
        key = (service, binding)
        if key in self._ended:
            return False
        now = time.monotonic()
        if self._live.get(key, 0.0) > now:
            return True
        base = self.services.get(service)
        if base is None:
            return False
        assertion = self.sign(Identity(user="system:gateway", role="admin", cluster_admin=True))
        try:
            r = await self.http.get(
                f"{base}/internal/v1/workload-runs/{binding}",
                headers={ASSERTION_HEADER: assertion},
                timeout=5.0,
            )
        except httpx.HTTPError as exc:  # the service is down: fail closed, say why
            log.warning("cannot ask %s whether run %s is live: %s", service, binding, exc)
            return False
        live = r.status_code == 200 and r.json().get("live") is True
        if live:
            if len(self._live) > ENDED_MAX:
                self._live.clear()
            self._live[key] = now + LIVE_TTL
        elif r.status_code == 200:
            self._live.pop(key, None)
            self._ended[key] = None
            while len(self._ended) > ENDED_MAX:
                self._ended.popitem(last=False)
        return live
