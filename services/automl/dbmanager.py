"""Katib's DB manager API (``api.v1.beta1.DBManager``), the observation-log calls, over gRPC.

Katib's SDK (``KatibClient.get_trial_metrics``) and Katib's metrics collectors talk to the
DB manager at ``katib-db-manager.kubeflow:6789``. The automl service serves the same calls,
with Katib's messages (proto/katib/v1beta1/dbmanager.proto), on its own port
(``SHIPYARD_DB_MANAGER_PORT``, default 6790; 0 turns it off), on the observation logs the
controller keeps (services/automl/store.py):

- ``GetObservationLog``: a trial's metric logs in the order they were reported, optionally
  one metric (``metric_name``) and a time window (``start_time``/``end_time``, RFC 3339).
- ``ReportObservationLog``: adds metric logs to a trial's log (Katib's custom collectors).
- ``DeleteObservationLog``: drops a trial's log.

Every call carries a gateway-signed identity assertion (metadata ``x-shipyard-identity``,
what gateway/katib_grpc.py adds after authenticating the caller): reading needs ``view`` on
the trial's namespace, writing ``edit``. A trial's own workloads (a custom collector) may
instead present the trial's token (``x-shipyard-trial-token``, services/automl/push.py),
good for that trial alone. Katib's requests name a trial without its namespace: the trial is
looked up by name among the namespaces the caller may use; metadata ``x-shipyard-namespace``
picks one when the name is in several.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.message import Message
from sqlalchemy import select

from services.automl import store as automl_store
from services.automl.collector import MetricLog, parse_time
from services.automl.models import TRIAL
from services.automl.push import TOKEN_HEADER, token_valid
from services.common.db import Database
from services.common.eventspb.katib.v1beta1 import dbmanager_pb2 as pb
from services.common.identity import (
    ASSERTION_HEADER,
    AssertionError_,
    AssertionVerifier,
    Identity,
)
from services.common.resources import ResourceStore

log = logging.getLogger(__name__)

SERVICE = "api.v1.beta1.DBManager"
NAMESPACE_HEADER = "x-shipyard-namespace"
MAX_LOGS = 100_000  # one GetObservationLog answer at most


class CallError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def katib_time(when: datetime) -> str:
    """Katib's time stamp: RFC 3339 in UTC with nanoseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class DBManager:
    """The three calls, on the automl service's database and resource store."""

    def __init__(
        self, db: Database, store: ResourceStore, verifier: AssertionVerifier, push_key: bytes
    ) -> None:
        self.db, self.store, self.verifier, self.push_key = db, store, verifier, push_key

    # ---------------------------------------------------------------- callers
    async def _trial_namespace(
        self, trial: str, metadata: dict[str, str], needed: str
    ) -> tuple[str, Identity | None]:
        """The namespace of the trial the caller may act on with role ``needed``."""
        if not trial:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "trial_name: Required value")
        wanted = metadata.get(NAMESPACE_HEADER) or None
        async with self.db.sessions() as s:
            objects = self.store.objects
            query = select(objects.c.namespace).where(
                objects.c.kind == TRIAL.kind, objects.c.name == trial
            )
            namespaces = sorted((await s.execute(query)).scalars().all())
        token = metadata.get(TOKEN_HEADER)
        if token:
            mine = [ns for ns in namespaces if token_valid(self.push_key, ns, trial, token)]
            if not mine:
                raise CallError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the trial token is not valid for trial {trial!r}",
                )
            return mine[0], None
        identity = self._identity(metadata)
        allowed = [
            ns
            for ns in namespaces
            if identity.allows(needed, ns) and (wanted is None or ns == wanted)
        ]
        if not allowed:
            where = f'namespace "{wanted}"' if wanted else "a namespace you may use"
            raise CallError(
                grpc.StatusCode.NOT_FOUND,
                f'trial "{trial}" not found in {where} (user "{identity.user}", role {needed})',
            )
        if len(allowed) > 1:
            raise CallError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'trial "{trial}" is in namespaces {", ".join(allowed)}: name one in the '
                f"{NAMESPACE_HEADER} metadata",
            )
        return allowed[0], identity

    def _identity(self, metadata: dict[str, str]) -> Identity:
        token = metadata.get(ASSERTION_HEADER)
        if not token:
            raise CallError(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing identity assertion; call the DB manager through the shipyard gateway",
            )
        try:
            return self.verifier.verify(token)
        except AssertionError_ as exc:
            raise CallError(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None

    # ------------------------------------------------------------------ calls
    async def get(
        self, request: pb.GetObservationLogRequest, metadata: dict[str, str]
    ) -> pb.GetObservationLogReply:
        namespace, _ = await self._trial_namespace(request.trial_name, metadata, "view")
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
                    for m in logs
                ]
            )
        )

    async def report(
        self, request: pb.ReportObservationLogRequest, metadata: dict[str, str]
    ) -> pb.ReportObservationLogReply:
        namespace, _ = await self._trial_namespace(request.trial_name, metadata, "edit")
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
        self, request: pb.DeleteObservationLogRequest, metadata: dict[str, str]
    ) -> pb.DeleteObservationLogReply:
        namespace, _ = await self._trial_namespace(request.trial_name, metadata, "edit")
        async with self.db.transaction() as s:
            await automl_store.replace_observations(s, namespace, request.trial_name, [])
        return pb.DeleteObservationLogReply()


def report_logs(request: pb.ReportObservationLogRequest) -> list[MetricLog]:
    """The request's metric logs; INVALID_ARGUMENT (with the field path) for a bad one."""
    logs = []
    for i, entry in enumerate(request.observation_log.metric_logs):
        path = f"observation_log.metric_logs[{i}]"
        if not entry.metric.name:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, f"{path}.metric.name: Required value")
        try:
            float(entry.metric.value)
        except ValueError:
            raise CallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{path}.metric.value: {entry.metric.value!r} is not a number",
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
        raise CallError(grpc.StatusCode.INVALID_ARGUMENT, f"{path}: {raw!r} is not RFC 3339")
    return parsed


Handler = Callable[[Any, dict[str, str]], Awaitable[Message]]


def _unary(handler: Handler, request_type: type[Message]) -> grpc.RpcMethodHandler:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Message:
        metadata = {
            k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)
        }
        try:
            return await handler(request, metadata)
        except CallError as exc:
            await context.abort(exc.code, exc.message)
            raise  # unreachable: abort raises

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=request_type.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


def handlers(manager: DBManager) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "ReportObservationLog": _unary(manager.report, pb.ReportObservationLogRequest),
            "GetObservationLog": _unary(manager.get, pb.GetObservationLogRequest),
            "DeleteObservationLog": _unary(manager.delete, pb.DeleteObservationLogRequest),
        },
    )


class DBManagerServer:
    """The gRPC listener (a service component: started after the database, stopped before)."""

    def __init__(self, manager: DBManager, host: str, port: int) -> None:
        self.manager, self.host, self.port = manager, host, port
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        if not self.port:
            return
        # No SO_REUSEPORT: a second server on a taken port must fail, not share its calls.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((handlers(self.manager),))
        address = f"{self.host or '127.0.0.1'}:{self.port}"
        try:
            server.add_insecure_port(address)
        except RuntimeError as exc:  # taken: say so and serve the rest of the service
            log.error("Katib DB manager API not served: cannot listen on %s (%s)", address, exc)
            return
        await server.start()
        self.server = server
        log.info("Katib DB manager API (gRPC) on %s", address)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=2)
            self.server = None
