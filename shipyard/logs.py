"""``shipyard logs KIND NAME [-f]``: the output of whatever an object runs."""

from __future__ import annotations

import argparse
import sys

from shipyard import kinds
from shipyard.client import Client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="workflow, trial, notebook, inferenceservice, ...")
    parser.add_argument("name")
    parser.add_argument("-f", "--follow", action="store_true", help="keep streaming new lines")
    parser.add_argument("--tail", type=int, help="only the last N lines")
    parser.add_argument("--step", help="one step (node) of a workflow")
    parser.add_argument("-c", "--container", help="one container or component")


def run(args: argparse.Namespace, client: Client) -> int:
    kind = kinds.resolve(args.kind)
    path = kind.collection_path(args.namespace if kind.namespaced else None) + f"/{args.name}/log"
    params = {"follow": "true" if args.follow else "false"}
    if args.tail is not None:
        params["tailLines"] = str(args.tail)
    if args.step:
        params["step"] = args.step
    if args.container:
        params["container"] = args.container
    for line in client.stream_lines(path, params):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0
