"""Postgres stopped under load (every session ended, as a restart does), away for
``OUTAGE_SECONDS``, then started again.

While it is away every service says so on ``/readyz`` (503, ``database: false``), the API
answers 503 with a Kubernetes Status, and no process exits. Once it is back, without anyone
touching the platform: every object is still there (same uid), the workflows Succeed with
each step run exactly once (the ``tally`` step counts), the experiment completes with the
trials it asked for, and the watch, resumed from its last resourceVersion, saw every change
to the workflows once and in order.
"""

from __future__ import annotations

import logging
import time

from tests.chaos.conftest import OUTAGE_SECONDS, ChaosPlatform
from tests.chaos.mix import (
    ARGO,
    KATIB,
    all_ready_again,
    all_unready,
    api_client,
    assert_work_done,
    check_watch_saw_every_change,
    finished_work,
    object_uids,
    readiness,
    start_load,
    watch_caught_up,
)

log = logging.getLogger(__name__)

TRIALS = 8


def test_postgres_outage_services_unready_then_resume_with_nothing_lost(
    chaos_platform: ChaosPlatform,
) -> None:
    cp = chaos_platform
    api = api_client(cp.gateway)
    # wf-short's first step ends while Postgres is away; wf-long's outlasts the outage.
    start_rv, watcher = start_load(
        api,
        cp.gateway,
        "chaos-pg",
        trials=TRIALS,
        seconds=3,
        workflows={"wf-short": 4, "wf-long": OUTAGE_SECONDS + 8},
    )
    try:
        before = object_uids(api)

        cp.pg.stop()
        down_at = time.monotonic()
        # Every service says it is not ready, and why; the gateway too.
        all_unready(cp.service_urls, {"database": False, "nats": True}, 20)
        code, body = readiness(cp.gateway)
        assert code == 503 and body["ready"] is False, body
        # The API says the database is unavailable: a 503 Status, not a stack trace.
        r = api.get(ARGO)
        assert r.status_code == 503, r.text
        status = r.json()
        assert status["kind"] == "Status" and status["reason"] == "ServiceUnavailable", status
        assert "database" in status["message"], status
        r = api.get(f"{KATIB}/experiments/chaos-pg")
        assert r.status_code == 503 and r.json()["kind"] == "Status", r.text
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        assert cp.exited() == {}, {n: cp.logs(n) for n in cp.exited()}

        cp.pg.start()
        up_at = time.monotonic()
        outage = up_at - down_at
        all_ready_again(cp.service_urls)
        ready_after = time.monotonic() - up_at

        done, condition = finished_work(api, ["wf-short", "wf-long"], "chaos-pg")
        finished_after = time.monotonic() - up_at
        log.warning(
            "postgres outage %.1f s: services ready %.1f s after it came back, "
            "workflows and experiment finished %.1f s after",
            outage,
            ready_after,
            finished_after,
        )
        after = object_uids(api)
        committed = watch_caught_up(cp.query, watcher, start_rv)
    finally:
        watcher.stop()

    assert_work_done(api, done, condition, "chaos-pg", TRIALS)
    lost = {k: v for k, v in before.items() if after.get(k) != v}
    assert lost == {}, lost
    assert cp.exited() == {}, {n: cp.logs(n) for n in cp.exited()}

    # The watch: every workflow change after its start, once, in resourceVersion order, though
    # its stream broke while Postgres was away.
    check_watch_saw_every_change(watcher, committed, list(done))
