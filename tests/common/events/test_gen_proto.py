"""The committed services/common/eventspb must equal a fresh run of tools/gen_proto.py."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "services" / "common" / "eventspb"


def _files(root: Path) -> set[Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_generate_eventspb_matches_committed(tmp_path: Path):
    out = tmp_path / "eventspb"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert _files(out) == _files(COMMITTED), "eventspb is stale: run `make proto`"
    stale = [
        str(p)
        for p in sorted(_files(out))
        if not filecmp.cmp(out / p, COMMITTED / p, shallow=False)
    ]
    assert not stale, f"eventspb is stale ({stale}): run `make proto`"


def test_generated_modules_import_as_package():
    from services.common.eventspb.shipyard.events.v1 import resource_pb2

    assert resource_pb2.ResourceEvent.__module__ == (
        "services.common.eventspb.shipyard.events.v1.resource_pb2"
    )
    fields = [f.name for f in resource_pb2.ResourceEvent.DESCRIPTOR.fields]
    assert fields == [
        "type",
        "api_version",
        "kind",
        "namespace",
        "name",
        "uid",
        "resource_version",
        "object_json",
    ]
