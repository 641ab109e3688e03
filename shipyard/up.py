"""`shipyard up`: run the whole platform on one machine as supervised child processes.

The supervisor owns every process it starts: each child runs in its own session (so its
process group can be signalled as a whole, and a terminal Ctrl-C reaches only us), logs
to ``<state_dir>/logs/<name>.log``, and is asked to die with us through PR_SET_PDEATHSIG
on Linux, so even a killed supervisor does not leave a platform running behind it.

:class:`Platform` is the reusable part (tests launch the real platform with it);
:func:`run_up` is the command line around it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx

from services.common.objectstore import S3Config
from services.common.runtime.config import DEFAULT_GATEWAY_TLS_PORT
from shipyard.children import Child, LogStreamer, stop_children, tail
from shipyard.ports import free_port, port_in_use
from shipyard.restarts import GaveUp, Restarter

log = logging.getLogger("shipyard.up")

SERVICES: tuple[str, ...] = ("notebook", "automl", "pipeline", "serving")
GATEWAY = "gateway"
DEFAULT_PORTS: dict[str, int] = {
    GATEWAY: 8080,
    "notebook": 8181,
    "automl": 8182,
    "pipeline": 8183,
    "serving": 8184,
}
DEFAULT_MODULES: dict[str, str] = {
    GATEWAY: "gateway",
    **{name: f"services.{name}" for name in SERVICES},
}
SINGLE_USER_NOTICE = (
    "SINGLE-USER MODE: every request is user@example.com in namespace "
    "kubeflow-user-example-com; there is no login. Set SHIPYARD_AUTH_MODE=oidc for real users."
)
# Settings that we set per child; inherited values would silently point children elsewhere.
_PER_CHILD_ENV = ("SHIPYARD_PORT", "SHIPYARD_SERVICE_NAME")


S3_READY_TIMEOUT = 30.0  # the embedded SeaweedFS answers in ~3 s here


class PlatformError(RuntimeError):
    """The platform could not start; the message says which process and why."""


def nats_answers(url: str, timeout: float = 1.0) -> bool:
    """True if a NATS server greets us (its INFO line) at ``url`` within ``timeout`` seconds."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            return conn.recv(5).startswith(b"INFO")
    except OSError:
        return False


