"""NATS stopped under load for ``OUTAGE_SECONDS``, then started again (same port, same
JetStream store, as a restarted NATS).

While it is away the services say so on ``/readyz`` (503, ``nats: false``) but keep serving
their APIs: a workflow created during the outage is accepted, and every event waits in the
services' outboxes. Once NATS is back, without anyone touching the platform: every outbox
row reaches JetStream exactly once and, per object, in the order it was committed; the
automl consumer applied each trial completion once (its inbox); the workflows Succeed with
each step run once; the experiment completes with the trials it asked for; and the watch
(which reads the outbox, NATS only wakes it) saw every change once and in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict

import nats

from services.common.events.streams import stream_name
from shipyard.up import SERVICES
from tests.chaos.conftest import OUTAGE_SECONDS, ChaosPlatform
from tests.chaos.mix import (
    all_ready_again,
    all_unready,
    api_client,
    assert_completions_applied_once,
    assert_work_done,
    check_watch_saw_every_change,
    finished_work,
    start_load,
    start_workflow,
    wait_until,
    watch_caught_up,
)

log = logging.getLogger(__name__)

TRIALS = 6


def _unpublished(cp: ChaosPlatform) -> dict[str, int]:
    return {
        service: int(
            cp.query(f"SELECT count(*) FROM {service}.outbox WHERE published_at IS NULL")[0][0]
        )
        for service in SERVICES
    }


def _stream_messages(url: str, service: str) -> list[tuple[str, str]]:
    """(ce-id, ce-subject) of every message in the service's stream, in stream order."""

    async def read() -> list[tuple[str, str]]:
        nc = await nats.connect(url, connect_timeout=5)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream_name(service))
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream_name(service), seq)
                headers = msg.headers or {}
                out.append((headers["ce-id"], headers.get("ce-subject", "")))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def test_nats_outage_outbox_holds_events_and_delivers_each_once_in_order(
    chaos_platform: ChaosPlatform,
) -> None:
    cp = chaos_platform
    api = api_client(cp.gateway)
    start_rv, watcher = start_load(
        api, cp.gateway, "chaos-nats", trials=TRIALS, seconds=2, workflows={"wf-before": 4}
    )
    try:
        cp.nats.stop()
        down_at = time.monotonic()
        all_unready(cp.service_urls, {"database": True, "nats": False}, 30)
        # The API keeps working: the change commits, its events wait in the outbox.
        start_workflow(api, "wf-during", first_step_seconds=1)
        wait_until(
            "events waiting in the pipeline's and automl's outboxes",
            lambda: all(_unpublished(cp)[s] for s in ("pipeline", "automl")),
            max(OUTAGE_SECONDS - 5, 5),
        )
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        backlog = _unpublished(cp)
        assert cp.exited() == {}, {n: cp.logs(n) for n in cp.exited()}

        cp.nats.start()  # same port, same store directory
        up_at = time.monotonic()
        outage = up_at - down_at
        all_ready_again(cp.service_urls)
        ready_after = time.monotonic() - up_at
        wait_until("outboxes drained", lambda: not any(_unpublished(cp).values()), 60, every=0.2)
        drained_after = time.monotonic() - up_at

        done, condition = finished_work(api, ["wf-before", "wf-during"], "chaos-nats")
        wait_until("outboxes drained again", lambda: not any(_unpublished(cp).values()), 60)
        finished_after = time.monotonic() - up_at
        log.warning(
            "nats outage %.1f s, %s events waited: services ready %.1f s after it came back, "
            "outboxes drained after %.1f s, workflows and experiment finished after %.1f s",
            outage,
            backlog,
            ready_after,
            drained_after,
            finished_after,
        )
        committed = watch_caught_up(cp.query, watcher, start_rv)
    finally:
        watcher.stop()

    assert sum(backlog.values()) > 0, backlog
    assert_work_done(api, done, condition, "chaos-nats", TRIALS, each_trial_succeeded=False)
    assert cp.exited() == {}, {n: cp.logs(n) for n in cp.exited()}

    # Every event each service committed is in its stream exactly once, and each object's
    # events are in the order they were committed.
    for service in SERVICES:
        rows = cp.query(f"SELECT msg_id, headers FROM {service}.outbox ORDER BY id")
        in_stream = _stream_messages(cp.nats.url, service)
        ids = [ce_id for ce_id, _ in in_stream]
        assert len(ids) == len(set(ids)), f"{service}: an event was published twice"
        assert sorted(ids) == sorted(msg_id for msg_id, _ in rows), service
        committed_order: dict[str, list[str]] = defaultdict(list)
        for msg_id, headers in rows:
            subject = (headers if isinstance(headers, dict) else json.loads(headers)).get(
                "ce-subject", ""
            )
            committed_order[subject].append(msg_id)
        stream_order: dict[str, list[str]] = defaultdict(list)
        for ce_id, subject in in_stream:
            stream_order[subject].append(ce_id)
        assert stream_order == committed_order, service

    # The automl consumer applied each trial completion exactly once (its inbox).
    assert_completions_applied_once(cp.query, TRIALS)

    check_watch_saw_every_change(watcher, committed, list(done))
