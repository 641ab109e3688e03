"""Upgrading a database the previous release filled, and going back (issue 17, item 5).

"The previous release" is the tree just before the last commit that changed a migration
(found with git, so the test always covers the newest upgrade step): its own code migrates
a fresh database to its head and fills it through its own store (tests/upgrades/
previous_release.py, run inside a ``git archive`` of that commit). Today's code then
upgrades every service's schema to head and must find:

- each schema at head and equal to what today's tables declare (an Alembic autogenerate
  comparison finds nothing to add, drop or alter);
- every object readable, byte for byte what the previous release wrote (uid,
  resourceVersion, labels, spec, status), deleted ones still gone;
- every kind's watch history intact: a watch from a resourceVersion replays exactly the
  changes the previous release made, in order, and the next write continues the sequence;
- the services' own records (KFP, AutoML observation logs) readable.

The downgrade path: today's code takes each schema back to the previous release's
revision, and the previous release's code then starts on it and reads everything,
including what was written after the upgrade.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, text
from sqlalchemy.engine import Connection

from services.common import migrate
from services.common.db import Database
from services.common.errors import ApiError
from services.common.events.outbox import stage_event
from services.common.resources import ResourceStore
from tests.conftest import fresh_database

REPO = Path(__file__).resolve().parents[2]
SEED = Path(__file__).with_name("previous_release.py")
SERVICES = ("notebook", "automl", "pipeline", "serving")
NS = "upgrade-team"


def _git(*args: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, timeout=60
    ).stdout


def previous_release() -> str:
    """The commit before the newest change to any service's migrations."""
    paths = [f"services/{s}/migrations/versions" for s in SERVICES]
    newest = _git("log", "-1", "--format=%H", "--", *paths).decode().strip()
    assert newest, "no migration history: this test needs the repository's git history"
    return _git("rev-parse", f"{newest}^").decode().strip()


@pytest.fixture(scope="module")
def previous_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's source tree, from ``git archive``."""
    root = tmp_path_factory.mktemp("previous-release")
    archive = _git("archive", "--format=tar", previous_release())
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database("shipyard_upgrade") as url:
        yield url


def run_previous(tree: Path, mode: str, database_url: str) -> dict[str, Any]:
    """previous_release.py ``mode`` with the previous release's code; its JSON answer."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")},
        "PYTHONPATH": str(tree),
        "SHIPYARD_DATABASE_URL": database_url,
    }
    done = subprocess.run(
        [sys.executable, str(SEED), mode],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _service(name: str) -> tuple[Any, Any, Path]:
    models = importlib.import_module(f"services.{name}.models")
    tables = importlib.import_module(f"services.{name}.tables")
    return models, tables, REPO / "services" / name / "migrations" / "versions"


def _head(versions: Path) -> str:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.SCRIPT_LOCATION))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(versions))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


async def _schema_differences(db: Database, metadata: Any) -> list[Any]:
    """What Alembic's autogenerate would change to make the schema match ``metadata``."""
    async with db.engine.connect() as conn:

        def compare(sync: Connection) -> list[Any]:
            context = MigrationContext.configure(
                sync,
                opts={
                    "include_schemas": False,
                    "version_table_schema": db.schema,
                    "compare_type": True,
                    # Alembic's own table is not declared by any service.
                    "include_name": lambda name, type_, parents: name != "alembic_version",
                },
            )
            return list(compare_metadata(context, metadata))

        await conn.execute(text(f'SET search_path TO "{db.schema}"'))
        return await conn.run_sync(compare)


async def _watch(store: ResourceStore, kind: Any, after: int) -> list[list[Any]]:
    """[kind, type, name, resourceVersion] of every change to ``kind`` after ``after``."""
    seen = []
    async for event in store.watch(kind, None, resource_version=str(after), timeout_seconds=0.5):
        meta = event.object["metadata"]
        seen.append([kind.kind, event.type, meta["name"], int(meta["resourceVersion"])])
    return seen


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "kind": obj.get("kind"),
        "name": meta["name"],
        "uid": meta["uid"],
        "resourceVersion": meta["resourceVersion"],
        "labels": meta.get("labels"),
        "finalizers": meta.get("finalizers"),
        "spec": obj.get("spec"),
        "data": obj.get("data"),
        "status": obj.get("status"),
    }


