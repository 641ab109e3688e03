"""``shipyard login``: OIDC for the command line.

The gateway tells the CLI its issuer and public client id (``GET /oauth2/config``). Login is
the authorization-code flow with PKCE over a loopback redirect (RFC 8252: a one-shot HTTP
listener on 127.0.0.1 with a random port), or the device flow (RFC 8628) when the provider
offers it and ``--device`` is given. Credentials are stored per gateway URL, mode 0600, in
``$XDG_CONFIG_HOME/shipyard/credentials.json`` (default ``~/.config``), and refreshed
automatically by ``bearer_headers``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import secrets
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

log = logging.getLogger(__name__)
TIMEOUT = httpx.Timeout(10.0)
REFRESH_MARGIN_SECONDS = 60


class LoginError(Exception):
    """Login failed; the message is meant for the user."""


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shipyard" / "credentials.json"


def _load_all() -> dict[str, Any]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_all(data: dict[str, Any]) -> None:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _key(gateway_url: str) -> str:
    return gateway_url.rstrip("/")


def _jwt_exp(token: str) -> float:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims.get("exp", 0))
    except (IndexError, ValueError):
        return 0.0


def _discover(gateway_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    with httpx.Client(timeout=TIMEOUT) as c:
        cfg = c.get(f"{_key(gateway_url)}/oauth2/config").raise_for_status().json()
        if not cfg.get("issuer"):
            raise LoginError(f"the gateway runs in {cfg.get('authMode')} mode: no login needed")
        meta = c.get(f"{cfg['issuer']}/.well-known/openid-configuration").raise_for_status()
    return cfg, meta.json()


def _token_request(token_endpoint: str, form: dict[str, str]) -> httpx.Response:
    """POST one OAuth 2.0 token request (RFC 6749 section 4.1.3 or 6) to the provider."""
    with httpx.Client(timeout=TIMEOUT) as c:
        return c.post(token_endpoint, data=form)


def _store(
    gateway_url: str, cfg: dict[str, Any], meta: dict[str, Any], tokens: dict[str, Any]
) -> dict[str, Any]:
    entry = {
        "issuer": cfg["issuer"],
        "client_id": cfg["clientId"],
        "token_endpoint": meta["token_endpoint"],
        "id_token": tokens["id_token"],
        "refresh_token": tokens.get("refresh_token", ""),
        "expires_at": _jwt_exp(tokens["id_token"]),
    }
    data = _load_all()
    data[_key(gateway_url)] = entry
    _save_all(data)
    return entry


def login(
    gateway_url: str, *, open_url: Callable[[str], object] | None = None, timeout: float = 300.0
) -> dict[str, Any]:
    """Authorization code + PKCE over a loopback redirect; returns the stored entry."""
    cfg, meta = _discover(gateway_url)
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state = secrets.token_urlsafe(16)
    result: dict[str, str] = {}
    done = threading.Event()

    class Callback(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            query = parse_qs(urlsplit(self.path).query)
            if urlsplit(self.path).path != "/callback":
                self.send_response(404)
                self.end_headers()
                return
            result.update({k: v[0] for k, v in query.items()})
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"shipyard: login complete, you can close this window.\n")
            done.set()

        def log_message(self, *_args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Callback)
    server.timeout = 0.5
    redirect_uri = f"http://127.0.0.1:{server.server_port}/callback"
    params = {
        "client_id": cfg["clientId"],
        "response_type": "code",
        "scope": cfg.get("scopes") or "openid email profile groups offline_access",
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    url = f"{meta['authorization_endpoint']}?{urlencode(params)}"
    thread = threading.Thread(target=_serve_until, args=(server, done, timeout), daemon=True)
    thread.start()
    try:
        (open_url or _open_browser)(url)
        if not done.wait(timeout):
            raise LoginError("timed out waiting for the browser to finish login")
    finally:
        done.set()
        thread.join(timeout=5)
        server.server_close()
    if result.get("error"):
        raise LoginError(f"login refused: {result['error']}")
    if result.get("state") != state or not result.get("code"):
        raise LoginError("login state mismatch")
    resp = _token_request(
        meta["token_endpoint"],
        {
            "grant_type": "authorization_code",
            "code": result["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": cfg["clientId"],
        },
    )
    if resp.status_code != 200:
        raise LoginError(f"token exchange failed: {resp.text[:200]}")
    return _store(gateway_url, cfg, meta, resp.json())


def login_device(
    gateway_url: str, *, show: Callable[[str, str], object] | None = None, timeout: float = 600.0
) -> dict[str, Any]:
    """Device authorization grant (RFC 8628), for machines without a browser."""
    cfg, meta = _discover(gateway_url)
    endpoint = meta.get("device_authorization_endpoint")
    if not endpoint:
        raise LoginError("the identity provider does not offer the device flow")
    with httpx.Client(timeout=TIMEOUT) as c:
        start = c.post(
            endpoint,
            data={
                "client_id": cfg["clientId"],
                "scope": cfg.get("scopes") or "openid email groups",
            },
        )
        start.raise_for_status()
        dev = start.json()
        (show or (lambda uri, code: log.warning("open %s and enter %s", uri, code)))(
            dev.get("verification_uri_complete") or dev["verification_uri"], dev["user_code"]
        )
        interval = float(dev.get("interval", 5))
        deadline = time.monotonic() + min(timeout, float(dev.get("expires_in", timeout)))
        while time.monotonic() < deadline:
            time.sleep(interval)
            resp = c.post(
                meta["token_endpoint"],
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                    "device_code": dev["device_code"],
                    "client_id": cfg["clientId"],
                },
            )
            if resp.status_code == 200:
                return _store(gateway_url, cfg, meta, resp.json())
            err = resp.json().get("error")
            if err == "slow_down":
                interval += 5
            elif err != "authorization_pending":
                raise LoginError(f"device login failed: {err}")
    raise LoginError("device login timed out")


def _serve_until(server: HTTPServer, done: threading.Event, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        server.handle_request()


def _open_browser(url: str) -> None:
    log.warning("Opening the browser to log in. If it does not open, visit:\n  %s", url)
    webbrowser.open(url)


def refresh(gateway_url: str) -> dict[str, Any] | None:
    """Refresh the stored tokens; None (and credentials dropped) if the provider refuses."""
    data = _load_all()
    entry = data.get(_key(gateway_url))
    if not entry or not entry.get("refresh_token"):
        return None
    resp = _token_request(
        entry["token_endpoint"],
        {
            "grant_type": "refresh_token",
            "refresh_token": entry["refresh_token"],
            "client_id": entry["client_id"],
        },
    )
    if resp.status_code != 200:
        log.info("token refresh refused (%s); run `shipyard login`", resp.status_code)
        return None
    tokens = resp.json()
    entry.update(
        id_token=tokens["id_token"],
        expires_at=_jwt_exp(tokens["id_token"]),
        refresh_token=tokens.get("refresh_token") or entry["refresh_token"],
    )
    data[_key(gateway_url)] = entry
    _save_all(data)
    return dict(entry)


def stored_entry(gateway_url: str) -> dict[str, Any] | None:
    """The stored login for the gateway, as stored (possibly expired), or None."""
    entry = _load_all().get(_key(gateway_url))
    return dict(entry) if isinstance(entry, dict) else None


def fresh_entry(gateway_url: str) -> dict[str, Any] | None:
    """The stored login, refreshed when near expiry; None if there is none or it cannot be."""
    entry = stored_entry(gateway_url)
    if not entry:
        return None
    if float(entry.get("expires_at", 0)) - REFRESH_MARGIN_SECONDS < time.time():
        try:
            return refresh(gateway_url)
        except httpx.HTTPError:
            return None
    return entry


def bearer_headers(gateway_url: str) -> dict[str, str]:
    """``{"Authorization": "Bearer ..."}`` for the gateway, refreshed when near expiry."""
    entry = fresh_entry(gateway_url)
    return {"Authorization": f"Bearer {entry['id_token']}"} if entry else {}


def logout(gateway_url: str) -> bool:
    data = _load_all()
    removed = data.pop(_key(gateway_url), None) is not None
    _save_all(data)
    return removed


def add_login_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", action="store_true", help="use the device flow (no local browser)"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="print the login URL instead of opening a browser"
    )
    add_kubeconfig_arguments(parser, optional=True)


def add_kubeconfig_arguments(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """``--kubeconfig [PATH]``, ``--context`` and ``-n``: where ``shipyard.kubeconfig`` writes."""
    if optional:
        parser.add_argument(
            "--kubeconfig",
            nargs="?",
            const="",
            default=None,
            metavar="PATH",
            help="also write a kubectl context for the gateway (to PATH, default $KUBECONFIG "
            "or ~/.kube/config) that gets fresh tokens from `shipyard kubectl-credential`",
        )
    else:
        parser.add_argument(
            "--kubeconfig",
            default="",
            metavar="PATH",
            help="the kubeconfig to write (default: $KUBECONFIG's first file, or ~/.kube/config)",
        )
    parser.add_argument("--context", help="the context's name (default shipyard-HOST-PORT)")
    parser.add_argument(
        "--api-server",
        metavar="URL",
        help="the gateway's URL for kubectl, when it differs from --server: kubectl sends "
        "credentials only over https (default: --server)",
    )
    parser.add_argument(
        "--certificate-authority",
        metavar="FILE",
        help="the CA certificate (PEM) that signed the gateway's https certificate",
    )
    parser.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name to verify the https certificate for, if not the URL's host "
        "(the local TLS listener's certificate names kubernetes.default.svc)",
    )
    parser.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        help="do not verify the gateway's https certificate (testing only)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="the context's namespace (default SHIPYARD_NAMESPACE, or the single-user one)",
    )


def run_login(args: argparse.Namespace) -> int:
    url = getattr(args, "server", "http://127.0.0.1:8080")
    try:
        if getattr(args, "device", False):
            entry = login_device(url)
        else:
            opener = (
                (lambda u: log.warning("visit: %s", u))
                if getattr(args, "no_browser", False)
                else None
            )
            entry = login(url, open_url=opener)
    except (LoginError, httpx.HTTPError) as exc:
        log.error("login failed: %s", exc)
        return 1
    log.warning(
        "logged in to %s (token valid until %s)",
        url,
        time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["expires_at"])),
    )
    if getattr(args, "kubeconfig", None) is not None:
        return run_kubeconfig(args)
    return 0


def run_kubeconfig(args: argparse.Namespace) -> int:
    """``shipyard kubeconfig``: write the gateway's context for kubectl (shipyard.kubeconfig)."""
    from shipyard import kubeconfig
    from shipyard.config import ClientSettings

    url = getattr(args, "server", "http://127.0.0.1:8080")
    settings = ClientSettings(url=url)
    target = Path(args.kubeconfig) if getattr(args, "kubeconfig", "") else None
    ca = getattr(args, "certificate_authority", None)
    try:
        cluster = kubeconfig.cluster_entry(
            getattr(args, "api_server", None) or url,
            Path(ca) if ca else None,
            bool(getattr(args, "insecure_skip_tls_verify", False)),
            getattr(args, "tls_server_name", None),
        )
        path, name = kubeconfig.write_context(
            cluster,
            kubeconfig.user_for(url, settings.bearer_token()),
            namespace=getattr(args, "namespace", None) or settings.namespace,
            path=target,
            name=getattr(args, "context", None),
        )
    except (kubeconfig.KubeconfigError, OSError) as exc:
        log.error("cannot write the kubeconfig: %s", exc)
        return 1
    log.warning("kubectl context %r (for %s) written to %s and made current", name, url, path)
    if cluster["server"].startswith("http://") and any(
        kubeconfig.user_for(url, settings.bearer_token()).values()
    ):
        log.warning(
            "kubectl sends credentials over https only: give the gateway's https URL with "
            "--api-server (and --certificate-authority) for this context to authenticate"
        )
    return 0


def run_kubectl_credential(args: argparse.Namespace) -> int:
    """``shipyard kubectl-credential``: the ExecCredential kubectl's exec plugin reads."""
    from shipyard import kubeconfig
    from shipyard.config import ClientSettings

    url = getattr(args, "server", "http://127.0.0.1:8080")
    try:
        credential = kubeconfig.exec_credential(url, ClientSettings(url=url).bearer_token())
    except kubeconfig.KubeconfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(credential) + "\n")
    return 0


def run_logout(args: argparse.Namespace) -> int:
    url = getattr(args, "server", "http://127.0.0.1:8080")
    log.warning("logged out" if logout(url) else "no stored credentials for %s", url)
    return 0
