"""What runs a model: the command, arguments, image and protocol of a revision's server.

A model block (``spec.predictor.model`` or a legacy framework block) is served by

- its own ``command``, when it names one (the user's server, given the platform's arguments);
- else the runtime KServe's rules select (services.serving.runtimes): the platform's model
  server, run with the workload runtime's interpreter for platform tools in the platform's
  image, when the runtime's container runs it; else the runtime's container itself, the
  user's own server, with the model's place in its environment.

The platform's model server downloads an ``s3://`` or ``http(s)://`` model itself when it
starts (``--storage-plan``). A server of the user's own cannot be asked to, so its workload
gets KServe's storage initializer as an init container: the platform's image and Python run
:mod:`services.serving.modelserver.initializer` on the plan, into the emptyDir at
``/mnt/models``, before the user's command starts; ``MODEL_DIR`` is ``/mnt/models``, as
KServe gives it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.resources import ResourceStore
from services.common.runtime import Runtime
from services.serving.components import data_plane_prefix
from services.serving.models import batcher_args
from services.serving.runtimes import (
    CLUSTER_RUNTIME_LABEL,
    MODEL_SERVER,
    RUNTIME_LABEL,
    runtime_container,
    select_runtime,
)
from services.serving.storage import MODEL_MOUNT, Storage

#: KServe's name for the init container that puts the model in place.
STORAGE_INITIALIZER = "storage-initializer"
INITIALIZER_MODULE = "services.serving.modelserver.initializer"


@dataclass(frozen=True)
class ModelServer:
    """How a revision serves its model: argv, image and protocol, and for a model served by a
    ServingRuntime the labels naming it, its extra environment and its merged container."""

    command: list[str]
    args: list[str]
    image: str | None
    protocol: str
    labels: dict[str, str] = field(default_factory=dict)
    env: list[dict[str, Any]] = field(default_factory=list)
    container: dict[str, Any] | None = None
    #: Where the model is (resolved after the runtime is chosen: none, nothing downloads).
    storage: Storage = field(default_factory=lambda: Storage("", [], []))
    #: The workload's init containers (WorkloadSpec.initContainers): the storage
    #: initializer of a user's own server whose model is downloaded.
    init: list[dict[str, Any]] = field(default_factory=list)

    def probe_path(self, name: str) -> str:
        """Where readiness is asked: the runtime container's own probe, else the protocol's
        (V2's server readiness, V1's model)."""
        http_get = ((self.container or {}).get("readinessProbe") or {}).get("httpGet") or {}
        default = "/v2/health/ready" if self.protocol == "v2" else f"/v1/models/{name}"
        return str(http_get.get("path") or default)


async def model_server(
    store: ResourceStore,
    runtime: Runtime,
    isvc: dict[str, Any],
    block: dict[str, Any],
    fmt: str,
    fetch: Callable[[], Awaitable[Storage]],
    batcher: dict[str, Any] | None = None,
) -> ModelServer:
    """The server of a model block (see the module's docstring). RuntimeNotAvailable (a
    ValueError) when no runtime serves it, ValueError when the runtime's container cannot
    run here. ``fetch`` resolves the model's storage once a server is chosen."""
    meta = isvc["metadata"]
    ns = meta["namespace"]
    if block.get("command"):
        protocol = block.get("protocolVersion") or "v1"
        storage = await fetch()
        command, args, image = platform_args(runtime, block, fmt, protocol, storage, isvc, batcher)
        return ModelServer(command, args, image, protocol, storage=storage)
    selected = await select_runtime(store, ns, block, fmt)
    storage = await fetch()
    container = runtime_container(selected, meta, block)
    labels = {CLUSTER_RUNTIME_LABEL if selected.cluster else RUNTIME_LABEL: selected.name}
    if selected.platform_server:
        command, args, image = platform_args(
            runtime, container, fmt, selected.protocol, storage, isvc, batcher
        )
        image = container.get("image") or image
        return ModelServer(command, args, image, selected.protocol, labels, [], container, storage)
    command = list(container.get("command") or [])
    if not command:
        raise ValueError(
            f"runtime {selected.name!r}: its container names no command, and an image's "
            "own entrypoint cannot run here (the local runtime runs commands, not images)"
        )
    init = storage_initializer(runtime, storage)
    env = [
        {"name": "STORAGE_URI", "value": block.get("storageUri") or ""},
        # A downloaded model is the directory the initializer filled, whatever its objects.
        {"name": "MODEL_DIR", "value": MODEL_MOUNT if init else storage.model_dir},
        {"name": "PROTOCOL_VERSION", "value": selected.protocol},
        {"name": "SHIPYARD_PATH_PREFIX", "value": data_plane_prefix(isvc)},
    ]
    args = list(container.get("args") or [])
    image = container.get("image")
    return ModelServer(
        command, args, image, selected.protocol, labels, env, container, storage, init
    )


def storage_initializer(runtime: Runtime, storage: Storage) -> list[dict[str, Any]]:
    """KServe's storage-initializer init container for a downloaded model (none for a
    volume's): the platform's initializer, in the platform's image, on the plan the
    workload's ``files`` hold, filling the emptyDir the server's container mounts too."""
    if not storage.plan:
        return []
    return [
        {
            "name": STORAGE_INITIALIZER,
            "image": runtime.platform_image,
            "command": [runtime.python, "-m", INITIALIZER_MODULE],
            "args": [storage.plan],
        }
    ]


def platform_args(
    runtime: Runtime,
    block: dict[str, Any],
    fmt: str,
    protocol: str,
    storage: Storage,
    isvc: dict[str, Any],
    batcher: dict[str, Any] | None = None,
) -> tuple[list[str], list[str], str | None]:
    """(command, args, image) of the platform's model server for a block (or a runtime's
    container), run with the runtime's interpreter for platform tools in the platform's
    image, unless the block names its own command or image. The platform's arguments
    (model place, port, prefix) come last, so they win over a runtime's."""
    custom = block.get("command") and block["command"][-2:] != ["-m", MODEL_SERVER]
    command = block["command"] if custom else [runtime.python, "-m", MODEL_SERVER]
    image = block.get("image") or runtime.platform_image
    extra = list(block.get("args") or []) if block.get("command") else []
    storage_args = ["--storage-plan", storage.plan] if storage.plan else []
    # A command of the block's own takes its args first; a runtime's templated args follow
    # the storage plan (and precede what the platform fixes, which wins).
    head = [*extra, *storage_args] if custom else [*storage_args, *extra]
    args = [
        *head,
        "--model-name",
        isvc["metadata"]["name"],
        "--model-dir",
        storage.model_dir,
        "--model-format",
        fmt,
        "--protocol",
        protocol,
        "--port",
        "$(PORT)",
        "--path-prefix",
        data_plane_prefix(isvc),
        *([] if custom else batcher_args(batcher)),
    ]
    return command, args, image
