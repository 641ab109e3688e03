"""Persistence, concurrency and change events for Kubernetes-style objects.

Every write runs in one transaction that (1) takes the next resourceVersion from
the service's counter, (2) writes the object, and (3) stages a ``ResourceEvent``
in the outbox. The counter row lock serialises writers, so resourceVersions,
outbox ids and publish order agree; watches rely on that.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import copy
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Database
from services.common.errors import ApiError, Cause, causes_from_validation
from services.common.resources.kinds import ResourceKind
from services.common.resources.names import (
    check_annotations,
    check_labels,
    check_meta_strings,
    check_name,
    check_namespace,
    generate_name,
)
from services.common.resources.patch import apply_patch
from services.common.resources.selectors import parse_selector
from services.common.timestamps import now_rfc3339

log = logging.getLogger(__name__)

RV_COUNTER = "resourceVersion"
TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
_IMMUTABLE_META = ("uid", "creationTimestamp", "name", "namespace")
_SERVER_META = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "selfLink",
    "managedFields",
)
WATCH_CATCHUP_SECONDS = 2.0
MAX_WATCH_SECONDS = 3600


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, ERROR
    object: dict[str, Any]


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    resource_version: int
    continue_token: str | None


EventStager = Callable[..., Any]
DeleteGuard = Callable[[dict[str, Any]], Awaitable[None]]
# admission(session, new, current): checks (and may complete) a write of ``new`` inside its
# transaction, where it can read the service's other objects; ``current`` is None on create.
Admission = Callable[[AsyncSession, dict[str, Any], dict[str, Any] | None], Awaitable[None]]


class ResourceStore:
    """Objects of every kind a service serves, in that service's ``objects`` table."""

    def __init__(
        self,
        db: Database,
        tables: Mapping[str, Table],
        *,
        source: str,
        stage_event: EventStager | None = None,
        live_events: Callable[[str], Any] | None = None,
    ) -> None:
        self.db = db
        self.objects = tables["objects"]
        self.counters = tables["counters"]
        self.outbox = tables["outbox"]
        self.source = source
        self._stage_event = stage_event
        # live_events(subject) -> async context manager yielding an asyncio.Queue that
        # receives a payload per change on that subject (a NATS subscription).
        self.live_events = live_events
        # Outbox reads in flight (services.common.resources.watching), by (kind, namespace,
        # after): watches that ask the same at the same moment (every watch of a kind woken
        # by one write, or by the shared catch-up tick) share one query instead of one each.
        self.watch_reads: dict[tuple[str, str | None, int], asyncio.Future[Any]] = {}
        self._listeners: list[Callable[[ResourceKind, WatchEvent], None]] = []
        self._delete_guards: dict[str, DeleteGuard] = {}
        self._admissions: dict[str, Admission] = {}

    # ----------------------------------------------------------------- helpers
    def add_listener(self, listener: Callable[[ResourceKind, WatchEvent], None]) -> None:
        """Call ``listener`` after each committed change (in-process controllers use it)."""
        self._listeners.append(listener)

    def notify(self, kind: ResourceKind, event: WatchEvent) -> None:
        """Tell the listeners of a change: one committed here, or by another replica (the
        leader's ``ChangeFeed``)."""
        for listener in self._listeners:
            try:
                listener(kind, event)
            except Exception:  # a listener must not break the write path
                log.exception("resource listener failed")

    def add_delete_guard(self, kind: ResourceKind, guard: DeleteGuard) -> None:
        """Run ``guard(obj)`` before deleting an object of ``kind``; ApiError refuses."""
        self._delete_guards[kind.kind] = guard

    def add_admission(self, kind: ResourceKind, admission: Admission) -> None:
        """Run ``admission(session, new, current)`` on each create, replace and patch of
        ``kind`` (not on status writes); an ApiError refuses the write."""
        self._admissions[kind.kind] = admission

    async def _admit(
        self,
        s: AsyncSession,
        kind: ResourceKind,
        new: dict[str, Any],
        current: dict[str, Any] | None,
    ) -> None:
        admission = self._admissions.get(kind.kind)
        if admission is not None:
            await admission(s, new, current)

    async def _next_rv(self, session: AsyncSession) -> int:
        """The next resourceVersion, in the caller's transaction (the row stays locked until
        it ends, as etcd's revision orders writes). One upsert: the first writes of a fresh
        database, however many at once, neither race nor fail on the counter's creation."""
        upsert = pg_insert if self.db.is_postgres else sqlite_insert
        stmt = (
            upsert(self.counters)
            .values(name=RV_COUNTER, value=1)
            .on_conflict_do_update(
                index_elements=[self.counters.c.name], set_={"value": self.counters.c.value + 1}
            )
            .returning(self.counters.c.value)
        )
        return int((await session.execute(stmt)).scalar_one())

    async def current_rv(self, session: AsyncSession | None = None) -> int:
        query = select(self.counters.c.value).where(self.counters.c.name == RV_COUNTER)
        if session is not None:
            value = (await session.execute(query)).scalar()
        else:
            async with self.db.sessions() as s:
                value = (await s.execute(query)).scalar()
        return int(value or 0)

    def _where(self, kind: ResourceKind, namespace: str | None, name: str):  # type: ignore[no-untyped-def]
        return and_(
            self.objects.c.kind == kind.kind,
            self.objects.c.namespace == (namespace or ""),
            self.objects.c.name == name,
        )

    async def load(
        self,
        session: AsyncSession,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        lock: bool = False,
    ) -> dict[str, Any]:
        """One object, read in the caller's session (``lock``: held FOR UPDATE until it ends).

        Public for controllers that read, decide and write in one transaction (with
        :meth:`write_status`); NotFound as an ApiError."""
        query = select(self.objects.c.body).where(self._where(kind, namespace, name))
        if lock and self.db.is_postgres:
            query = query.with_for_update()
        body = (await session.execute(query)).scalar()
        if body is None:
            raise ApiError.not_found(kind.plural, name, kind.group)
        return body

    async def _emit(
        self,
        session: AsyncSession,
        kind: ResourceKind,
        event_type: str,
        obj: dict[str, Any],
        rv: int,
    ) -> None:
        pending = session.info.setdefault("shipyard_events", [])
        pending.append((kind, WatchEvent(event_type, copy.deepcopy(obj))))
        if self._stage_event is None:
            return
        from services.common.resources.codec import resource_event

        meta = obj["metadata"]
        published = {k: v for k, v in obj.items() if k not in kind.event_omit}
        message = resource_event(
            type=event_type,
            api_version=kind.api_version,
            kind=kind.kind,
            namespace=meta.get("namespace", ""),
            name=meta["name"],
            uid=meta["uid"],
            resource_version=rv,
            object_json=json.dumps(published, separators=(",", ":")).encode(),
        )
        ns = meta.get("namespace")
        await self._stage_event(
            session,
            self.outbox,
            kind.subject(event_type.lower()),
            message,
            source=self.source,
            ce_type=f"io.shipyard.{kind.service}.{kind.singular}.{event_type.lower()}",
            ce_subject=(
                f"namespaces/{ns}/{kind.plural}/{meta['name']}"
                if ns
                else f"{kind.plural}/{meta['name']}"
            ),
            kind=kind.kind,
            namespace=ns or "",
            resource_version=rv,
        )

    def _committed(self, session: AsyncSession) -> None:
        pending = session.info.pop("shipyard_events", [])
        for kind, event in pending:
            self.notify(kind, event)

    async def _in_tx(self, session: AsyncSession | None, fn: Callable[[AsyncSession], Any]) -> Any:
        if session is not None:
            return await fn(session)
        try:
            async with self.db.transaction() as s:
                result = await fn(s)
                events = s.info.get("shipyard_events")
            if events:
                s.info["shipyard_events"] = events
            self._committed(s)
            return result
        except IntegrityError:
            # Two creates of one name raced; the loser hears what a later one would.
            raise ApiError.created_concurrently() from None

    # ------------------------------------------------------------- validation
    def validate(self, kind: ResourceKind, obj: Any, namespace: str | None) -> dict[str, Any]:
        """Check an incoming object and return it normalised (spec defaults applied)."""
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON or YAML object")
        causes: list[Cause] = []
        for key in obj:
            if key not in TOP_LEVEL and key not in kind.extra_top_level:
                causes.append(Cause(key, "unknown field", "FieldValueNotSupported"))
        api_version, obj_kind = obj.get("apiVersion"), obj.get("kind")
        if api_version not in (None, kind.api_version):
            causes.append(Cause("apiVersion", f"must be {kind.api_version!r}, not {api_version!r}"))
        if obj_kind not in (None, kind.kind):
            causes.append(Cause("kind", f"must be {kind.kind!r}, not {obj_kind!r}"))
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ApiError.invalid(kind.kind, "", [Cause("metadata", "must be an object")])
        meta = dict(meta)
        wrong = check_meta_strings(meta)
        if wrong:
            raise ApiError.invalid(kind.kind, "", wrong)
        if kind.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request",
                )
            meta["namespace"] = namespace or body_ns
            if not meta["namespace"]:
                causes.append(Cause("metadata.namespace", "Required value", "FieldValueRequired"))
            else:
                causes += check_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        causes += check_labels(meta.get("labels"))
        causes += check_annotations(meta.get("annotations"))
        spec = obj.get("spec")
        if kind.spec_model is not None:
            try:
                model = kind.spec_model.model_validate(spec if spec is not None else {})
                spec = model.model_dump(by_alias=True, exclude_none=True, mode="json")
            except ValidationError as exc:
                causes += causes_from_validation(exc, prefix="spec")
        out = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta}
        if spec is not None or kind.spec_model is not None:
            out["spec"] = spec if spec is not None else {}
        for key in kind.extra_top_level:
            if key in obj:
                out[key] = obj[key]
        if "status" in obj:
            out["status"] = obj["status"]
        if not causes and kind.validate is not None:
            causes += list(kind.validate(out))
        if causes:
            raise ApiError.invalid(
                kind.kind, meta.get("name") or meta.get("generateName") or "", causes
            )
        return out

    # ------------------------------------------------------------------ writes
    async def create(
        self,
        kind: ResourceKind,
        namespace: str | None,
        obj: Any,
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        new = self.validate(kind, obj, namespace)
        meta = new["metadata"]
        for key in _SERVER_META:
            meta.pop(key, None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generate_name(str(meta["generateName"]))
        causes = check_name(meta.get("name") or "")
        if causes:
            raise ApiError.invalid(kind.kind, meta.get("name") or "", causes)
        new["status"] = {}
        if kind.finalizer:
            meta["finalizers"] = sorted({*meta.get("finalizers", []), kind.finalizer})

        async def run(s: AsyncSession) -> dict[str, Any]:
            exists = (
                await s.execute(
                    select(self.objects.c.uid).where(
                        self._where(kind, meta.get("namespace"), meta["name"])
                    )
                )
            ).first()
            if exists:
                raise ApiError.already_exists(kind.plural, meta["name"], kind.group)
            await self._admit(s, kind, new, None)
            rv = await self._next_rv(s)
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(rv),
                generation=1,
                creationTimestamp=now_rfc3339(),
            )
            await s.execute(
                insert(self.objects).values(
                    uid=meta["uid"],
                    kind=kind.kind,
                    namespace=meta.get("namespace") or "",
                    name=meta["name"],
                    resource_version=rv,
                    body=new,
                    created_at=datetime.now(UTC),
                    deleting=0,
                )
            )
            await self._emit(s, kind, "ADDED", new, rv)
            return new

        return await self._in_tx(session, run)

    async def _write(
        self, s: AsyncSession, kind: ResourceKind, current: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return await self._remove(s, kind, new)
        rv = await self._next_rv(s)
        meta["resourceVersion"] = str(rv)
        await s.execute(
            update(self.objects)
            .where(self.objects.c.uid == current["metadata"]["uid"])
            .values(
                resource_version=rv, body=new, deleting=1 if meta.get("deletionTimestamp") else 0
            )
        )
        await self._emit(s, kind, "MODIFIED", new, rv)
        return new

    async def _remove(
        self, s: AsyncSession, kind: ResourceKind, obj: dict[str, Any]
    ) -> dict[str, Any]:
        rv = await self._next_rv(s)
        obj["metadata"]["resourceVersion"] = str(rv)
        await s.execute(delete(self.objects).where(self.objects.c.uid == obj["metadata"]["uid"]))
        await self._emit(s, kind, "DELETED", obj, rv)
        return obj

    @staticmethod
    def _check_rv(kind: ResourceKind, current: dict[str, Any], incoming_rv: Any) -> None:
        if (
            incoming_rv not in (None, "")
            and str(incoming_rv) != current["metadata"]["resourceVersion"]
        ):
            raise ApiError.conflict(
                kind.plural,
                current["metadata"]["name"],
                "the object has been modified; please apply your changes "
                "to the latest version and try again",
            )

    async def replace(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        obj: Any,
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        """PUT: replace metadata and spec; status is only written through ``/status``."""
        new = self.validate(kind, obj, namespace)
        if (new["metadata"].get("name") or name) != name:
            raise ApiError(
                400,
                f"the name of the object ({new['metadata'].get('name')}) does "
                f"not match the name on the URL ({name})",
            )

        async def run(s: AsyncSession) -> dict[str, Any]:
            current = await self.load(s, kind, namespace, name, lock=True)
            self._check_rv(kind, current, new["metadata"].get("resourceVersion"))
            await self._admit(s, kind, new, current)
            return await self._write(s, kind, current, self._merge_server_fields(current, new))

        return await self._in_tx(session, run)

    @staticmethod
    def _merge_server_fields(current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        meta, old_meta = new["metadata"], current["metadata"]
        for key in _IMMUTABLE_META + ("generation", "deletionTimestamp"):
            if key in old_meta:
                meta[key] = old_meta[key]
        if old_meta.get("deletionTimestamp"):
            # Finalizers may only be removed while deleting, never added.
            meta["finalizers"] = [
                f for f in meta.get("finalizers", []) if f in old_meta.get("finalizers", [])
            ]
        if new.get("spec") != current.get("spec"):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        new["status"] = current.get("status", {})
        return new

    async def patch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str = "application/merge-patch+json",
        *,
        subresource: str | None = None,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        async def run(s: AsyncSession) -> dict[str, Any]:
            current = await self.load(s, kind, namespace, name, lock=True)
            patched = apply_patch(current, patch, content_type)
            if subresource == "status":
                return await self.write_status(s, kind, current, patched)
            self._check_rv(
                kind,
                current,
                (patch.get("metadata") or {}).get("resourceVersion")
                if isinstance(patch, dict)
                else None,
            )
            patched["metadata"]["resourceVersion"] = None
            new = self.validate(kind, patched, namespace)
            await self._admit(s, kind, new, current)
            return await self._write(s, kind, current, self._merge_server_fields(current, new))

        return await self._in_tx(session, run)

    async def write_status(
        self, s: AsyncSession, kind: ResourceKind, current: dict[str, Any], incoming: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace ``current``'s status with ``incoming["status"]`` in the caller's session (its
        event staged in the same transaction); the new object."""
        status = incoming.get("status") or {}
        if not isinstance(status, dict):
            raise ApiError.invalid(
                kind.kind, current["metadata"]["name"], [Cause("status", "must be an object")]
            )
        new = copy.deepcopy(current)
        new["status"] = status
        if new == current:
            return current
        return await self._write(s, kind, current, new)

    async def replace_status(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        obj: Any,
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        """PUT .../status, and what controllers call to record observed state."""
        if not isinstance(obj, dict):
            raise ApiError(400, "the request body must be a JSON or YAML object")

        async def run(s: AsyncSession) -> dict[str, Any]:
            current = await self.load(s, kind, namespace, name, lock=True)
            self._check_rv(kind, current, (obj.get("metadata") or {}).get("resourceVersion"))
            return await self.write_status(s, kind, current, obj)

        return await self._in_tx(session, run)

    async def update_status(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        status: dict[str, Any],
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        """Set an object's whole status (controllers; no resourceVersion check)."""
        return await self.replace_status(kind, namespace, name, {"status": status}, session=session)

    async def delete(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        """Delete now, or mark ``deletionTimestamp`` while finalizers remain."""
        guard = self._delete_guards.get(kind.kind)
        if guard is not None:
            await guard(await self.get(kind, namespace, name))

        async def run(s: AsyncSession) -> dict[str, Any]:
            current = await self.load(s, kind, namespace, name, lock=True)
            if current["metadata"].get("finalizers"):
                if current["metadata"].get("deletionTimestamp"):
                    return current
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                return await self._write(s, kind, current, new)
            return await self._remove(s, kind, copy.deepcopy(current))

        return await self._in_tx(session, run)

    async def remove_finalizer(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        finalizer: str,
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any] | None:
        """Drop ``finalizer``; the object goes away if it was being deleted and none remain."""

        async def run(s: AsyncSession) -> dict[str, Any] | None:
            try:
                current = await self.load(s, kind, namespace, name, lock=True)
            except ApiError:
                return None
            if finalizer not in current["metadata"].get("finalizers", []):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["finalizers"] = [
                f for f in new["metadata"]["finalizers"] if f != finalizer
            ]
            return await self._write(s, kind, current, new)

        return await self._in_tx(session, run)

    # ------------------------------------------------------------------- reads
    async def get(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any]:
        if session is not None:
            return await self.load(session, kind, namespace, name)
        async with self.db.sessions() as s:
            return await self.load(s, kind, namespace, name)

    async def find(
        self,
        kind: ResourceKind,
        namespace: str | None,
        name: str,
        *,
        session: AsyncSession | None = None,
    ) -> dict[str, Any] | None:
        """The object, or None when there is none."""
        try:
            return await self.get(kind, namespace, name, session=session)
        except ApiError:
            return None

    async def list(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Page:
        """One page of objects ordered by (namespace, name); ``namespace=None`` means all."""
        match = parse_selector(label_selector)
        field_match = _field_selector(field_selector)
        after = _decode_continue(continue_token) if continue_token else None
        chunk = 500
        items: list[dict[str, Any]] = []
        more = False
        async with self.db.sessions() as s:
            rv = await self.current_rv(s)
            cursor = after
            while True:
                query = select(
                    self.objects.c.namespace, self.objects.c.name, self.objects.c.body
                ).where(self.objects.c.kind == kind.kind)
                if namespace is not None:
                    query = query.where(self.objects.c.namespace == namespace)
                if cursor is not None:
                    query = query.where(
                        or_(
                            self.objects.c.namespace > cursor[0],
                            and_(
                                self.objects.c.namespace == cursor[0],
                                self.objects.c.name > cursor[1],
                            ),
                        )
                    )
                rows = (
                    await s.execute(
                        query.order_by(self.objects.c.namespace, self.objects.c.name).limit(chunk)
                    )
                ).all()
                for row in rows:
                    body = row.body
                    if not match(body["metadata"].get("labels") or {}) or not field_match(body):
                        continue
                    if limit and len(items) >= limit:
                        more = True
                        break
                    items.append(body)
                    cursor = (row.namespace, row.name)
                if more or len(rows) < chunk:
                    break
                cursor = (rows[-1].namespace, rows[-1].name)
        token = _encode_continue(cursor) if more and cursor else None
        return Page(items, rv, token)

    async def list_all(
        self, kind: ResourceKind, namespace: str | None = None, label_selector: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        return (await self.list(kind, namespace, label_selector=label_selector)).items

    async def count(self, kind: ResourceKind) -> int:
        async with self.db.sessions() as s:
            return int(
                (
                    await s.execute(
                        select(func.count())
                        .select_from(self.objects)
                        .where(self.objects.c.kind == kind.kind)
                    )
                ).scalar()
                or 0
            )

    # ------------------------------------------------------------------- watch
    def watch(
        self,
        kind: ResourceKind,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Kubernetes watch semantics (``services.common.resources.watching``)."""
        from services.common.resources import watching

        return watching.watch(
            self,
            kind,
            namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
        )


def _field_selector(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    if not selector:
        return lambda obj: True
    reqs: list[tuple[list[str], str, bool]] = []
    for part in selector.split(","):
        negate = "!=" in part
        key, _, value = part.partition("!=" if negate else "=")
        value = value.lstrip("=")
        if key.strip() not in ("metadata.name", "metadata.namespace", "status.phase"):
            raise ApiError(
                400,
                f"field label not supported: {key.strip()}",
                causes=[Cause("fieldSelector", f"unsupported field {key.strip()!r}")],
            )
        reqs.append((key.strip().split("."), value.strip(), negate))

    def matches(obj: dict[str, Any]) -> bool:
        for path, value, negate in reqs:
            node: Any = obj
            for p in path:
                node = node.get(p) if isinstance(node, dict) else None
            if (str(node or "") == value) == negate:
                return False
        return True

    return matches


def _encode_continue(cursor: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        ns, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(ns), str(name)
    except (ValueError, TypeError):
        raise ApiError(
            400,
            "invalid continue token",
            causes=[Cause("continue", "not a token this server issued")],
        ) from None


def owner_reference(obj: dict[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An ownerReferences entry pointing at ``obj``."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    return any(
        ref.get("uid") == owner_uid
        for ref in obj.get("metadata", {}).get("ownerReferences", []) or []
    )


def sort_by_creation(objs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        objs,
        key=lambda o: (
            o["metadata"].get("creationTimestamp", ""),
            int(o["metadata"].get("resourceVersion", 0)),
        ),
    )
