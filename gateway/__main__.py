"""``python -m gateway``: run the gateway with uvicorn.

Two listeners serve the one app: the gateway's port (plain HTTP, for people, the CLI and the
data plane), and, unless ``SHIPYARD_GATEWAY_TLS_PORT`` is 0, a TLS port that workloads reach
as their in-cluster Kubernetes API (``https://kubernetes.default.svc``; see
services/common/runtime/incluster.py). The TLS listener's certificate comes from the
platform's own CA (services/common/certs.py), whose certificate is every workload's ``ca.crt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Generator
from typing import Any

import uvicorn
from pydantic import ValidationError

from . import katib_grpc
from .app import create_app
from .inference_lane import GatewayHttpProtocol
from .settings import Settings

log = logging.getLogger("gateway")

#: How long the TLS listener waits for the main server's start-up (the app's lifespan).
STARTUP_TIMEOUT = 120.0


class _SecondServer(uvicorn.Server):
    """A listener that shares the main server's app: no lifespan of its own (the app's
    start-up ran once already), and the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(app: Any, host: str, port: int, log_level: str, **tls: Any) -> uvicorn.Config:
    """One listener's uvicorn configuration.

    The access log is uvicorn's INFO: off above that level, where it is never printed but
    still costs its formatting on every request; responses are written head and body
    together (``services.common.http_server``), and inference requests take the lane
    (``gateway.inference_lane``).
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        access_log=logging.getLevelNamesMapping().get(log_level.upper(), 0) <= logging.INFO,
        http=GatewayHttpProtocol,
        **tls,
    )


async def serve(settings: Settings) -> None:
    """Run the gateway's listeners until SIGINT/SIGTERM stops the main one."""
    app = create_app(settings)
    host, log_level = settings.host, settings.log_level.lower()

    def config(port: int, **tls: Any) -> uvicorn.Config:
        return server_config(app, host, port, log_level, **tls)

    main = uvicorn.Server(config(settings.gateway_port))
    running = asyncio.ensure_future(main.serve())
    katib = asyncio.ensure_future(_katib_db_manager(main, running, app, settings))
    running.add_done_callback(lambda _: katib.cancel())
    inference = asyncio.ensure_future(_grpc_inference(main, running, app, settings))
    running.add_done_callback(lambda _: inference.cancel())
    if not settings.workload_tls_port:
        await running
        return
    try:
        cert = settings.workload_api_certificate()
    except OSError as exc:  # a read-only keys directory (a Secret mount) without the CA
        log.error("no TLS listener for workloads: cannot issue its certificate (%s)", exc)
        await running
        return
    tls = _SecondServer(
        config(
            settings.workload_tls_port,
            ssl_certfile=str(cert.cert),
            ssl_keyfile=str(cert.key),
            lifespan="off",
        )
    )
    # Opened once the app has started, so no request reaches it half set up.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while not main.started and not running.done() and loop.time() < deadline:  # noqa: ASYNC110 - uvicorn offers a flag, no event
        await asyncio.sleep(0.02)
    second = asyncio.ensure_future(tls.serve()) if main.started else None
    try:
        await running
    finally:
        if second is not None:
            tls.should_exit = True
            await second


async def _katib_db_manager(
    main: uvicorn.Server, running: asyncio.Future[Any], app: Any, settings: Settings
) -> None:
    """Katib's DB manager API (gateway/katib_grpc.py), once the app has started; stopped
    with the main server."""
    while not main.started and not running.done():  # noqa: ASYNC110 - uvicorn offers a flag
        await asyncio.sleep(0.02)
    if running.done():
        return
    proxy = await katib_grpc.start_listener(app, settings.host, settings.automl_url)
    if proxy is None:
        return
    try:
        await asyncio.shield(running)
    finally:
        await proxy.stop()


async def _grpc_inference(
    main: uvicorn.Server, running: asyncio.Future[Any], app: Any, settings: Settings
) -> None:
    """The Open Inference Protocol's gRPC listener (gateway/grpc_inference.py), once the app
    has started; closed with the main server."""
    if not settings.gateway_grpc_port:
        return
    while not main.started and not running.done():  # noqa: ASYNC110 - uvicorn offers a flag
        await asyncio.sleep(0.02)
    if running.done():
        return
    # Imported here: its protobuf messages share the ``inference`` package with tritonclient's.
    from .grpc_inference import start_listener

    server = await start_listener(app, settings)
    if server is None:
        return
    try:
        await asyncio.shield(running)
    finally:
        server.close()


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        # A refused configuration says why and how to fix it, without a traceback.
        reasons = "; ".join(
            str(e["ctx"]["error"]) if "ctx" in e else e["msg"] for e in exc.errors()
        )
        sys.exit(f"gateway: refusing to start: {reasons}")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # The event loop uvicorn.run would pick (uvloop where it is installed).
    loop_factory = uvicorn.Config("gateway.app:create_app").get_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))


if __name__ == "__main__":
    main()
