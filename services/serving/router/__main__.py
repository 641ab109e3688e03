"""``python -m services.serving.router --graph FILE``: an InferenceGraph's router.

The graph (the InferenceGraph's spec, its InferenceServices resolved to gateway paths by the
controller) is a read-only file the runtime places in the workload. The router listens on
``$PORT`` on all of the workload's own interfaces and reaches the InferenceServices through
the gateway (:mod:`.upstream`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("services.serving.router")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.serving.router")
    parser.add_argument("--graph", required=True, type=Path, help="the graph file (JSON)")
    parser.add_argument("--host", default="0.0.0.0")  # the workload's own network
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        graph = json.loads(args.graph.read_text())
    except (OSError, ValueError) as exc:
        log.error("cannot read the graph %s: %s", args.graph, exc)
        return 1
    import uvicorn

    from .app import RouterApp
    from .engine import GraphRouter
    from .upstream import from_environment

    try:
        upstream = from_environment()
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    try:
        router = GraphRouter(graph, upstream)
    except (KeyError, ValueError) as exc:
        log.error("cannot route the graph %s: %s", args.graph, exc)
        return 1
    app = RouterApp(router)
    log.info("routing graph %s/%s", graph.get("namespace"), graph.get("name"))
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, http="httptools"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
