"""Runs INSIDE a checkout of an earlier release, with that release's code (the test sets the
working directory and PYTHONPATH to it): ``seed`` migrates a database to that release's
head and fills it through that release's own store (objects with a history of changes,
KFP records, AutoML observation logs); ``read`` starts as that release's services would
(migrating to its head, which fails on a schema it does not know) and reads every object.

Only APIs that every release since the kernel tables has kept are used here. The database
URL comes in ``SHIPYARD_DATABASE_URL``; one JSON document goes to stdout.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SERVICES = ("notebook", "automl", "pipeline", "serving")
NS = "upgrade-team"
MIGRATE_OK = "migrated"


def _load_specs() -> Any:
    """Today's tests/specs.py (it needs only the standard library), loaded by its path: this
    script runs with the previous release's tree first on ``sys.path``."""
    spec = importlib.util.spec_from_file_location(
        "shipyard_test_specs", Path(__file__).resolve().parents[1] / "specs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_STEP = {"image": "alpine", "command": ["sh", "-c", "echo hi"]}
_WORKFLOW_SPEC = {"entrypoint": "main", "templates": [{"name": "main", "container": _STEP}]}
_EXPERIMENT_SPEC = _load_specs().experiment(
    "seed",
    ["python", "-c", "print('loss=1')", "${trialParameters.x}"],
    maxTrialCount=2,
    parallelTrialCount=1,
)["spec"]
# The body of each kind a user creates (Trials and Suggestions are the controller's).
BODIES: dict[str, dict[str, Any]] = {
    "PersistentVolumeClaim": {
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}
    },
    "Notebook": {
        "spec": {"template": {"spec": {"containers": [{"name": "nb", "image": "jupyter"}]}}}
    },
    "Experiment": {"spec": _EXPERIMENT_SPEC},
    "ConfigMap": {"data": {"greeting": "hello"}},
    "Workflow": {"spec": _WORKFLOW_SPEC},
    "CronWorkflow": {"spec": {"schedule": "0 0 1 1 *", "workflowSpec": _WORKFLOW_SPEC}},
    "WorkflowTemplate": {"spec": _WORKFLOW_SPEC},
    "InferenceService": {
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://models/m"}
            }
        }
    },
}


def _service(name: str) -> tuple[Any, Any, Path]:
    """(models, tables, versions dir) of a service in this checkout."""
    models = importlib.import_module(f"services.{name}.models")
    tables = importlib.import_module(f"services.{name}.tables")
    versions = Path(f"services/{name}/migrations/versions").resolve()
    return models, tables, versions


async def _revision(db: Any, schema: str) -> str:
    from sqlalchemy import text

    async with db.engine.connect() as conn:
        return str(
            (
                await conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version'))
            ).scalar()
        )


async def _objects(store: Any, kinds: Any) -> list[dict[str, Any]]:
    found = []
    for kind in kinds:
        for obj in (await store.list(kind, None)).items:
            found.append({"kind": kind.kind, **obj})
    return found


async def _history(db: Any, outbox: Any) -> list[list[Any]]:
    """[kind, type, name, resourceVersion] of every resource event, in resourceVersion order."""
    from sqlalchemy import select

    from services.common.resources.codec import parse_resource_event

    async with db.sessions() as s:
        rows = (
            await s.execute(
                select(outbox.c.kind, outbox.c.resource_version, outbox.c.payload)
                .where(outbox.c.kind.is_not(None))
                .order_by(outbox.c.resource_version)
            )
        ).all()
    out = []
    for kind, rv, payload in rows:
        msg = parse_resource_event(payload)
        out.append([kind, msg.type, json.loads(msg.object_json)["metadata"]["name"], int(rv)])
    return out


