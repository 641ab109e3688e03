"""With ``CI=true`` an unexpected skip fails the run (tests/conftest.py): shown on a real
pytest run of a file that skips, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    case = tmp_path / "test_skips_here.py"
    case.write_text("import pytest\n\ndef test_x():\n    pytest.skip('no chromium here')\n")
    # The project's conftest is loaded by naming it as a plugin: the temporary file lies
    # outside tests/.
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            str(case),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env={**os.environ, "CI": ci},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unexpected_skip_fails_ci(tmp_path: Path) -> None:
    result = _run(tmp_path, "true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unexpected skips fail the run" in result.stdout
    assert "no chromium here" in result.stdout


def test_outside_ci_a_skip_is_a_skip(tmp_path: Path) -> None:
    result = _run(tmp_path, "")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
