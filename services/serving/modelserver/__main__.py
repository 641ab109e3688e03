"""``python -m services.serving.modelserver --model-name X --model-dir DIR --protocol v2``.

With ``--storage-plan PLAN`` it first puts a downloaded model into its directory (the storage
initializer, :mod:`.initializer`). Then it loads the model before listening, so the server is
ready as soon as it answers: the readiness probe (``/v2/health/ready`` or
``/v1/models/{name}``) then passes on its first try. A model that cannot be had or loaded exits
1 with the reason on stderr (the workload's log, which the InferenceService's status quotes).

It listens on ``$PORT`` on all of the workload's own interfaces (``0.0.0.0``): the workload's
network is its own (a sandbox's namespace locally, the pod's on Kubernetes), and the runtime
decides who reaches it. In a local sandbox it also listens on the abstract unix socket that
``$SHIPYARD_HTTP_SOCKET`` names, which the sandbox's endpoint uses first.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path

from services.serving.unpack import UnpackError

from . import huggingface
from .batcher import DEFAULT_MAX_LATENCY_MS, ModelBatcher
from .loaders import ModelLoadError, load_model

#: Set by the local runtime for a server in a sandbox (services.common.runtime.netns).
LOCAL_SOCKET_ENV = "SHIPYARD_HTTP_SOCKET"

log = logging.getLogger("services.serving.modelserver")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.serving.modelserver")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--model-format", default="sklearn")
    parser.add_argument("--protocol", choices=("v1", "v2"), default="v1")
    parser.add_argument("--host", default="0.0.0.0")  # the workload's own network
    parser.add_argument(
        "--storage-plan",
        help="a storage initializer plan (JSON): download the model into its directory first",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument(
        "--path-prefix",
        default=os.environ.get("SHIPYARD_PATH_PREFIX", ""),
        help="also serve under this prefix (e.g. /serving/<ns>/<isvc>); "
        "default $SHIPYARD_PATH_PREFIX, which custom predictors are given",
    )
    parser.add_argument(
        "--nthread",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS") or "1"),
        help="threads of the format's library (xgboost, lightgbm, onnxruntime, torch); "
        "default $OMP_NUM_THREADS (an InferenceService sets it with the predictor's env), else 1",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=0,
        help="batch concurrent requests into one model call of at most this many rows "
        "(spec.predictor.batcher.maxBatchSize); 0, the default, does not batch",
    )
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=DEFAULT_MAX_LATENCY_MS,
        help="with --max-batch-size: run a batch at the latest this long after its first "
        "request arrived (spec.predictor.batcher.maxLatency)",
    )
    parser.add_argument("--log-level", default="info")
    huggingface.add_arguments(parser)  # KServe huggingfaceserver's --task and friends
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    huggingface.apply_arguments(args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.storage_plan:
        from .initializer import StorageInitError, initialize, load_plan

        started = time.monotonic()
        try:
            initialize(load_plan(args.storage_plan))
        except (StorageInitError, UnpackError, OSError) as exc:
            log.error("cannot download model %s: %s", args.model_name, exc)
            return 1
        log.info("model downloaded in %.2f s", time.monotonic() - started)
    try:
        model = load_model(args.model_name, args.model_format, args.model_dir, args.nthread)
    except ModelLoadError as exc:
        log.error("cannot load model %s: %s", args.model_name, exc)
        return 1
    import uvicorn

    from .app import create_model_app
    from .protocol import ModelHttpProtocol

    batcher = None
    if args.max_batch_size > 0:
        batcher = ModelBatcher(model, args.max_batch_size, args.max_latency_ms)
        log.info("batching: %d rows, %g ms", args.max_batch_size, args.max_latency_ms)
    app = create_model_app(model, args.protocol, args.path_prefix, batcher)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        # Inference requests answered in the protocol, in one socket write: .protocol.
        http=ModelHttpProtocol,
        loop="uvloop" if _has_uvloop() else "asyncio",
    )
    listeners = [config.bind_socket(), *_local_listener(os.environ.get(LOCAL_SOCKET_ENV, ""))]
    uvicorn.Server(config).run(sockets=listeners)
    return 0


def _local_listener(name: str) -> list[socket.socket]:
    """The unix socket a local sandbox names (``@...``: abstract) beside the port, which its
    endpoint connects to first (a shorter hop than loopback TCP:
    services/common/runtime/netns.py); none elsewhere, or where the name is taken (another
    server on this port number, in a network namespace shared with it)."""
    if not name.startswith("@"):
        return []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + name[1:])
    except OSError:
        sock.close()
        return []
    sock.listen(2048)
    return [sock]


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
