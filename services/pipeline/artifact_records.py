"""Records of the artifacts KFP tasks produced: what ``/apis/v2beta1/artifacts`` lists.

The bytes live in the object store (``s3://<bucket>/v2/artifacts/<ns>/...``); a record says
which run, task and output an object belongs to, so the API can list a namespace's artifacts
and sign a download URL without walking the bucket. A record is written only after its
object is fully uploaded (issue 11: upload, then record), by the step collector
(``kfp_exec.collect``), and recording is idempotent on (run_id, node_id, name): a redelivered
event or a collector that restarts mid-run finds the row it wrote before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.common.db import Database
from services.pipeline.tables import metadata

ARTIFACTS: Table = metadata.tables["kfp_artifacts"]

#: Sortable fields of a listing, by the names KFP's two artifact APIs use.
SORT_FIELDS = {
    "id": "id",
    "artifact_id": "id",
    "ID": "id",
    "created_at": "created_at",
    "CREATE_TIME": "created_at",
    "last_updated_at": "updated_at",
    "LAST_UPDATE_TIME": "updated_at",
}


async def record_artifact(
    db: Database,
    *,
    namespace: str,
    run_id: str,
    workflow: str,
    node_id: str,
    task_name: str,
    name: str,
    uri: str,
    artifact_type: str,
    metadata: dict[str, Any],
    size: int | None,
) -> str:
    """Record one output artifact of a finished task; its id (a decimal string, as MLMD's).

    Recording (run_id, node_id, name) again returns the first id; if uri, type, metadata
    or size changed (a retried task wrote its output again), the row takes the new values.
    """
    values = {
        "namespace": namespace,
        "workflow": workflow,
        "task_name": task_name,
        "uri": uri,
        "artifact_type": artifact_type,
        "properties": dict(metadata),
        "size": size,
    }
    key = (
        (ARTIFACTS.c.run_id == run_id)
        & (ARTIFACTS.c.node_id == node_id)
        & (ARTIFACTS.c.name == name)
    )
    now = datetime.now(UTC)
    for _ in range(2):  # a concurrent first record wins the insert; the loser reads its row
        async with db.transaction() as s:
            row = (await s.execute(select(ARTIFACTS).where(key).with_for_update())).first()
            if row is not None:
                current = dict(row._mapping)
                if any(current[k] != v for k, v in values.items()):
                    await s.execute(
                        update(ARTIFACTS)
                        .where(ARTIFACTS.c.id == current["id"])
                        .values(**values, updated_at=now)
                    )
                return str(current["id"])
        try:
            async with db.transaction() as s:
                inserted = await s.execute(
                    insert(ARTIFACTS)
                    .values(
                        **values,
                        run_id=run_id,
                        node_id=node_id,
                        name=name,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(ARTIFACTS.c.id)
                )
                return str(inserted.scalar_one())
        except IntegrityError:
            continue
    raise RuntimeError(f"could not record artifact {name!r} of run {run_id} node {node_id}")


async def delete_run_artifacts(db: Database, run_id: str) -> int:
    """Forget every artifact record of a run (the objects stay, as in KFP); how many."""
    async with db.transaction() as s:
        result = await s.execute(delete(ARTIFACTS).where(ARTIFACTS.c.run_id == run_id))
    return int(getattr(result, "rowcount", 0) or 0)


async def read_artifact(db: Database, artifact_id: str) -> dict[str, Any] | None:
    """One record by id, or None (also for an id that is not a number)."""
    if not artifact_id.isdigit() or len(artifact_id) > 18:
        return None
    async with db.sessions() as s:
        row = (await s.execute(select(ARTIFACTS).where(ARTIFACTS.c.id == int(artifact_id)))).first()
    return dict(row._mapping) if row is not None else None


@dataclass(frozen=True)
class ArtifactPage:
    rows: list[dict[str, Any]]
    total: int
    next_offset: int | None  # None: this was the last page


async def list_artifacts(
    db: Database,
    namespace: str,
    *,
    offset: int = 0,
    limit: int = 20,
    sort_field: str = "id",
    descending: bool = False,
) -> ArtifactPage:
    """One page of ``namespace``'s records, ordered by ``sort_field`` (then id)."""
    column = ARTIFACTS.c[SORT_FIELDS.get(sort_field, "id")]
    order = [column.desc(), ARTIFACTS.c.id.desc()] if descending else [column, ARTIFACTS.c.id]
    where = ARTIFACTS.c.namespace == namespace
    async with db.sessions() as s:
        total = int(
            (await s.execute(select(func.count()).select_from(ARTIFACTS).where(where))).scalar_one()
        )
        rows = (
            await s.execute(
                select(ARTIFACTS).where(where).order_by(*order).offset(offset).limit(limit)
            )
        ).all()
    more = offset + limit < total
    return ArtifactPage([dict(r._mapping) for r in rows], total, offset + limit if more else None)
