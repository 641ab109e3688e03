"""Every service's API fuzzed through the gateway with a large budget (issue 17).

Starts a whole platform (single-user mode, SQLite, the embedded object store, NATS from
``NATS_URL`` or its own), then runs schemathesis (``tests/fuzzing.py``) against each
service's public OpenAPI document with ``--examples`` cases per operation and the coverage
phase (boundary and type-confusion values) on top of examples and random fuzzing. Prints
one line per service (requests sent, verdict) and the failures in full; exit status 1 if
any request got a 5xx.

    .venv/bin/python bench/bench_fuzz.py [--examples 40] [--seed 1]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shipyard.up import Platform  # noqa: E402
from tests.fuzzing import SERVICES, fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40, help="cases per operation")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        base = Path(tmp)
        with Platform(base / "state", ports=Platform.free_ports(), auth_mode="single-user") as p:
            print(f"platform up at {p.gateway_url}; {args.examples} examples per operation")
            for service in SERVICES:
                work = base / service
                work.mkdir()
                started = time.monotonic()
                try:
                    out = fuzz(
                        p.gateway_url,
                        service,
                        args.examples,
                        work,
                        seed=args.seed,
                        phases="examples,coverage,fuzzing",
                        timeout=3600,
                    )
                    verdict = "no 5xx"
                except AssertionError as exc:
                    out, verdict = str(exc), "SERVER ERRORS"
                    failed.append(service)
                sent = re.search(r"^\s*(\d+) generated", out, re.MULTILINE)
                print(
                    f"{service:10} {sent.group(1) if sent else '?':>7} requests "
                    f"{time.monotonic() - started:6.0f} s  {verdict}"
                )
                if service in failed:
                    print(out[-8000:])
    print("FAIL: " + ", ".join(failed) if failed else "PASS: no request got a 5xx")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