@dataclass
class Platform:
    """The whole platform as child processes: NATS (unless given), the object store (unless
    given), four services, gateway.

    Tests use it directly::

        with Platform(tmp_path, database_url=pg_url, nats_url=nats_url,
                      ports=Platform.free_ports()) as platform:
            httpx.get(platform.gateway_url + "/healthz")

    ``modules`` maps a process name to the Python module run with ``python -m``; it is the
    seam for stand-ins while a service is not written yet. ``s3`` is an S3-compatible store
    to use; None runs an embedded SeaweedFS (``shipyard/seaweedfs.py``) under
    ``<state_dir>/s3``. Either way the platform creates the bucket and passes the store to
    every process as ``SHIPYARD_S3_*``.
    """

    state_dir: Path
    database_url: str = ""
    nats_url: str | None = None
    s3: S3Config | None = None
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    host: str = "127.0.0.1"
    #: The gateway's TLS port for workloads' in-cluster API; None: a free one, chosen at start.
    tls_port: int | None = None
    #: The gateway's gRPC listeners (OIP inference, Katib's DB manager); None: a free one
    #: each, chosen at start; 0: off.
    grpc_port: int | None = None
    db_manager_port: int | None = None
    modules: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODULES))
    auth_mode: str | None = None
    log_level: str = "INFO"
    ready_timeout: float = 60.0
    stop_timeout: float = 10.0
    children: list[Child] = field(default_factory=list, init=False)
    nats_child: Child | None = field(default=None, init=False)
    resolved_nats_url: str = field(default="", init=False)
    s3_child: Child | None = field(default=None, init=False)
    s3_leftovers: list[Path] = field(default_factory=list, init=False)
    resolved_s3: S3Config | None = field(default=None, init=False)
    effective_auth_mode: str = field(default="single-user", init=False)
    restarter: Restarter = field(default_factory=lambda: Restarter(tail), init=False)

    @staticmethod
    def free_ports() -> dict[str, int]:
        """A free port for the gateway and every service."""
        return {name: free_port() for name in DEFAULT_PORTS}

    @property
    def urls(self) -> dict[str, str]:
        """Base URL of every process, keyed by name (``gateway``, ``notebook``, ...)."""
        return {name: f"http://{self.host}:{self.ports[name]}" for name in DEFAULT_PORTS}

    @property
    def gateway_url(self) -> str:
        return self.urls[GATEWAY]

    @property
    def all_children(self) -> list[Child]:
        infra = [c for c in (self.s3_child, self.nats_child) if c]
        return [*self.children, *infra]

    def __enter__(self) -> Platform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, env: Mapping[str, str] | None = None, progress: bool = False) -> None:
        """Start everything and wait for every ``/healthz``; on failure, stop all and raise.

        ``env`` is merged into every child's environment (after the platform's own values,
        so a test can override any of them).
        """
        try:
            self._start(dict(env or {}), progress)
        except BaseException:
            self.stop()
            raise

    def _start(self, overrides: dict[str, str], progress: bool) -> None:
        self.state_dir = self.state_dir.resolve()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        private_key, public_key = _ensure_keys(self.state_dir)
        if self.tls_port is None:
            self.tls_port = free_port(self.host)
        if self.grpc_port is None:
            self.grpc_port = free_port(self.host)
        if self.db_manager_port is None:
            self.db_manager_port = free_port(self.host)
        ports = {
            **{n: self.ports[n] for n in (*SERVICES, GATEWAY)},
            "gateway TLS": self.tls_port,
            "gateway gRPC": self.grpc_port,
            "Katib DB manager": self.db_manager_port,
        }
        for name, port in ports.items():
            if port and port_in_use(self.host, port):
                raise PlatformError(
                    f"{name}: port {port} on {self.host} is already in use "
                    "(another shipyard up? pass other ports)"
                )
        self.resolved_nats_url = self._decide_nats()
        store = self._decide_s3()
        base = {k: v for k, v in os.environ.items() if k not in _PER_CHILD_ENV}
        base.update(
            {
                "PYTHONUNBUFFERED": "1",
                "SHIPYARD_STATE_DIR": str(self.state_dir),
                "SHIPYARD_DATABASE_URL": self.database_url,
                "NATS_URL": self.resolved_nats_url,
                "SHIPYARD_HOST": self.host,
                "SHIPYARD_LOG_LEVEL": self.log_level,
                "SHIPYARD_GATEWAY_PRIVATE_KEY_FILE": str(private_key),
                "SHIPYARD_GATEWAY_PUBLIC_KEY_FILE": str(public_key),
                "SHIPYARD_GATEWAY_PORT": str(self.ports[GATEWAY]),
                "SHIPYARD_GATEWAY_TLS_PORT": str(self.tls_port),
                "SHIPYARD_GATEWAY_GRPC_PORT": str(self.grpc_port),
                "SHIPYARD_KATIB_DB_MANAGER_PORT": str(self.db_manager_port),
                # Workloads reach the API here, with the token the runtime injects.
                "SHIPYARD_GATEWAY_URL": self.gateway_url,
                **{f"SHIPYARD_{n.upper()}_URL": self.urls[n] for n in SERVICES},
                **store.env(),
            }
        )
        if self.auth_mode:
            base["SHIPYARD_AUTH_MODE"] = self.auth_mode
        base.setdefault("SHIPYARD_AUTH_MODE", "single-user")
        self.effective_auth_mode = overrides.get("SHIPYARD_AUTH_MODE", base["SHIPYARD_AUTH_MODE"])
        # The services start while the store comes up (SeaweedFS takes ~3 s); the gateway
        # only once it is ready, so a gateway that answers means a platform that is up.
        for name in (*SERVICES, GATEWAY):
            if name == GATEWAY:
                self._ensure_bucket(store)
            env = {**base, "SHIPYARD_PORT": str(self.ports[name]), **overrides}
            child = Child(
                name=name,
                argv=[sys.executable, "-m", self.modules[name]],
                env=env,
                log_path=self.state_dir / "logs" / f"{name}.log",
                health_url=f"{self.urls[name]}/healthz",
            )
            child.start()
            self.children.append(child)
        self._wait_healthy(self.children, progress)

    def _decide_s3(self) -> S3Config:
        """The given store, or an embedded SeaweedFS started (not yet waited for) here."""
        if self.s3 is not None:
            self.resolved_s3 = self.s3
            return self.s3
        from shipyard.seaweedfs import EmbeddedSeaweedFS

        embedded = EmbeddedSeaweedFS(self.state_dir / "s3", host="127.0.0.1")
        self.s3_child = Child(
            name="s3",
            argv=embedded.argv(),
            env=dict(os.environ),
            log_path=self.state_dir / "logs" / "s3.log",
            stop_signal=signal.SIGINT,
        )
        self.s3_child.start()
        self.s3_leftovers = embedded.grpc_sockets()
        self.resolved_s3 = embedded.config
        return embedded.config

    def _ensure_bucket(self, store: S3Config) -> None:
        """Create the bucket; a store that cannot be reached or refuses us is a PlatformError.

        An embedded store is given :data:`S3_READY_TIMEOUT` to come up; a configured one about
        a second (a few tries), and the error says which endpoint and what to check.
        """
        from services.common.objectstore import CredentialsRefused, ObjectStore, ObjectStoreError

        child = self.s3_child
        wait = S3_READY_TIMEOUT if child else 1.0

        async def ensure() -> bool:
            deadline = time.monotonic() + wait
            async with ObjectStore(
                store, connect_timeout=2, read_timeout=10, max_attempts=1
            ) as client:
                while True:
                    try:
                        return await client.ensure_bucket()
                    except CredentialsRefused:
                        raise
                    except ObjectStoreError:
                        if time.monotonic() > deadline:
                            raise
                        if child:
                            self._raise_if_dead(child, "during startup")
                    await asyncio.sleep(0.2)

        try:
            # In a thread of its own: start() may be called from a running event loop.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                created = pool.submit(asyncio.run, ensure()).result()
        except ObjectStoreError as exc:
            origin = (
                f"the embedded SeaweedFS (log: {child.log_path}) did not come up within "
                f"{wait:.0f} s: "
                if child
                else "object store (SHIPYARD_S3_*): "
            )
            raise PlatformError(f"{origin}{exc}") from None
        log.info(
            "object store %s, bucket %r%s%s",
            store.endpoint,
            store.bucket,
            " (created)" if created else "",
            f" (embedded SeaweedFS, data in {self.state_dir / 's3'})" if child else "",
        )

    def _decide_nats(self) -> str:
        """Use the given NATS if it answers within 1 s, else run our own on a free port."""
        if self.nats_url and nats_answers(self.nats_url, timeout=1.0):
            log.info("using NATS at %s", self.nats_url)
            return self.nats_url
        if self.nats_url:
            log.warning("NATS at %s does not answer; starting our own", self.nats_url)
        from services.common.natsbin import nats_server_binary

        port = free_port()
        store = self.state_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self.nats_child = Child(
            name="nats",
            argv=[
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-js",
                "-sd",
                str(store),
            ],
            env=dict(os.environ),
            log_path=self.state_dir / "logs" / "nats.log",
        )
        self.nats_child.start()
        url = f"nats://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            code = self.nats_child.exit_code()
            if code is not None:
                raise PlatformError(
                    f"nats-server exited with code {code}; last lines of "
                    f"{self.nats_child.log_path}:\n{tail(self.nats_child.log_path)}"
                )
            if nats_answers(url, timeout=0.5):
                log.info("started nats-server (JetStream) at %s, store %s", url, store)
                return url
            time.sleep(0.1)
        raise PlatformError(f"nats-server did not answer at {url} within 15 s")

    def _wait_healthy(self, children: Sequence[Child], progress: bool) -> None:
        pending = {c.name: c for c in children}
        start = time.monotonic()
        deadline = start + self.ready_timeout
        last_report = start
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for name, child in list(pending.items()):
                    self._raise_if_dead(child, "during startup")
                    assert child.health_url
                    try:
                        if client.get(child.health_url).status_code == 200:
                            del pending[name]
                            log.info("%s is up at %s", name, self.urls[name])
                    except httpx.HTTPError:
                        pass
                now = time.monotonic()
                if not pending:
                    break
                if now > deadline:
                    names = ", ".join(pending)
                    details = "\n".join(
                        f"--- {c.log_path}:\n{tail(c.log_path)}" for c in pending.values()
                    )
                    raise PlatformError(
                        f"not healthy after {self.ready_timeout:.0f} s: {names}\n{details}"
                    )
                if progress and now - last_report >= 2:
                    last_report = now
                    log.info("waiting for %s (%.0f s)", ", ".join(pending), now - start)
                time.sleep(0.2)

    @staticmethod
    def _raise_if_dead(child: Child, when: str) -> None:
        code = child.exit_code()
        if code is not None:
            raise PlatformError(
                f"{child.name} exited with code {code} {when}; last lines of "
                f"{child.log_path}:\n{tail(child.log_path)}"
            )

    def supervise(self) -> None:
        """Restart any process that has exited (shipyard/restarts.py); raise
        :class:`PlatformError` when one keeps exiting right after it starts."""
        try:
            self.restarter.check(self.all_children)
        except GaveUp as exc:
            raise PlatformError(str(exc)) from None

    def pids(self) -> list[int]:
        """Pids of every process we started and their descendants in the same groups."""
        return [p.pid for c in self.all_children for p in c.group_members()]

    def stop(self) -> None:
        """Stop the gateway and services first, then the object store and NATS; idempotent."""
        if self.children:
            stop_children(list(reversed(self.children)), timeout=self.stop_timeout)
        if self.s3_child:
            # SeaweedFS's filer waits on open gRPC streams when asked to stop; its writes are
            # written through to its files (volume data, the filer's LevelDB log), so a SIGKILL
            # a second later loses nothing a stopped platform had acknowledged.
            stop_children([self.s3_child], timeout=min(self.stop_timeout, 1.0))
            for path in self.s3_leftovers:
                path.unlink(missing_ok=True)
        if self.nats_child:
            stop_children([self.nats_child], timeout=self.stop_timeout)
        self.children = []
        self.nats_child = None
        self.s3_child = None


