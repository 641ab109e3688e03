"""The central dashboard: static files under ``gateway/ui/``, served at ``/`` and ``/ui/...``.

The dashboard is plain HTML, CSS and ES modules with no build step: it reads the same
Kubernetes-style APIs every other client uses, through this gateway, with the browser's
session. ``/`` needs a principal, so in OIDC mode a browser without a session is sent to
login (the app's 401 handler redirects non-API paths). The assets themselves hold no data
and are served to anyone, which keeps the login page free to use them.

Caching: every response carries a strong ``ETag`` and ``Cache-Control: no-cache``, so a
browser revalidates each load and gets a 304 while the file is unchanged. Assets are not
fingerprinted (ES modules import each other by plain relative path), and revalidation is
what keeps an upgraded gateway from serving a stale mix of old and new modules.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .deps import PrincipalDep
from .errors import GatewayError

UI_DIR = Path(__file__).resolve().parent / "ui"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The page only talks to its own origin; SVG presentation attributes and CSSOM writes from
# the modules are not inline styles, so no 'unsafe-inline' is needed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)

router = APIRouter(tags=["dashboard"])


@dataclass(frozen=True)
class Asset:
    """One static file, read once: its bytes, media type and ETag."""

    body: bytes
    media_type: str
    etag: str


def load_assets(root: Path = UI_DIR) -> dict[str, Asset]:
    """Every servable file directly under ``root``, keyed by file name.

    A fixed table rather than a path lookup per request: a name that is not a key is a 404,
    so no request path can reach outside the directory.
    """
    assets: dict[str, Asset] = {}
    if not root.is_dir():
        return assets
    for path in sorted(root.iterdir()):
        media_type = CONTENT_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        assets[path.name] = Asset(
            body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        )
    return assets


ASSETS = load_assets()


def asset_response(request: Request, name: str) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise GatewayError(404, f"no dashboard file {name!r}", "NotFound")
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if asset.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
        headers["Referrer-Policy"] = "same-origin"
    if asset.etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/", include_in_schema=False)
async def read_dashboard(request: Request, _principal: PrincipalDep) -> Response:
    """The dashboard page; a browser without a session is redirected to login (OIDC mode)."""
    return asset_response(request, "index.html")


@router.get("/ui/{name}", include_in_schema=False)
async def read_dashboard_asset(request: Request, name: str) -> Response:
    return asset_response(request, name)
