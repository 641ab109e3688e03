"""Watches: Kubernetes watch semantics on the store's outbox.

A watch lists (or checks that its resourceVersion is still kept), then replays the kind's
changes from the outbox in resourceVersion order, woken by the kind's NATS subject and, on a
shared tick, every couple of seconds anyway. Identical reads in flight are shared among the
watches that ask them (``replay``).
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from services.common.errors import ApiError
from services.common.resources.kinds import ResourceKind
from services.common.resources.selectors import parse_selector
from services.common.resources.store import (
    MAX_WATCH_SECONDS,
    WATCH_CATCHUP_SECONDS,
    WatchEvent,
    _field_selector,
)

if TYPE_CHECKING:
    from services.common.resources.store import ResourceStore


async def watch(
    store: ResourceStore,
    kind: ResourceKind,
    namespace: str | None,
    *,
    label_selector: str | None = None,
    field_selector: str | None = None,
    resource_version: str | None = None,
    timeout_seconds: float | None = None,
) -> AsyncIterator[WatchEvent]:
    """Kubernetes watch semantics.

    Without a resourceVersion (or "0"), the current objects arrive first as ADDED.
    With one, every change after it is replayed from the outbox, which keeps
    published events for its retention period. Then live changes follow: a message
    on the kind's NATS subject wakes the watch, which reads the new changes from the
    outbox in order (and checks every couple of seconds anyway, so nothing is missed
    while NATS is down).
    """
    match = parse_selector(label_selector)
    field_match = _field_selector(field_selector)

    def wanted(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        if namespace is not None and meta.get("namespace") != namespace:
            return False
        return match(meta.get("labels") or {}) and field_match(obj)

    deadline = asyncio.get_running_loop().time() + min(
        timeout_seconds or MAX_WATCH_SECONDS, MAX_WATCH_SECONDS
    )
    live_cm = store.live_events(kind.subject("*")) if store.live_events else None
    live = await live_cm.__aenter__() if live_cm is not None else None
    try:
        if resource_version in (None, "", "0"):
            page = await store.list(kind, namespace)
            last = page.resource_version
            for obj in page.items:
                if wanted(obj):
                    yield WatchEvent("ADDED", obj)
        else:
            try:
                last = int(resource_version)
            except ValueError:
                raise ApiError(400, f"invalid resourceVersion {resource_version!r}") from None
            await check_not_compacted(store, last)
        while True:
            for rv, event in await replay(store, kind, namespace, last):
                last = rv
                if wanted(event.object):
                    yield event
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            # The catch-up read comes on a shared tick, so idle watches of a kind read
            # together (one query, see _replay) rather than one every 2 s each.
            loop_time = asyncio.get_running_loop().time()
            wait = min(remaining, WATCH_CATCHUP_SECONDS - loop_time % WATCH_CATCHUP_SECONDS)
            if live is None:
                await asyncio.sleep(min(wait, 0.25))
            else:
                await wait_for_signal(live, wait)
    finally:
        if live_cm is not None:
            await live_cm.__aexit__(None, None, None)


async def check_not_compacted(store: ResourceStore, after: int) -> None:
    """410 Expired when the changes after ``after`` are no longer in the outbox.

    Every write takes the next resourceVersion and stages one outbox row, so the rows
    still kept are a contiguous range ending at the current version; anything before
    the oldest kept row was pruned. A client told 410 lists again, as with Kubernetes.
    """
    async with store.db.sessions() as s:
        oldest = (await s.execute(select(func.min(store.outbox.c.resource_version)))).scalar()
        current = await store.current_rv(s)
    if (oldest is None and after < current) or (oldest is not None and after < oldest - 1):
        raise ApiError(
            410, f"too old resource version: {after} ({oldest or current})", reason="Expired"
        )


async def replay(
    store: ResourceStore, kind: ResourceKind, namespace: str | None, after: int
) -> builtins.list[tuple[int, WatchEvent]]:
    """The kind's changes after ``after`` (in ``namespace``), in order, at most 1,000.

    Concurrent identical reads share one query; the events it returns are shared with
    every watch that asked, so they are never modified (the watch API only serializes
    them). A watch woken while a read it joins was already under way may get that read's
    answer without the change that woke it: the change then comes with the next read, at
    the latest on the shared catch-up tick (WATCH_CATCHUP_SECONDS)."""
    key = (kind.kind, namespace, after)
    running = store.watch_reads.get(key)
    if running is None or running.done():
        running = asyncio.ensure_future(read_changes(store, kind, namespace, after))
        store.watch_reads[key] = mine = running
        running.add_done_callback(
            lambda _: store.watch_reads.pop(key) if store.watch_reads.get(key) is mine else None
        )
    result: builtins.list[tuple[int, WatchEvent]] = await asyncio.shield(running)
    return result


async def read_changes(
    store: ResourceStore, kind: ResourceKind, namespace: str | None, after: int
) -> builtins.list[tuple[int, WatchEvent]]:
    from services.common.resources.codec import parse_resource_event

    query = select(store.outbox.c.resource_version, store.outbox.c.payload).where(
        store.outbox.c.kind == kind.kind, store.outbox.c.resource_version > after
    )
    if namespace is not None:
        query = query.where(store.outbox.c.namespace == namespace)
    async with store.db.sessions() as s:
        rows = (await s.execute(query.order_by(store.outbox.c.resource_version).limit(1000))).all()
    out: builtins.list[tuple[int, WatchEvent]] = []
    for rv, payload in rows:
        msg = parse_resource_event(payload)
        out.append((int(rv), WatchEvent(msg.type, json.loads(msg.object_json))))
    if kind.event_omit and out:
        await restore_omitted(store, kind, out)
    return out


async def restore_omitted(
    store: ResourceStore, kind: ResourceKind, events: builtins.list[tuple[int, WatchEvent]]
) -> None:
    """Put a kind's ``event_omit`` fields back into watch events, from the table, where
    the stored object is still the one the event describes (same resourceVersion). Older
    events, and deletions, go out without them, like a metadata-only watch."""
    uids = {e.object.get("metadata", {}).get("uid") for _, e in events}
    async with store.db.sessions() as s:
        rows = (
            await s.execute(
                select(
                    store.objects.c.uid, store.objects.c.resource_version, store.objects.c.body
                ).where(store.objects.c.uid.in_([u for u in uids if u]))
            )
        ).all()
    current = {uid: (int(rv), body) for uid, rv, body in rows}
    for rv, event in events:
        found = current.get(event.object.get("metadata", {}).get("uid"))
        if found is None or found[0] != rv or event.type == "DELETED":
            continue
        for field in kind.event_omit:
            if field in found[1]:
                event.object[field] = found[1][field]


async def wait_for_signal(live: asyncio.Queue[bytes], wait: float) -> bool:
    """Wait up to ``wait`` seconds for a live event, then swallow any that queued up; True
    if one came.

    Live events only wake the watch; what it sends is always read back from the outbox
    in resourceVersion order, so a late, reordered or lost NATS message cannot make a
    watch skip or repeat a change.
    """
    try:
        async with asyncio.timeout(wait):
            await live.get()
    except TimeoutError:
        return False
    while not live.empty():
        live.get_nowait()
    return True
