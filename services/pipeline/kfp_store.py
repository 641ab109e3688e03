"""Records of the KFP API (experiments, pipelines, versions, runs, recurring runs) and the
list semantics KFP clients expect: predicate filters, ``sort_by`` and page tokens."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select, update

from services.common.db import Database
from services.common.errors import ApiError, Cause

OPERATIONS = {
    1: "EQUALS",
    2: "NOT_EQUALS",
    3: "GREATER_THAN",
    5: "GREATER_THAN_EQUALS",
    6: "LESS_THAN",
    7: "LESS_THAN_EQUALS",
    8: "IN",
    9: "IS_SUBSTRING",
}
_KEY_ALIASES = {"name": "display_name", "id": None, "pipeline_version_id": None}


def new_id() -> str:
    return str(uuid.uuid4())


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _predicate_value(pred: dict[str, Any]) -> Any:
    for key in ("stringValue", "string_value"):
        if key in pred:
            return pred[key]
    for key in ("intValue", "int_value", "longValue", "long_value"):
        if key in pred:
            return int(pred[key])
    for key in ("timestampValue", "timestamp_value"):
        if key in pred:
            return pred[key]
    for key in ("boolValue", "bool_value"):
        if key in pred:
            return bool(pred[key])
    for key in (
        "stringValues",
        "string_values",
        "intValues",
        "int_values",
        "longValues",
        "long_values",
    ):
        if key in pred:
            values = pred[key]
            return values.get("values", []) if isinstance(values, dict) else values
    raise ApiError(400, f"filter predicate on {pred.get('key')!r} has no value")


def parse_filter(raw: str | None, id_field: str) -> Callable[[dict[str, Any]], bool]:
    """KFP's filter JSON (``{"predicates": [...]}``) as a predicate over API JSON objects."""
    if not raw:
        return lambda obj: True
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(
            400,
            f"filter is not valid JSON: {raw[:100]}",
            causes=[Cause("filter", "not valid JSON")],
        ) from None
    checks = []
    for pred in body.get("predicates") or []:
        op = pred.get("operation") or pred.get("op")
        if isinstance(op, int) or (isinstance(op, str) and op.isdigit()):
            op = OPERATIONS.get(int(op))
        if op not in OPERATIONS.values():
            raise ApiError(
                400,
                f"unknown filter operation {pred.get('operation')!r}",
                causes=[Cause("filter.predicates.operation", "unknown operation")],
            )
        key = pred.get("key", "")
        key = _KEY_ALIASES.get(key, key) or id_field
        checks.append((key, op, _predicate_value(pred)))

    def matches(obj: dict[str, Any]) -> bool:
        for key, op, want in checks:
            have = obj.get(key)
            if op == "EQUALS" and str(have) != str(want):
                return False
            if op == "NOT_EQUALS" and str(have) == str(want):
                return False
            if op == "IN" and str(have) not in [str(w) for w in want]:
                return False
            if op == "IS_SUBSTRING" and str(want) not in str(have or ""):
                return False
            if op in ("GREATER_THAN", "GREATER_THAN_EQUALS", "LESS_THAN", "LESS_THAN_EQUALS"):
                if have is None:
                    return False
                a, b = (have, want) if not isinstance(want, int) else (_num(have), want)
                ok = {
                    "GREATER_THAN": a > b,
                    "GREATER_THAN_EQUALS": a >= b,
                    "LESS_THAN": a < b,
                    "LESS_THAN_EQUALS": a <= b,
                }[op]
                if not ok:
                    return False
        return True

    return matches


def _num(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def paginate(
    items: list[dict[str, Any]],
    *,
    sort_by: str | None,
    page_size: int | None,
    page_token: str | None,
    default_sort: str = "created_at",
) -> tuple[list[dict[str, Any]], str]:
    field, _, direction = (sort_by or default_sort).partition(" ")
    field = _KEY_ALIASES.get(field, field) or field
    items = sorted(
        items,
        key=lambda o: (str(o.get(field) or ""), str(o.get("created_at"))),
        reverse=direction.strip().lower() == "desc",
    )
    offset = 0
    if page_token:
        try:
            offset = int(base64.urlsafe_b64decode(page_token.encode()).decode())
        except ValueError:
            raise ApiError(
                400,
                "invalid page_token",
                causes=[Cause("page_token", "not a token this server issued")],
            ) from None
    size = page_size or 100
    page = items[offset : offset + size]
    more = offset + size < len(items)
    token = base64.urlsafe_b64encode(str(offset + size).encode()).decode() if more else ""
    return page, token


class KfpStore:
    """Table access for the KFP API (no handler runs a query itself)."""

    def __init__(self, db: Database, tables: dict[str, Table]) -> None:
        self.db = db
        self.t = tables

    async def insert(self, table: str, **values: Any) -> None:
        async with self.db.transaction() as s:
            await s.execute(insert(self.t[table]).values(**values))

    async def update(self, table: str, id_: str, **values: Any) -> None:
        async with self.db.transaction() as s:
            await s.execute(update(self.t[table]).where(self.t[table].c.id == id_).values(**values))

    async def delete(self, table: str, id_: str) -> None:
        async with self.db.transaction() as s:
            await s.execute(delete(self.t[table]).where(self.t[table].c.id == id_))

    async def get(self, table: str, id_: str, what: str) -> dict[str, Any]:
        async with self.db.sessions() as s:
            row = (await s.execute(select(self.t[table]).where(self.t[table].c.id == id_))).first()
        if row is None:
            raise ApiError(404, f"{what} {id_} not found")
        return dict(row._mapping)

    async def rows(self, table: str, **where: Any) -> list[dict[str, Any]]:
        query = select(self.t[table])
        for key, value in where.items():
            if value is not None:
                query = query.where(self.t[table].c[key] == value)
        async with self.db.sessions() as s:
            return [dict(r._mapping) for r in (await s.execute(query)).all()]
