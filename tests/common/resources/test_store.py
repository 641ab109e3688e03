"""ResourceStore semantics, on Postgres (production) and SQLite (the quickstart)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common import migrate
from services.common.db import Database
from services.common.errors import ApiError
from services.common.events.outbox import stage_event
from services.common.resources import ResourceStore, WatchEvent
from tests.common.resources.widgets import PVC, VERSIONS, WIDGET, metadata


@pytest.fixture(params=["postgres", "sqlite"])
async def store(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path
) -> AsyncIterator[ResourceStore]:
    if request.param == "postgres":
        db = Database(pg_url, schema=f"store_{uuid.uuid4().hex[:8]}")
    else:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/notebook.db", schema="notebook")
    await migrate.upgrade(db, metadata, VERSIONS)
    yield ResourceStore(db, metadata.tables, source="/test", stage_event=stage_event)
    await db.dispose()


def widget(name: str = "", labels: dict[str, str] | None = None, **meta: str) -> dict:
    metadata_ = {"labels": labels or {}, **meta}
    if name:
        metadata_["name"] = name
    return {"metadata": metadata_, "spec": {"color": "red"}}


async def test_concurrent_first_writes_of_a_fresh_database_all_succeed(
    store: ResourceStore,
) -> None:
    """The resourceVersion counter's row is made by the first write: sixteen first writes at
    once (distinct names) all succeed, with sixteen distinct resourceVersions (found by
    bench_load: 12 of 16 used to get a wrong 409 AlreadyExists)."""
    made = await asyncio.gather(
        *(store.create(WIDGET, "ns", widget(f"first-{i}")) for i in range(16))
    )
    versions = sorted(int(obj["metadata"]["resourceVersion"]) for obj in made)
    assert versions == list(range(1, 17))


async def test_create_generate_name(store: ResourceStore) -> None:
    obj = await store.create(WIDGET, "ns", widget(generateName="run-"))
    name = obj["metadata"]["name"]
    assert name.startswith("run-") and len(name) == len("run-") + 5
    assert obj["apiVersion"] == "test.shipyard.io/v1" and obj["kind"] == "Widget"


async def test_list_paging_with_continue(store: ResourceStore) -> None:
    for i in range(7):
        await store.create(WIDGET, "paged", widget(f"nb-{i}", {"parity": str(i % 2)}))
    seen, token = [], None
    while True:
        page = await store.list(WIDGET, "paged", limit=3, continue_token=token)
        assert len(page.items) <= 3
        seen += [o["metadata"]["name"] for o in page.items]
        token = page.continue_token
        if not token:
            break
    assert seen == [f"nb-{i}" for i in range(7)]
    odd = await store.list(WIDGET, "paged", label_selector="parity=1", limit=2)
    assert [o["metadata"]["name"] for o in odd.items] == ["nb-1", "nb-3"]
    assert odd.continue_token


async def test_update_status_does_not_touch_spec(store: ResourceStore) -> None:
    created = await store.create(WIDGET, "ns", widget("s"))
    updated = await store.update_status(WIDGET, "ns", "s", {"readyReplicas": 1})
    assert updated["status"] == {"readyReplicas": 1}
    assert updated["metadata"]["generation"] == created["metadata"]["generation"]
    # A PUT of the main resource cannot change status.
    body = dict(updated, status={"readyReplicas": 99})
    replaced = await store.replace(WIDGET, "ns", "s", body)
    assert replaced["status"] == {"readyReplicas": 1}


async def test_delete_with_finalizer_waits_for_controller(store: ResourceStore) -> None:
    pvc = {"metadata": {"name": "claim"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    created = await store.create(PVC, "ns", pvc)
    assert created["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    marked = await store.delete(PVC, "ns", "claim")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await store.get(PVC, "ns", "claim"))["metadata"]["deletionTimestamp"]
    # Finalizers cannot be added back while deleting.
    again = dict(marked)
    again["metadata"] = dict(marked["metadata"], finalizers=["a/b", "kubernetes.io/pvc-protection"])
    kept = await store.replace(PVC, "ns", "claim", again)
    assert kept["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    await store.remove_finalizer(PVC, "ns", "claim", "kubernetes.io/pvc-protection")
    assert await store.find(PVC, "ns", "claim") is None


async def test_json_patch_and_merge_patch(store: ResourceStore) -> None:
    await store.create(WIDGET, "ns", widget("p", {"a": "1"}))
    out = await store.patch(
        WIDGET,
        "ns",
        "p",
        [
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
        ],
        "application/json-patch+json",
    )
    assert out["metadata"]["labels"] == {"b": "2"}
    out = await store.patch(
        WIDGET,
        "ns",
        "p",
        {"metadata": {"labels": {"b": None, "c": "3"}}},
        "application/merge-patch+json",
    )
    assert out["metadata"]["labels"] == {"c": "3"}
    with pytest.raises(ApiError) as exc:
        await store.patch(WIDGET, "ns", "p", {"spec": {"parts": [{"count": 1}]}})
    assert exc.value.code == 422 and exc.value.causes[0].field == "spec.parts[0].name"


async def test_watch_replays_from_resource_version(store: ResourceStore) -> None:
    await store.create(WIDGET, "w", widget("before"))
    rv = await store.current_rv()
    events: list[WatchEvent] = []

    async def consume() -> None:
        async for event in store.watch(WIDGET, "w", resource_version=str(rv), timeout_seconds=10):
            events.append(event)
            if event.type == "DELETED":
                return

    task = asyncio.create_task(consume())
    await store.create(WIDGET, "w", widget("after"))
    await store.create(WIDGET, "other-ns", widget("elsewhere"))
    await store.patch(WIDGET, "w", "after", {"metadata": {"labels": {"x": "y"}}})
    await store.delete(WIDGET, "w", "after")
    await asyncio.wait_for(task, 10)
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"),
        ("MODIFIED", "after"),
        ("DELETED", "after"),
    ]


async def test_watch_without_resource_version_lists_first(store: ResourceStore) -> None:
    await store.create(WIDGET, "w0", widget("a", {"keep": "yes"}))
    await store.create(WIDGET, "w0", widget("b", {"keep": "no"}))
    got = []
    async for event in store.watch(WIDGET, "w0", label_selector="keep=yes", timeout_seconds=0.5):
        got.append((event.type, event.object["metadata"]["name"]))
    assert got == [("ADDED", "a")]


async def test_watch_from_compacted_resource_version_is_expired(store: ResourceStore) -> None:
    from sqlalchemy import delete

    await store.create(WIDGET, "old", widget("a"))
    stale = await store.current_rv()
    await store.create(WIDGET, "old", widget("b"))
    await store.create(WIDGET, "old", widget("c"))
    # What the relay's retention does to rows published long ago:
    async with store.db.transaction() as s:
        await s.execute(delete(store.outbox).where(store.outbox.c.resource_version <= stale + 1))
    with pytest.raises(ApiError) as exc:
        async for _ in store.watch(WIDGET, "old", resource_version=str(stale), timeout_seconds=1):
            pass
    assert exc.value.code == 410 and exc.value.reason == "Expired"
    # A version that is still covered replays normally.
    seen = [
        e.object["metadata"]["name"]
        async for e in store.watch(
            WIDGET, "old", resource_version=str(stale + 1), timeout_seconds=0.5
        )
    ]
    assert seen == ["c"]
