"""Kubernetes ``Status`` error bodies: the shape kubectl-style clients parse on /api and /apis."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from services.common.errors import REASONS


def status_body(
    code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "InternalError"),
        "details": details or {},
        "code": code,
    }


def status_response(
    code: int,
    message: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_body(code, message, reason, details), status_code=code, headers=headers
    )


class GatewayError(Exception):
    """An error the gateway answers itself, as a Status object."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason
        self.details, self.headers = details, headers

    def response(self) -> JSONResponse:
        return status_response(self.code, self.message, self.reason, self.details, self.headers)


class DataPlaneError(GatewayError):
    """An error the gateway answers on a model's data plane, in the V1/V2 inference shape
    ``{"error": "..."}`` that KServe clients read (not a Kubernetes Status)."""

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, status_code=self.code, headers=self.headers)