def _ensure_keys(state_dir: Path) -> tuple[Path, Path]:
    """The signing keys (gateway, service accounts) and the CA of workloads' in-cluster API."""
    from services.common.certs import ensure_workload_ca
    from services.common.identity import ensure_gateway_keys

    gateway_keys = ensure_gateway_keys(state_dir)
    ensure_workload_ca(state_dir / "keys")
    return gateway_keys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shipyard up``; defaults come from the SHIPYARD_* environment."""
    env = os.environ
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(env.get("SHIPYARD_STATE_DIR", ".shipyard")),
        help="where databases, keys, logs and the NATS store live (default .shipyard)",
    )
    parser.add_argument(
        "--database-url",
        default=env.get("SHIPYARD_DATABASE_URL", ""),
        help="postgresql+asyncpg:// URL; empty means one SQLite file per service",
    )
    parser.add_argument(
        "--nats-url",
        default=env.get("NATS_URL") or None,
        help="an existing NATS JetStream; if unset or not answering, start nats-server",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address every process binds")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="gateway port (default SHIPYARD_GATEWAY_PORT, else 8080)",
    )
    for name in SERVICES:
        parser.add_argument(
            f"--{name}-port",
            type=int,
            default=None,
            help=f"{name} service port (default {DEFAULT_PORTS[name]})",
        )
    parser.add_argument(
        "--tls-port",
        type=int,
        default=None,
        help="gateway TLS port for workloads (default SHIPYARD_GATEWAY_TLS_PORT, else 8443)",
    )
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="pick a free port for every process whose port is not given explicitly",
    )
    parser.add_argument("--log-level", default=env.get("SHIPYARD_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--logs", action="store_true", help="also stream every process's log to the terminal"
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument(
        "--process-module",
        action="append",
        default=[],
        metavar="NAME=MODULE",
        help="run MODULE instead of the default for NAME (development and stand-ins)",
    )
    parser.add_argument(
        "--keys-only",
        action="store_true",
        help="create the state dir and the gateway keys, then exit (container init step)",
    )


def _ports_from_args(args: argparse.Namespace) -> dict[str, int]:
    given: dict[str, int | None] = {
        GATEWAY: args.port,
        **{n: getattr(args, f"{n}_port") for n in SERVICES},
    }
    env_gateway = os.environ.get("SHIPYARD_GATEWAY_PORT")
    if given[GATEWAY] is None and env_gateway and not args.free_ports:
        given[GATEWAY] = int(env_gateway)
    ports: dict[str, int] = {}
    for name, port in given.items():
        if port is not None:
            ports[name] = port
        else:
            ports[name] = free_port(args.host) if args.free_ports else DEFAULT_PORTS[name]
    return ports


def _tls_port_from_args(args: argparse.Namespace) -> int | None:
    """The TLS port given, else SHIPYARD_GATEWAY_TLS_PORT or 8443; None (free) if asked."""
    env = os.environ.get("SHIPYARD_GATEWAY_TLS_PORT")
    fallback = None if args.free_ports else int(env or DEFAULT_GATEWAY_TLS_PORT)
    return args.tls_port if args.tls_port is not None else fallback


def _listener_port(args: argparse.Namespace, env_name: str, default: int) -> int | None:
    """A gateway listener's port: ``env_name`` or ``default``; None (free) with --free-ports."""
    env = os.environ.get(env_name)
    return None if args.free_ports and not env else int(env or default)


