"""The supervisor loads the standard library and its own modules, never platform code."""

import ast
import subprocess
import sys
from pathlib import Path

from services.common.runtime import supervisor

SUPERVISOR = Path(supervisor.__file__).resolve()
OWN_MODULES = [
    SUPERVISOR,
    SUPERVISOR.with_name("netns.py"),
    *SUPERVISOR.parent.glob("supervision/*.py"),
]


def test_supervisor_modules_import_only_the_stdlib() -> None:
    outside = []
    for path in OWN_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            own = {"supervision", "netns", "typing"}  # typing: under TYPE_CHECKING only
            outside += [
                f"{path.name}: {name}"
                for name in names
                if name.split(".")[0] not in sys.stdlib_module_names | own
            ]
    assert len(OWN_MODULES) > 5 and outside == []


def test_supervisor_run_isolated_loads_no_platform_module() -> None:
    """Run as the runtime runs it (``-I -S``, by path); ``-X importtime`` lists every import."""
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", str(SUPERVISOR)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PYTHONPATH": str(Path.cwd())},  # ignored under -I, as it must be
    )
    assert out.returncode == 2 and "usage: supervisor.py <workload-dir>" in out.stderr
    loaded = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line]
    assert "supervision.core" in loaded and "supervision.launch" in loaded
    assert not [name for name in loaded if name.split(".")[0] in ("services", "gateway", "site")]