async def _seed_rows(name: str, db: Any, tables: Any) -> dict[str, list[str]]:
    """Records of the service's own tables, written as that release writes them."""
    from sqlalchemy import insert

    now = datetime.now(UTC)
    t = tables.metadata.tables
    rows: dict[str, list[dict[str, Any]]] = {}
    if name == "pipeline":
        rows = {
            "kfp_experiments": [
                {
                    "id": "e-1",
                    "namespace": NS,
                    "display_name": "exp",
                    "description": "",
                    "storage_state": "AVAILABLE",
                    "created_at": now,
                }
            ],
            "kfp_pipelines": [
                {
                    "id": "p-1",
                    "namespace": NS,
                    "display_name": "pipe",
                    "description": "",
                    "created_at": now,
                }
            ],
            "kfp_versions": [
                {
                    "id": "v-1",
                    "pipeline_id": "p-1",
                    "display_name": "v1",
                    "description": "",
                    "spec": {"pipelineInfo": {"name": "pipe"}},
                    "created_at": now,
                }
            ],
            "kfp_runs": [
                {
                    "id": "r-1",
                    "namespace": NS,
                    "experiment_id": "e-1",
                    "display_name": "run",
                    "description": "",
                    "storage_state": "AVAILABLE",
                    "state": "SUCCEEDED",
                    "workflow": "workflow-a",
                    "recurring_run_id": "",
                    "body": {"x": 1},
                    "created_at": now,
                    "finished_at": now,
                }
            ],
        }
    elif name == "automl":
        rows = {
            "observation_logs": [
                {
                    "namespace": NS,
                    "trial_name": "t-1",
                    "metric_name": "loss",
                    "value": "0.5",
                    "step": 1,
                    "time": now,
                }
            ]
        }
    async with db.transaction() as s:
        for table, values in rows.items():
            await s.execute(insert(t[table]).values(values))
    return {
        table: [str(v.get("id", v.get("trial_name"))) for v in values]
        for table, values in rows.items()
    }


async def seed() -> dict[str, Any]:
    from services.common import migrate
    from services.common.db import Database
    from services.common.events.outbox import stage_event
    from services.common.resources import ResourceStore

    url = os.environ["SHIPYARD_DATABASE_URL"]
    out: dict[str, Any] = {"revisions": {}, "objects": {}, "history": {}, "rows": {}}
    for name in SERVICES:
        models, tables, versions = _service(name)
        db = Database(url, schema=name)
        try:
            await migrate.upgrade(db, tables.metadata, versions)
            store = ResourceStore(
                db, tables.metadata.tables, source=f"/shipyard/{name}", stage_event=stage_event
            )
            for kind in models.KINDS:
                body = BODIES.get(kind.kind)
                if body is None:
                    continue
                for suffix in ("a", "b"):
                    obj = {
                        "apiVersion": kind.api_version,
                        "kind": kind.kind,
                        "metadata": {"name": f"{kind.singular}-{suffix}", "namespace": NS},
                        **json.loads(json.dumps(body)),
                    }
                    await store.create(kind, NS, obj)
                a, b = f"{kind.singular}-a", f"{kind.singular}-b"
                await store.patch(kind, NS, a, {"metadata": {"labels": {"release": "previous"}}})
                await store.update_status(kind, NS, a, {"observedBy": "previous-release"})
                await store.delete(kind, NS, b)
                if kind.finalizer:
                    await store.remove_finalizer(kind, NS, b, kind.finalizer)
            out["revisions"][name] = await _revision(db, name)
            out["objects"][name] = await _objects(store, models.KINDS)
            out["history"][name] = await _history(db, tables.metadata.tables["outbox"])
            out["rows"][name] = await _seed_rows(name, db, tables)
        finally:
            await db.dispose()
    return out


async def read() -> dict[str, Any]:
    from services.common import migrate
    from services.common.db import Database
    from services.common.resources import ResourceStore

    url = os.environ["SHIPYARD_DATABASE_URL"]
    out: dict[str, Any] = {"revisions": {}, "objects": {}, "history": {}}
    for name in SERVICES:
        models, tables, versions = _service(name)
        db = Database(url, schema=name)
        try:
            await migrate.upgrade(db, tables.metadata, versions)  # what its start-up does
            store = ResourceStore(db, tables.metadata.tables, source=f"/shipyard/{name}")
            out["revisions"][name] = await _revision(db, name)
            out["objects"][name] = await _objects(store, models.KINDS)
            out["history"][name] = await _history(db, tables.metadata.tables["outbox"])
        finally:
            await db.dispose()
    return out


if __name__ == "__main__":
    mode = sys.argv[1]
    result = asyncio.run(seed() if mode == "seed" else read())
    sys.stdout.write(json.dumps(result, default=str) + "\n")