def _modules_from_args(overrides: Sequence[str]) -> dict[str, str]:
    modules = dict(DEFAULT_MODULES)
    for item in overrides:
        name, sep, module = item.partition("=")
        if not sep or name not in modules or not module:
            raise PlatformError(
                f"--process-module {item!r}: expected NAME=MODULE with NAME one of "
                f"{', '.join(modules)}"
            )
        modules[name] = module
    return modules


class _Shutdown(Exception):
    """Raised from a signal handler to unwind into the cleanup path."""


def run_up(args: argparse.Namespace) -> int:
    """Run the platform until SIGINT/SIGTERM; 0 on a clean stop, 1 if anything failed."""
    _configure_logging(args.log_level)
    state_dir: Path = args.state_dir.resolve()
    if args.keys_only:
        state_dir.mkdir(parents=True, exist_ok=True)
        private, public = _ensure_keys(state_dir)
        log.info("gateway keys: %s, %s", private, public)
        return 0
    try:
        from services.common.settings import ServiceSettings

        platform = Platform(
            state_dir=state_dir,
            database_url=args.database_url,
            nats_url=args.nats_url,
            s3=ServiceSettings().object_store_config(),
            ports=_ports_from_args(args),
            tls_port=_tls_port_from_args(args),
            grpc_port=_listener_port(args, "SHIPYARD_GATEWAY_GRPC_PORT", 8081),
            db_manager_port=_listener_port(args, "SHIPYARD_KATIB_DB_MANAGER_PORT", 6789),
            host=args.host,
            modules=_modules_from_args(args.process_module),
            log_level=args.log_level,
            ready_timeout=args.ready_timeout,
        )
    except PlatformError as exc:
        log.error("%s", exc)
        return 1

    _check_sandbox(state_dir)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Shutdown(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    streamer: LogStreamer | None = None
    code = 0
    try:
        log.info("starting shipyard (state in %s, logs in %s)", state_dir, state_dir / "logs")
        platform.start(progress=True)
        if args.logs:
            streamer = LogStreamer(platform.all_children, color=sys.stderr.isatty())
            streamer.start()
        _announce(platform)
        while True:
            platform.supervise()
            time.sleep(0.5)
    except _Shutdown as exc:
        log.info("%s received: stopping", exc)
    except PlatformError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        for s in previous:  # a second Ctrl-C must not interrupt the (bounded) cleanup
            signal.signal(s, signal.SIG_IGN)
        if streamer:
            streamer.stop()
        platform.stop()
        log.info("all processes stopped")
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


def _check_sandbox(state_dir: Path) -> None:
    """Say at start whether workloads can run, and what the sandbox enforces here (see
    ``sandbox.startup_report``); the state directory is the platform's alone."""
    from services.common.runtime.config import RuntimeSettings

    settings = RuntimeSettings()
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)  # keys, databases and workloads' files: the platform's alone
    if settings.runtime == "local":
        from services.common.runtime import sandbox

        log.log(*sandbox.startup_report(settings.bwrap_path))


def _announce(platform: Platform) -> None:
    log.info("shipyard is up: %s", platform.gateway_url)
    for name in SERVICES:
        log.info(
            "  %-9s %s (logs: %s)",
            name,
            platform.urls[name],
            platform.state_dir / "logs" / f"{name}.log",
        )
    log.info("  nats      %s", platform.resolved_nats_url)
    if platform.resolved_s3:
        kind = "embedded SeaweedFS" if platform.s3_child else "SHIPYARD_S3_ENDPOINT"
        log.info(
            "  s3        %s bucket %s (%s)",
            platform.resolved_s3.endpoint,
            platform.resolved_s3.bucket,
            kind,
        )
    if platform.effective_auth_mode == "single-user":
        log.warning(SINGLE_USER_NOTICE)
    log.info("press Ctrl-C to stop")


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(message)s", stream=sys.stderr)
    log.setLevel(level.upper() if isinstance(level, str) else level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m shipyard.up``."""
    parser = argparse.ArgumentParser(prog="shipyard up", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_up(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
