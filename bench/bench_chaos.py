"""The Postgres and NATS outage tests (tests/chaos) with the outage issue 17 names: 30 s.

``make test`` runs them with 20 s outages to stay short; this runs the same tests with
``--outage`` seconds (default 30) and prints each test's recovery figures (how long the
services took to be ready again, to drain their outboxes, to finish the work in flight).
They bring their own Postgres and nats-server, so nothing else needs to run. Exit status 1
if a test failed.

    .venv/bin/python bench/bench_chaos.py [--outage 30]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds each outage lasts")
    args = parser.parse_args()
    env = {**os.environ, "SHIPYARD_CHAOS_OUTAGE_SECONDS": str(args.outage)}
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "tests/chaos",
                f"--basetemp={tmp}",
                "-p",
                "no:cacheprovider",
                "-o",
                "log_cli=true",
                "--log-cli-level=WARNING",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    figures = re.findall(r"^WARNING\s+tests\.chaos\.\S+\s+(.*outage.*)$", done.stdout, re.M)
    for line in figures:
        print(line)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    print(summary)
    if done.returncode != 0:
        print(done.stdout[-6000:], done.stderr[-2000:], sep="\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
