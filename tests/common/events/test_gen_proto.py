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


def test_generate_rewrites_cross_file_imports(tmp_path: Path):
    """A future proto importing ours (and a well-known type) gets package-qualified imports."""
    root = tmp_path / "proto"
    pkg = root / "shipyard" / "events" / "v1"
    pkg.mkdir(parents=True)
    (pkg / "resource.proto").write_text(
        (ROOT / "proto" / "shipyard" / "events" / "v1" / "resource.proto").read_text()
    )
    (pkg / "trial.proto").write_text(
        'syntax = "proto3";\npackage shipyard.events.v1;\n'
        'import "shipyard/events/v1/resource.proto";\n'
        'import "google/protobuf/timestamp.proto";\n'
        "message TrialCompleted { ResourceEvent trial = 1; google.protobuf.Timestamp at = 2; }\n"
    )
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "gen_proto.py"),
            "--proto-root",
            str(root),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    code = (out / "shipyard" / "events" / "v1" / "trial_pb2.py").read_text()
    assert "from services.common.eventspb.shipyard.events.v1 import resource_pb2 as " in code
    assert "from google.protobuf import timestamp_pb2 as " in code
    assert "'services.common.eventspb.shipyard.events.v1.trial_pb2'" in code
    assert (out / "shipyard" / "events" / "v1" / "__init__.py").exists()
    compile(code, "trial_pb2.py", "exec")
