"""The server side of cookie sessions: which sessions have signed out.

A session cookie is a self-contained encrypted token (``gateway.sessions``), so deleting it
from the browser does not stop a copy of it from working. Every session therefore carries a
random id (``sid``), and signing out records that id here; ``Authenticator`` refuses a cookie
whose id is recorded. It is a deny-list rather than a table of live sessions so that a login
on one gateway replica is usable on every other at once, with no database read per request:
each replica keeps the recorded ids in memory and reloads them every few seconds, so a
sign-out on one replica holds on the others within ``reload_seconds``.

A recorded id is kept for the cookie lifetime (plus a margin) after the sign-out: once
revoked, a session can no longer be refreshed, so every cookie carrying its id was minted
before the sign-out (or within one reload of it) and expires within that lifetime.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import BigInteger, Column, String, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from services.common.db import Database, new_metadata

log = logging.getLogger(__name__)

metadata = new_metadata()

revoked_sessions_table = Table(
    "revoked_sessions",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("user", String(320), nullable=False),
    Column("expires", BigInteger, nullable=False, index=True),
)

#: Kept beyond the cookie lifetime, for a refresh that a lagging replica made meanwhile.
MARGIN_SECONDS = 300


class SessionRevocations:
    """Signed-out session ids, in the gateway's schema and in memory."""

    def __init__(self, db: Database, keep_seconds: int, reload_seconds: float = 5.0) -> None:
        self.db = db
        self.keep_seconds = keep_seconds + MARGIN_SECONDS
        self.reload_seconds = reload_seconds
        self._revoked: frozenset[str] = frozenset()
        self._local: dict[str, int] = {}  # revoked by this replica: sid -> expiry
        self._reloader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.db.ensure_schema()
        async with self.db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        await self.reload()
        self._reloader = asyncio.create_task(self._reload_forever())

    async def stop(self) -> None:
        if self._reloader:
            self._reloader.cancel()

    def is_revoked(self, sid: str) -> bool:
        return sid in self._revoked

    async def revoke(self, sid: str, user: str) -> None:
        """Record ``sid`` as signed out (idempotent); effective here at once."""
        expires = int(time.time()) + self.keep_seconds
        self._local[sid] = expires
        self._revoked = self._revoked | {sid}
        try:
            async with self.db.transaction() as s:
                exists = await s.scalar(
                    select(revoked_sessions_table.c.sid).where(revoked_sessions_table.c.sid == sid)
                )
                if not exists:
                    await s.execute(
                        insert(revoked_sessions_table).values(sid=sid, user=user, expires=expires)
                    )
        except IntegrityError:
            pass  # another replica recorded the same sign-out at the same moment
        log.info("session of %s revoked", user)

    async def reload(self) -> None:
        now = int(time.time())
        async with self.db.transaction() as s:
            await s.execute(
                delete(revoked_sessions_table).where(revoked_sessions_table.c.expires < now)
            )
            stored = frozenset(r.sid for r in await s.execute(select(revoked_sessions_table.c.sid)))
        # A sign-out on this replica whose row a concurrent reload could not see yet stays.
        self._local = {sid: exp for sid, exp in self._local.items() if exp >= now}
        self._revoked = stored | self._local.keys()

    async def _reload_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reload_seconds)
            try:
                async with asyncio.timeout(10):
                    await self.reload()
            except Exception:  # keep the last set: a sign-out is never forgotten early
                log.warning("revoked-session reload failed", exc_info=True)
