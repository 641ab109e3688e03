"""API errors and how they reach a client.

The error *shape* depends on the API family: Kubernetes ``Status`` objects for
``/api`` and ``/apis/<group>`` paths (what the kubernetes client and kubectl
parse), and a compatible API's own shape where one registers a renderer (the
KFP and Argo APIs do, for their prefixes). No stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

#: Kubernetes ``Status`` reasons by HTTP code, for errors that name none: the one table, used by
#: the services and the gateway alike. (A create that finds its name taken says AlreadyExists
#: itself, as Kubernetes does; a bare 409 is a Conflict.)
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "ServiceUnavailable",  # the gateway's upstream did not answer
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class Cause:
    """One invalid field, as in a Kubernetes Status ``details.causes`` entry."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    """An error a client can act on. Rendered as a Kubernetes Status by default."""

    code: int
    message: str
    reason: str = ""
    causes: Sequence[Cause] = ()
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reason = self.reason or REASONS.get(self.code, HTTPStatus(self.code).phrase)
        super().__init__(self.message)

    @classmethod
    def not_found(cls, kind: str, name: str, group: str = "") -> ApiError:
        return cls._about_object(404, "not found", kind, name, group)

    @classmethod
    def conflict(cls, kind: str, name: str, message: str) -> ApiError:
        return cls(
            409,
            f'Operation cannot be fulfilled on {kind} "{name}": {message}',
            details={"name": name, "kind": kind},
        )

    @classmethod
    def already_exists(cls, kind: str, name: str, group: str = "") -> ApiError:
        return cls._about_object(409, "already exists", kind, name, group, reason="AlreadyExists")

    @classmethod
    def _about_object(
        cls, code: int, state: str, kind: str, name: str, group: str, reason: str = ""
    ) -> ApiError:
        """``kind.group "name" <state>``, with the object named in ``details``."""
        resource = f"{kind}.{group}" if group else kind
        return cls(
            code,
            f'{resource} "{name}" {state}',
            reason=reason,
            details={"name": name, "kind": kind, "group": group},
        )

    @classmethod
    def created_concurrently(cls) -> ApiError:
        """A create lost a race for its name (the database's unique key said so)."""
        return cls(
            409,
            "the object was created concurrently by another request; get it, or retry",
            reason="AlreadyExists",
        )

    @classmethod
    def invalid(cls, kind: str, name: str, causes: Sequence[Cause]) -> ApiError:
        summary = "; ".join(f"{c.field}: {c.message}" for c in causes)
        return cls(
            422,
            f'{kind} "{name}" is invalid: {summary}',
            causes=causes,
            details={"name": name, "kind": kind},
        )

    def status(self) -> dict[str, Any]:
        details = dict(self.details)
        if self.causes:
            details["causes"] = [c.to_json() for c in self.causes]
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            body["details"] = details
        return body


def causes_from_validation(
    exc: ValidationError | RequestValidationError, prefix: str = ""
) -> list[Cause]:
    """Turn pydantic errors into Status causes with Kubernetes-style field paths."""
    out: list[Cause] = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p not in ("body",)]
        path = prefix
        for part in loc:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in ("function-after", "function-before", "function-wrap"):
                continue
            elif "[" in str(part) and not path:
                continue
            else:
                path = f"{path}.{part}" if path else str(part)
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            out.append(Cause(path, "unknown field", "FieldValueNotSupported"))
        elif kind == "missing":
            out.append(Cause(path, "Required value", "FieldValueRequired"))
        else:
            msg = str(err.get("msg", "invalid value"))
            out.append(Cause(path, msg.removeprefix("Value error, ")))
    return out


ErrorRenderer = Callable[[ApiError], dict[str, Any]]
# Given an unexpected exception, the error a client should see instead of a 500 (a
# dependency that is down), or None.
ErrorDiagnosis = Callable[[Exception], Awaitable["ApiError | None"]]


def install_error_handlers(
    app: FastAPI,
    renderers: Sequence[tuple[str, ErrorRenderer]] = (),
    diagnose: ErrorDiagnosis | None = None,
    outage_errors: tuple[type[Exception], ...] = (),
) -> None:
    """Render every error in the shape of the API family the path belongs to.

    ``renderers`` maps a path prefix to a renderer for a compatible API (longest
    prefix wins); everything else gets a Kubernetes Status. ``diagnose`` turns an
    unexpected exception caused by an outage (the database down) into the error that
    says so, e.g. a 503 a client retries, instead of a 500. ``outage_errors`` are the
    exception types an outage raises: they are handled without Starlette's catch-all,
    which re-raises after answering and so logs a stack trace per request while a
    dependency is away.
    """
    ordered = sorted(renderers, key=lambda r: len(r[0]), reverse=True)

    def render(request: Request, err: ApiError) -> JSONResponse:
        body = err.status()
        for prefix, renderer in ordered:
            if request.url.path.startswith(prefix):
                body = renderer(err)
                break
        return JSONResponse(body, status_code=err.code, headers=err.headers or None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        causes = causes_from_validation(exc)
        summary = "; ".join(f"{c.field}: {c.message}" for c in causes)
        return render(request, ApiError(422, f"invalid request: {summary}", causes=causes))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and message == "Not Found":
            message = f"the server could not find the requested resource ({request.url.path})"
        return render(request, ApiError(exc.status_code, message, headers=dict(exc.headers or {})))

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        known = await diagnose(exc) if diagnose is not None else None
        if known is not None:
            log.warning("%s %s: %s (%r)", request.method, request.url.path, known.message, exc)
            return render(request, known)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return render(request, ApiError(500, "internal error; the details are in the service log"))

    for outage in outage_errors:
        app.add_exception_handler(outage, _unexpected)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)  # type: ignore[arg-type]
