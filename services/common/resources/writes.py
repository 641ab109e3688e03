"""Writes with Kubernetes' request options: ``dryRun`` and ``fieldValidation`` on patches.

A dry run (``dryRun=All``: ``kubectl diff``, ``kubectl apply --dry-run=server``) is the
whole write (validation, admission, the resourceVersion, the outbox row) in a transaction
that is rolled back, so the answer is exactly what the write would have stored, and
nothing is stored or announced.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import ApiError, Cause
from services.common.resources import fieldvalidation as fields
from services.common.resources.kinds import ResourceKind
from services.common.resources.patch import apply_patch
from services.common.resources.store import ResourceStore

# A patch whose unknown fields are dropped is written as a replace of the patched object,
# conditional on the version it was computed from; a concurrent write makes it try again.
PATCH_ATTEMPTS = 5


def dry_run(request: Request) -> bool:
    """Whether the request asks for a dry run (``dryRun=All``, the one value Kubernetes has)."""
    return _dry_run_values(request.query_params.getlist("dryRun"))


MAX_DELETE_OPTIONS = 64 * 1024


async def delete_dry_run(request: Request) -> bool:
    """Whether a DELETE asks for a dry run: in its query, or in the ``DeleteOptions`` body
    (``{"dryRun": ["All"]}``), where client-go (``kubectl delete --dry-run=server``) puts it."""
    if dry_run(request):
        return True
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_DELETE_OPTIONS:
            raise ApiError(413, f"DeleteOptions larger than {MAX_DELETE_OPTIONS} bytes")
    if not raw.strip():
        return False
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the DeleteOptions body is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ApiError(400, "the DeleteOptions body must be a JSON object")
    values = options.get("dryRun") or []
    if not isinstance(values, list):
        raise ApiError(400, 'DeleteOptions.dryRun must be a list, e.g. ["All"]')
    return _dry_run_values(values)


def _dry_run_values(values: list[Any]) -> bool:
    if not values:
        return False
    if any(v != "All" for v in values):
        raise ApiError(
            400,
            f'dryRun: Unsupported value: {values[0]!r}: supported values: "All"',
            causes=[Cause("dryRun", 'supported values: "All"', "FieldValueNotSupported")],
        )
    return True


@asynccontextmanager
async def write_session(store: ResourceStore, dry: bool) -> AsyncIterator[AsyncSession | None]:
    """None (the store commits each write itself), or for a dry run a session whose
    transaction is rolled back when the block ends."""
    if not dry:
        yield None
        return
    async with store.db.sessions() as session:
        await session.begin()
        try:
            yield session
        except IntegrityError:
            raise ApiError.created_concurrently() from None
        finally:
            await session.rollback()


async def patch_with_field_validation(
    store: ResourceStore,
    kind: ResourceKind,
    namespace: str | None,
    name: str,
    patch: Any,
    content_type: str,
    report: fields.FieldReport,
    *,
    session: AsyncSession | None = None,
) -> dict[str, Any]:
    """Patch, and in Warn and Ignore modes drop the unknown fields the patch brings in.

    The common case is one ``store.patch``. Only when that is refused for unknown fields
    (and the mode lets them go) is the patch applied here to the current object, the fields
    dropped from the result, and the result written with the current resourceVersion as a
    precondition (the API server, too, validates the patched object, in its update loop).
    """
    try:
        return await store.patch(kind, namespace, name, patch, content_type, session=session)
    except ApiError as err:
        if report.mode == fields.STRICT or not fields.unknown_fields(err):
            raise
    own_precondition = not (
        isinstance(patch, dict) and (patch.get("metadata") or {}).get("resourceVersion")
    )
    for attempt in range(PATCH_ATTEMPTS):
        report.warnings.clear()
        current = await store.get(kind, namespace, name, session=session)
        patched = apply_patch(current, patch, content_type)
        try:
            return await fields.write_pruned(
                report,
                patched,
                lambda b: store.replace(kind, namespace, name, b, session=session),
            )
        except ApiError as err:
            if err.code != 409 or not own_precondition or attempt == PATCH_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
