"""Runs inside a step's sandbox around the user's command.

``python -I -S stepwrap.py PLAN -- argv...``

Argo runs a ``wait`` sidecar that copies outputs out of the pod; here a tiny wrapper does the
same job in-process: it places input artifacts, runs the command (teeing stdout when a script's
``outputs.result`` is wanted), then collects output parameters and artifacts into the step's
own directory for the pipeline service to read. Standard library only: it starts with ``-I -S``
so the wrapper adds only a few milliseconds to a step.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

RESULT_LIMIT = 256 * 1024


def _place_inputs(base: str, inputs: list) -> None:
    for art in inputs:
        path = art["path"]
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        if art.get("data") is not None:
            with open(path, "w") as f:
                f.write(art["data"])
        else:
            src = os.path.join(base, art["src"])
            if os.path.isdir(src):
                shutil.copytree(src, path, dirs_exist_ok=True)
            elif os.path.exists(src):
                shutil.copyfile(src, path)
        if art.get("mode") is not None:
            os.chmod(path, int(art["mode"]))


def _run(argv: list, capture: bool) -> tuple:
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE if capture else None)
    except OSError as exc:
        sys.stderr.write(f"cannot run {argv[0]!r}: {exc}\n")
        return 127, None

    def forward(signum, frame):  # noqa: ANN001 - signal handler signature
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    if not capture:
        return proc.wait(), None
    out = bytearray()
    assert proc.stdout is not None
    stdout = proc.stdout
    for chunk in iter(lambda: stdout.read1(65536), b""):  # type: ignore[attr-defined]
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        if len(out) < RESULT_LIMIT:
            out += chunk[: RESULT_LIMIT - len(out)]
    return proc.wait(), out.decode(errors="replace")


def _collect(base: str, plan: dict, result) -> dict:
    outputs: dict = {"parameters": {}, "artifacts": {}, "errors": []}
    if result is not None:
        outputs["result"] = result.rstrip("\n")
    for p in plan.get("outputParameters", []):
        try:
            with open(p["path"]) as f:
                outputs["parameters"][p["name"]] = f.read().rstrip("\n")
        except OSError as exc:
            if p.get("default") is not None:
                outputs["parameters"][p["name"]] = p["default"]
            else:
                outputs["errors"].append(
                    f"output parameter {p['name']!r}: {exc.strerror}: {p['path']}"
                )
    for a in plan.get("outputArtifacts", []):
        dest = os.path.join(base, "artifacts", a["name"])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isdir(a["path"]):
            shutil.copytree(a["path"], dest, dirs_exist_ok=True)
            outputs["artifacts"][a["name"]] = "dir"
        elif os.path.exists(a["path"]):
            shutil.copyfile(a["path"], dest)
            outputs["artifacts"][a["name"]] = "file"
        elif not a.get("optional"):
            outputs["errors"].append(f"output artifact {a['name']!r}: no such file: {a['path']}")
    return outputs


def main() -> int:
    plan_path = sys.argv[1]
    argv = sys.argv[3:] if len(sys.argv) > 2 and sys.argv[2] == "--" else sys.argv[2:]
    base = os.path.dirname(plan_path)
    with open(plan_path) as f:
        plan = json.load(f)
    _place_inputs(base, plan.get("inputs", []))
    code, result = _run(argv, bool(plan.get("captureResult")))
    outputs = _collect(base, plan, result)
    outputs["exitCode"] = code
    tmp = os.path.join(base, ".outputs.json.tmp")
    with open(tmp, "w") as f:
        json.dump(outputs, f)
    os.replace(tmp, os.path.join(base, "outputs.json"))
    return code


if __name__ == "__main__":
    sys.exit(main())
