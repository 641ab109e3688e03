"""A KFP pipeline version given by URL (``package_url.pipeline_url``), as KFP v2beta1 takes it.

The service downloads the package itself, as a tenant's request: through the SSRF-guarded
fetcher (services.common.fetch; http(s) only, every hop's address public unless the host is in
``SHIPYARD_ARTIFACT_DOWNLOAD_ALLOWED_HOSTS``), with a timeout and the upload's size cap, and
parses it with the upload path's parser (``kfp_api.parse_package``).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from services.common.errors import ApiError, Cause
from services.common.fetch import AddressRefused, AllowedHosts, FetchError, GuardedClient
from services.pipeline.context import pipeline_context

TIMEOUT = 30.0


def package_url(body: dict[str, Any]) -> str | None:
    """The ``package_url.pipeline_url`` of a version body (None if it names none)."""
    given = body.get("package_url")
    if not isinstance(given, dict):
        return None
    url = given.get("pipeline_url")
    return url if isinstance(url, str) and url else None


def _allowed(request: Request) -> AllowedHosts:
    artifacts = pipeline_context(request).artifacts
    return artifacts.allowed_hosts if artifacts is not None else AllowedHosts(frozenset())


def _refused(field: str, status: int, message: str, why: str) -> ApiError:
    return ApiError(status, message, causes=[Cause(field, why)])


async def _download(url: str, allowed: AllowedHosts, limit: int, field: str) -> bytes:
    client = GuardedClient(allowed, connect_timeout=TIMEOUT, read_timeout=TIMEOUT)
    body = bytearray()
    try:
        async with client.open("GET", url) as (final, response):
            if response.status_code != 200:
                answer = f"{final}: the server answered {response.status_code}"
                raise _refused(field, 400, answer, "unreachable")
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > limit:
                    big = f"{url}: the pipeline package is larger than {limit} bytes"
                    raise _refused(field, 413, big, "too large")
    except AddressRefused as exc:
        why = str(exc).split(": models are not", 1)[0]
        raise _refused(
            field,
            403,
            f"{why}: pipeline packages are not downloaded from the platform's own network "
            "(an operator may allow a host with SHIPYARD_ARTIFACT_DOWNLOAD_ALLOWED_HOSTS)",
            "address refused",
        ) from None
    except FetchError as exc:
        raise _refused(
            field, 400, f"the pipeline package cannot be downloaded: {exc}", "unreachable"
        ) from None
    finally:
        await client.aclose()
    return bytes(body)


async def fetch_package(request: Request, url: str, field: str) -> dict[str, Any]:
    """The pipeline spec at ``url``, parsed as an uploaded file is; errors name ``field``."""
    from services.pipeline.kfp_api import MAX_UPLOAD, parse_package

    raw = await _download(url, _allowed(request), MAX_UPLOAD, field)
    try:
        return parse_package(raw, url.rsplit("/", 1)[-1])
    except ApiError as exc:
        raise _refused(field, exc.code, exc.message, "not a pipeline package") from None


async def version_spec(request: Request, version: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A version body's ``pipeline_spec``, or the package its ``package_url`` names."""
    spec = version.get("pipeline_spec")
    if isinstance(spec, dict):
        return spec
    url = package_url(version)
    if url is not None:
        return await fetch_package(request, url, f"{prefix}package_url.pipeline_url")
    raise ApiError(
        400,
        f"{prefix}pipeline_spec or {prefix}package_url.pipeline_url is required",
        causes=[Cause(f"{prefix}pipeline_spec", "Required value")],
    )