async def upgrade_and_check(url: str, before: dict[str, Any]) -> dict[str, Any]:
    """Upgrade every schema with today's code and check what the previous release wrote."""
    written: dict[str, Any] = {}
    for name in SERVICES:
        models, tables, versions = _service(name)
        db = Database(url, schema=name)
        try:
            assert await migrate.current_revision(db) == before["revisions"][name]
            await migrate.upgrade(db, tables.metadata, versions)
            assert await migrate.current_revision(db) == _head(versions), name
            assert await _schema_differences(db, tables.metadata) == [], name

            store = ResourceStore(
                db, tables.metadata.tables, source=f"/shipyard/{name}", stage_event=stage_event
            )
            kinds = {k.kind: k for k in models.KINDS}
            old = {(o["kind"], o["metadata"]["name"]): o for o in before["objects"][name]}
            for (kind_name, obj_name), obj in old.items():
                now = await store.get(kinds[kind_name], NS, obj_name)
                assert _comparable({"kind": kind_name, **now}) == _comparable(obj)
            for kind in models.KINDS:
                listed = {o["metadata"]["name"] for o in (await store.list(kind, NS)).items}
                assert listed == {n for k, n in old if k == kind.kind}, kind.kind
            history = before["history"][name]
            for kind_name in {h[0] for h in history}:
                mine = [h for h in history if h[0] == kind_name]
                assert await _watch(store, kinds[kind_name], mine[0][3]) == mine[1:], kind_name
                deleted = {h[2] for h in mine if h[1] == "DELETED"}
                for gone in deleted:
                    with pytest.raises(ApiError) as err:
                        await store.get(kinds[kind_name], NS, gone)
                    assert err.value.code == 404

            # The next write continues the resourceVersion sequence, and a watch from the
            # previous release's last change sees it.
            last = max(h[3] for h in history)
            target = before["objects"][name][0]
            kind = kinds[target["kind"]]
            fresh = await store.patch(
                kind,
                NS,
                target["metadata"]["name"],
                {"metadata": {"labels": {"release": "current"}}},
            )
            assert int(fresh["metadata"]["resourceVersion"]) == last + 1
            assert [e[3] for e in await _watch(store, kind, last)] == [last + 1]
            written[name] = fresh
        finally:
            await db.dispose()

    # The services' own records.
    from services.pipeline.kfp_store import KfpStore

    _, pipeline_tables, _ = _service("pipeline")
    db = Database(url, schema="pipeline")
    try:
        kfp = KfpStore(db, dict(pipeline_tables.metadata.tables))
        for table, ids in before["rows"]["pipeline"].items():
            assert sorted(r["id"] for r in await kfp.rows(table)) == sorted(ids), table
        run = (await kfp.rows("kfp_runs"))[0]
        assert (run["state"], run["workflow"], run["body"]) == ("SUCCEEDED", "workflow-a", {"x": 1})
        async with db.transaction() as s:  # the table the upgrade added takes records
            await s.execute(
                insert(pipeline_tables.metadata.tables["kfp_artifacts"]).values(
                    namespace=NS,
                    run_id="r-1",
                    workflow="workflow-a",
                    node_id="n",
                    task_name="t",
                    name="model",
                    uri="s3://mlpipeline/x",
                    artifact_type="Model",
                    properties={},
                    size=1,
                    created_at=run["created_at"],
                    updated_at=run["created_at"],
                )
            )
    finally:
        await db.dispose()
    _, automl_tables, _ = _service("automl")
    db = Database(url, schema="automl")
    try:
        async with db.sessions() as s:
            names = (
                await s.execute(text('SELECT trial_name FROM "automl".observation_logs'))
            ).all()
        assert [n for (n,) in names] == before["rows"]["automl"]["observation_logs"]
    finally:
        await db.dispose()
    return written


def downgrade_to(url: str, revisions: dict[str, str]) -> str:
    """``shipyard migrate --downgrade SERVICE=REVISION ...``, as an operator runs it; its
    output. Then each schema is at its revision."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")},
        "SHIPYARD_DATABASE_URL": url,
    }
    argv = [sys.executable, "-c", "import sys; from shipyard.cli import main; sys.exit(main())"]
    argv.append("migrate")
    for name, revision in revisions.items():
        argv += ["--downgrade", f"{name}={revision}"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]

    async def check() -> None:
        for name in SERVICES:
            db = Database(url, schema=name)
            try:
                assert await migrate.current_revision(db) == revisions[name]
                if name == "pipeline" and revisions[name] < "0003":  # what 0003 added is gone
                    async with db.sessions() as s:
                        found = await s.scalar(text("SELECT to_regclass('pipeline.kfp_artifacts')"))
                    assert found is None
            finally:
                await db.dispose()

    asyncio.run(check())
    return done.stdout


def test_upgrade_from_previous_release_keeps_objects_and_watch_history(
    previous_tree: Path, database: str
) -> None:
    before = run_previous(previous_tree, "seed", database)
    heads = {name: _head(_service(name)[2]) for name in SERVICES}
    changed = {n for n in SERVICES if before["revisions"][n] != heads[n]}
    assert changed, f"the previous release's schema is the current one: {before['revisions']}"
    assert sum(len(v) for v in before["objects"].values()) >= 8, before["objects"]

    written = asyncio.run(upgrade_and_check(database, before))

    # Back to the previous release: today's code downgrades, the previous release starts
    # on the result (its start-up migrates to its own head) and reads every object.
    said = downgrade_to(database, before["revisions"])
    assert "pipeline: 0003 -> 0002" in said or "pipeline" not in changed, said
    after = run_previous(previous_tree, "read", database)
    assert after["revisions"] == before["revisions"]
    for name in SERVICES:
        expected = {
            (o["kind"], o["metadata"]["name"]): _comparable(o) for o in before["objects"][name]
        }
        new = written[name]
        expected[(new["kind"], new["metadata"]["name"])] = _comparable(new)
        got = {(o["kind"], o["metadata"]["name"]): _comparable(o) for o in after["objects"][name]}
        assert got == expected, name
        assert after["history"][name][: len(before["history"][name])] == before["history"][name]
        assert after["history"][name][-1][3] == int(new["metadata"]["resourceVersion"]), name
