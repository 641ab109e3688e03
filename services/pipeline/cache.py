"""Step memoization: outputs of a successful step, by (namespace, key of template + inputs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.common.db import Database


class StepCache:
    """The engine's Cache, in the ``step_cache`` table; ``enabled=False`` turns it off globally.

    ``usable(outputs)`` says whether a hit can still be used: its artifacts may have been
    deleted with the workflow that made them, and a hit that points at nothing would fail the
    steps that read it. An unusable hit is a miss (the step runs again and replaces it).
    """

    def __init__(
        self,
        db: Database,
        table: Table,
        *,
        enabled: bool = True,
        usable: Callable[[dict[str, Any]], Awaitable[bool]] | None = None,
    ) -> None:
        self.db = db
        self.table = table
        self.enabled = enabled
        self.usable = usable

    async def get(self, namespace: str, key: str, max_age: float | None) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        query = select(self.table.c.outputs, self.table.c.created_at).where(
            self.table.c.namespace == namespace, self.table.c.key == key
        )
        async with self.db.sessions() as s:
            row = (await s.execute(query)).first()
        if row is None:
            return None
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        if max_age is not None and datetime.now(UTC) - created > timedelta(seconds=max_age):
            return None
        outputs = dict(row.outputs)
        if self.usable is not None and not await self.usable(outputs):
            return None
        return outputs

    async def put(
        self, namespace: str, key: str, outputs: dict[str, Any], workflow: str, node: str
    ) -> None:
        if not self.enabled:
            return
        values = {
            "namespace": namespace,
            "key": key,
            "outputs": outputs,
            "workflow": workflow,
            "node": node,
            "created_at": datetime.now(UTC),
        }
        insert = pg_insert if self.db.is_postgres else sqlite_insert
        stmt = insert(self.table).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["namespace", "key"],
            set_={k: stmt.excluded[k] for k in ("outputs", "workflow", "node", "created_at")},
        )
        async with self.db.transaction() as s:
            await s.execute(stmt)

    async def clear(self, namespace: str | None = None) -> None:
        stmt = delete(self.table)
        if namespace:
            stmt = stmt.where(self.table.c.namespace == namespace)
        async with self.db.transaction() as s:
            await s.execute(stmt)
