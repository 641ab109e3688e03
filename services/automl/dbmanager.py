"""Katib's DB manager API (``api.v1.beta1.DBManager``), the observation-log calls.

Katib's SDK (``KatibClient.get_trial_metrics``) and Katib's metrics collectors talk to the
DB manager over gRPC at ``katib-db-manager.kubeflow:6789``. The gateway serves that gRPC
API (gateway/katib_grpc.py) and hands each call, authenticated, to this service as
``POST /internal/v1/katib/dbmanager/{method}`` with the request message's bytes (Katib's
messages, proto/katib/v1beta1/dbmanager.proto); the answer is the reply message's bytes, or
a JSON error naming the gRPC status (``{"grpcCode": "NOT_FOUND", "message": ...}``). The
service itself runs no gRPC server: gRPC stays in the gateway's process, and the automl
service, which forks workloads' supervisors, never has gRPC's threads to fork.

- ``GetObservationLog``: a trial's metric logs by time (then in the order reported),
  optionally one metric (``metric_name``) and a time window (``start_time``/``end_time``,
  RFC 3339), time stamps as Katib's (Go's RFC 3339 with nanoseconds, trailing zeros dropped).
- ``ReportObservationLog``: adds metric logs to a trial's log (Katib's custom collectors); a
  log without a time stamp is dated now (Katib's DB manager drops it).
- ``DeleteObservationLog``: drops a trial's log.

Reading needs ``view`` on the trial's namespace, writing ``edit`` (the identity assertion the
gateway signed names every namespace the caller may use). A trial's own workloads (a custom
collector) may instead present the trial's token (``x-shipyard-trial-token``,
services/automl/push.py) to report, for that trial alone. Katib's requests name a trial without
its namespace: the trial is looked up by name among the namespaces the caller may use;
``x-shipyard-namespace`` picks one when the name is in several.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf.message import DecodeError, Message
from sqlalchemy import select

from services.automl import store as automl_store
from services.automl.collector import MetricLog, parse_time
from services.automl.models import TRIAL
from services.automl.push import TOKEN_HEADER, token_valid
from services.common.app import ServiceContext
from services.common.auth import current_identity
from services.common.eventspb.katib.v1beta1 import dbmanager_pb2 as pb
from services.common.identity import Identity

log = logging.getLogger(__name__)

PATH = "/internal/v1/katib/dbmanager/{method}"
NAMESPACE_HEADER = "x-shipyard-namespace"
MAX_LOGS = 100_000  # one GetObservationLog answer at most
PROTOBUF = "application/x-protobuf"
#: gRPC status name -> the HTTP status the internal route answers with.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "UNIMPLEMENTED": 501,
}


class CallError(Exception):
    """A call refused with gRPC status ``code`` (its name, e.g. ``NOT_FOUND``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def katib_time(when: datetime) -> str:
    """Katib's time stamp: Go's RFC 3339 with nanoseconds in UTC, trailing zeros dropped
    (``2030-01-02T00:00:00Z``, ``2030-01-01T00:00:00.123456Z``)."""
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


class DBManager:
    """The three calls, on the automl service's database and resource store."""

    def __init__(self, ctx: ServiceContext, push_key: bytes) -> None:
        self.db, self.store, self.push_key = ctx.db, ctx.store, push_key

    async def _trial_namespace(
        self,
        trial: str,
        identity: Identity,
        headers: dict[str, str],
        needed: str,
        token_ok: bool = False,
    ) -> str:
        """The namespace of the trial the caller may act on with role ``needed`` (or, with
        ``token_ok``, that a valid trial token in ``headers`` names)."""
        if not trial:
            raise CallError("INVALID_ARGUMENT", "trial_name: Required value")
        wanted = headers.get(NAMESPACE_HEADER) or None
        async with self.db.sessions() as s:
            objects = self.store.objects
            query = select(objects.c.namespace).where(
                objects.c.kind == TRIAL.kind, objects.c.name == trial
            )
            namespaces = sorted((await s.execute(query)).scalars().all())
        token = headers.get(TOKEN_HEADER) if token_ok else None
        if token:
            mine = [ns for ns in namespaces if token_valid(self.push_key, ns, trial, token)]
            if not mine:
                raise CallError(
                    "PERMISSION_DENIED", f"the trial token is not valid for trial {trial!r}"
                )
            return mine[0]
        allowed = [
            ns
            for ns in namespaces
            if identity.allows(needed, ns) and (wanted is None or ns == wanted)
        ]
        if not allowed:
            where = f'namespace "{wanted}"' if wanted else "a namespace you may use"
            raise CallError(
                "NOT_FOUND",
                f'trial "{trial}" not found in {where} (user "{identity.user}", role {needed})',
            )
        if len(allowed) > 1:
            raise CallError(
                "FAILED_PRECONDITION",
                f'trial "{trial}" is in namespaces {", ".join(allowed)}: name one in the '
                f"{NAMESPACE_HEADER} metadata",
            )
        return allowed[0]

    async def get(
        self, request: pb.GetObservationLogRequest, identity: Identity, headers: dict[str, str]
    ) -> pb.GetObservationLogReply:
        namespace = await self._trial_namespace(request.trial_name, identity, headers, "view")
        start = _time_field(request.start_time, "start_time")
        end = _time_field(request.end_time, "end_time")
        async with self.db.sessions() as s:
            logs = await automl_store.read_observations(
                s, namespace, request.trial_name, request.metric_name or None, start, end, MAX_LOGS
            )
        return pb.GetObservationLogReply(
            observation_log=pb.ObservationLog(
                metric_logs=[
                    pb.MetricLog(
                        time_stamp=katib_time(m.time),
                        metric=pb.Metric(name=m.name, value=m.value),
                    )
                    for m in sorted(logs, key=lambda m: m.time)  # Katib's order: by time
                ]
            )
        )

    async def report(
        self, request: pb.ReportObservationLogRequest, identity: Identity, headers: dict[str, str]
    ) -> pb.ReportObservationLogReply:
        namespace = await self._trial_namespace(
            request.trial_name, identity, headers, "edit", token_ok=True
        )
        logs = report_logs(request)
        async with self.db.transaction() as s:
            known = await automl_store.read_observations(s, namespace, request.trial_name)
            counts: dict[str, int] = {}
            for m in known:
                counts[m.name] = counts.get(m.name, 0) + 1
            for m in logs:  # without a step, a metric's n-th report has step n (from 0)
                m.step = counts.get(m.name, 0)
                counts[m.name] = m.step + 1
            await automl_store.add_observations(s, namespace, request.trial_name, logs)
        log.info("trial %s/%s: %d metric logs reported", namespace, request.trial_name, len(logs))
        return pb.ReportObservationLogReply()

    async def delete(
        self, request: pb.DeleteObservationLogRequest, identity: Identity, headers: dict[str, str]
    ) -> pb.DeleteObservationLogReply:
        namespace = await self._trial_namespace(request.trial_name, identity, headers, "edit")
        async with self.db.transaction() as s:
            await automl_store.replace_observations(s, namespace, request.trial_name, [])
        return pb.DeleteObservationLogReply()


def report_logs(request: pb.ReportObservationLogRequest) -> list[MetricLog]:
    """The request's metric logs; INVALID_ARGUMENT (with the field path) for a bad one."""
    logs = []
    for i, entry in enumerate(request.observation_log.metric_logs):
        path = f"observation_log.metric_logs[{i}]"
        if not entry.metric.name:
            raise CallError("INVALID_ARGUMENT", f"{path}.metric.name: Required value")
        try:
            float(entry.metric.value)
        except ValueError:
            raise CallError(
                "INVALID_ARGUMENT", f"{path}.metric.value: {entry.metric.value!r} is not a number"
            ) from None
        when = _time_field(entry.time_stamp, f"{path}.time_stamp") or datetime.now(UTC)
        logs.append(MetricLog(entry.metric.name, entry.metric.value, when))
    return logs


def _time_field(raw: str, path: str) -> datetime | None:
    if not raw:
        return None
    # Katib writes nanoseconds; Python's parser takes at most microseconds.
    head, dot, rest = raw.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        raw = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    parsed = parse_time(raw)
    if parsed is None:
        raise CallError("INVALID_ARGUMENT", f"{path}: {raw!r} is not RFC 3339")
    return parsed


Call = Callable[[Any, Identity, dict[str, str]], Awaitable[Message]]


def router(push_key: bytes) -> APIRouter:
    """``POST /internal/v1/katib/dbmanager/{method}``: one DB manager call from the gateway
    (behind the service's assertion check, like every route but health)."""
    api = APIRouter()

    @api.post(PATH, include_in_schema=False)
    async def katib_dbmanager_call(method: str, request: Request) -> Response:
        manager = DBManager(request.app.state.ctx, push_key)
        calls: dict[str, tuple[Call, type[Message]]] = {
            "ReportObservationLog": (manager.report, pb.ReportObservationLogRequest),
            "GetObservationLog": (manager.get, pb.GetObservationLogRequest),
            "DeleteObservationLog": (manager.delete, pb.DeleteObservationLogRequest),
        }
        try:
            if method not in calls:
                raise CallError("UNIMPLEMENTED", f"api.v1.beta1.DBManager has no {method}")
            call, message_type = calls[method]
            try:
                message = message_type.FromString(await request.body())
            except DecodeError as exc:
                raise CallError(
                    "INVALID_ARGUMENT", f"not a {message_type.__name__}: {exc}"
                ) from None
            headers = {k: v for k, v in request.headers.items() if k.startswith("x-shipyard-")}
            reply = await call(message, current_identity(request), headers)
        except CallError as exc:
            return JSONResponse(
                {"grpcCode": exc.code, "message": exc.message},
                status_code=HTTP_STATUS.get(exc.code, 400),
            )
        return Response(reply.SerializeToString(), media_type=PROTOBUF)

    return api
