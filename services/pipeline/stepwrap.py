"""Runs inside a step's sandbox around the user's command.

``python -I -S stepwrap.py PLAN -- argv...``

Argo runs a ``wait`` sidecar that copies outputs out of the pod; here a tiny wrapper does the
same job in-process: it downloads input artifacts from the object store (presigned URLs the
service made for this step), runs the command (teeing stdout when a script's ``outputs.result``
is wanted), then uploads output artifacts (tar+gzip unless ``archive: none``, with presigned
PUTs and POST forms that allow only the artifact's own keys) and last its *report* (output
parameters, the result, what it uploaded, the work files the plan names) with a presigned PUT,
for the pipeline service to read once the step has ended. The plan and this file are the workload's
read-only files; ``workDir`` (the step's emptyDir) is where it unpacks and packs.
Standard library only: it starts with ``-I -S`` so the wrapper adds only a few milliseconds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

RESULT_LIMIT = 256 * 1024
FILE_LIMIT = 1024 * 1024  # one work file carried in the report
CHUNK = 1024 * 1024
# Transient store errors (connection refused or reset, 5xx, 429) are retried with back-off
# (0.5 s doubling to 4 s) for up to RETRY_SECONDS: a store restarting or unreachable for a
# minute costs the step that minute, not its artifacts. Each retry starts the transfer over.
RETRY_SECONDS = float(os.environ.get("SHIPYARD_STORE_RETRY_SECONDS", "120"))
TIMEOUT = 60


class _Refused(Exception):
    def __init__(self, code: int, body: bytes) -> None:
        super().__init__(code)
        self.code, self.body = code, body


def _retrying(what, action):  # noqa: ANN001, ANN202 - stdlib only, no typing import
    delay, give_up = 0.5, time.monotonic() + RETRY_SECONDS
    while True:
        try:
            return action()
        except (HTTPError, _Refused) as exc:
            body = exc.body if isinstance(exc, _Refused) else exc.read()
            if exc.code < 500 and exc.code != 429 or time.monotonic() > give_up:
                detail = body[:300].decode(errors="replace")
                raise OSError(f"{what}: the store answered {exc.code}: {detail}") from None
        except (URLError, OSError) as exc:
            if time.monotonic() > give_up:
                raise OSError(f"{what}: {exc}") from None
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def _download(url: str, dest: str) -> None:
    def fetch() -> None:
        tmp = f"{dest}.part"
        with urlopen(url, timeout=TIMEOUT) as resp, open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f, CHUNK)
        os.replace(tmp, dest)

    _retrying("download", fetch)


def _unpack(archive: str, path: str) -> None:
    """Argo's rule: a tarball of one file becomes the file at ``path``; a tarball of one
    directory becomes the directory ``path``; anything else is extracted into ``path``."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(members) == 1 and members[0].isfile():
            src = tar.extractfile(members[0])
            assert src is not None
            with src, open(path, "wb") as f:
                shutil.copyfileobj(src, f, CHUNK)
            return
        staging = f"{path}.unpack"
        tar.extractall(staging, filter="data")
    root = os.path.join(staging, next(iter(tops))) if len(tops) == 1 else staging
    if not os.path.isdir(root):
        root = staging
    if os.path.isdir(path):
        shutil.copytree(root, path, dirs_exist_ok=True)
        shutil.rmtree(staging)
    else:
        os.replace(root, path)
        shutil.rmtree(staging, ignore_errors=True)


def _is_tarball(path: str) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _place_inputs(base: str, inputs: list) -> None:
    for art in inputs:
        path = art["path"]
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        if art.get("data") is not None:
            with open(path, "w") as f:
                f.write(art["data"])
        for obj in art.get("objects") or []:
            if obj["rel"]:  # one object of a directory artifact
                dest = os.path.join(path, obj["rel"])
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                _download(obj["url"], dest)
                continue
            fetched = os.path.join(base, f".in-{uuid.uuid4().hex[:8]}")
            _download(obj["url"], fetched)
            if art.get("unpack") and _is_tarball(fetched):
                _unpack(fetched, path)
                os.unlink(fetched)
            else:
                shutil.move(fetched, path)
        if art.get("mode") is not None:
            os.chmod(path, int(art["mode"]))


def _send(method: str, target: str, headers: dict, source: str, pre=b"", tail=b"") -> None:  # noqa: ANN001
    """Stream ``pre`` + the file ``source`` + ``tail`` as one request; retried when transient."""
    import http.client

    size = len(pre) + os.path.getsize(source) + len(tail)
    url = urlsplit(target)
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    path = url.path + (f"?{url.query}" if url.query else "")

    def send() -> None:
        conn = conn_cls(url.hostname or "", url.port, timeout=TIMEOUT)
        try:
            conn.putrequest(method, path or "/", skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            if pre:
                conn.send(pre)
            with open(source, "rb") as f:
                for chunk in iter(lambda: f.read(CHUNK), b""):
                    conn.send(chunk)
            if tail:
                conn.send(tail)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status >= 300:
                raise _Refused(resp.status, body)
        finally:
            conn.close()

    _retrying(f"upload of {os.path.basename(url.path)}", send)


def _put(url: str, source: str) -> None:
    """Upload ``source`` with a presigned PUT URL (one object, its exact key)."""
    _send("PUT", url, {"Content-Type": "application/octet-stream"}, source)


def _post(form: dict, key: str, source: str) -> None:
    """Upload ``source`` as ``key`` with a presigned POST form (a key under its prefix)."""
    boundary = uuid.uuid4().hex
    fields = dict(form["fields"], key=key)
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="data"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    _send("POST", form["url"], headers, source, head.encode(), f"\r\n--{boundary}--\r\n".encode())


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


def _upload(base: str, a: dict) -> tuple:
    """Upload one output artifact: (how it is stored: file, dir or tgz; bytes uploaded)."""
    path = a["path"]
    upload = a["upload"]
    if a.get("archive") == "none":
        if not os.path.isdir(path):
            _put(upload["put"], path)
            return "file", os.path.getsize(path)
        size = 0
        for root, _dirs, files in os.walk(path):
            for name in sorted(files):
                full = os.path.join(root, name)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue  # a link could name any file the step can read; not an output
                rel = os.path.relpath(full, path)
                _post(upload["form"], f"{a['key']}/{rel}", full)
                size += os.path.getsize(full)
        return "dir", size
    packed = os.path.join(base, f".out-{uuid.uuid4().hex[:8]}.tgz")
    try:
        with tarfile.open(packed, "w:gz", compresslevel=6) as tar:
            tar.add(path, arcname=os.path.basename(os.path.normpath(path)))
        _put(upload["put"], packed)
        return "tgz", os.path.getsize(packed)
    finally:
        if os.path.exists(packed):
            os.unlink(packed)


def _collect(base: str, plan: dict, result) -> dict:  # noqa: ANN001 - stdlib only
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
        if not os.path.exists(a["path"]):
            if not a.get("optional"):
                outputs["errors"].append(
                    f"output artifact {a['name']!r}: no such file: {a['path']}"
                )
            continue
        try:
            stored, size = _upload(base, a)
        except OSError as exc:
            outputs["errors"].append(f"output artifact {a['name']!r}: {exc}")
            continue
        outputs["artifacts"][a["name"]] = {
            "key": a["key"],
            "stored": stored,
            "size": size,
            "path": a["path"],
        }
    return outputs


def _read_work_files(base: str, names: list) -> dict:
    """Small files the step wrote in its work directory (KFP's executor output, its output
    parameter files), for the report; a missing one is left out."""
    found = {}
    for name in names:
        try:
            with open(os.path.join(base, name), "rb") as f:
                data = f.read(FILE_LIMIT + 1)
        except OSError:
            continue
        if len(data) <= FILE_LIMIT:
            found[name] = data.decode(errors="replace")
    return found


def main() -> int:
    plan_path = sys.argv[1]
    argv = sys.argv[3:] if len(sys.argv) > 2 and sys.argv[2] == "--" else sys.argv[2:]
    with open(plan_path) as f:
        plan = json.load(f)
    base = plan.get("workDir") or os.path.dirname(plan_path)
    for name in (plan.get("report") or {}).get("files") or [""]:
        os.makedirs(os.path.dirname(os.path.join(base, name)), exist_ok=True)
    try:
        _place_inputs(base, plan.get("inputs", []))
    except OSError as exc:
        sys.stderr.write(f"cannot place the input artifacts: {exc}\n")
        return _report(base, plan, {"errors": [f"input artifacts: {exc}"], "exitCode": 1}, 1)
    code, result = _run(argv, bool(plan.get("captureResult")))
    outputs = _collect(base, plan, result)
    outputs["exitCode"] = code
    return _report(base, plan, outputs, code)


def _report(base: str, plan: dict, outputs: dict, code: int) -> int:
    """Upload the report (the service reads it once the step has ended); the step's exit code,
    or 1 when the report cannot reach the store (the step's outputs would be lost)."""
    report = plan.get("report") or {}
    if not report.get("put"):
        return code
    outputs["files"] = _read_work_files(base, report.get("files") or [])
    path = os.path.join(base, f".report-{uuid.uuid4().hex[:8]}.json")
    with open(path, "w") as f:
        json.dump(outputs, f)
    try:
        _put(report["put"], path)
    except OSError as exc:
        sys.stderr.write(f"cannot report the step's outputs: {exc}\n")
        return code or 1
    finally:
        os.unlink(path)
    return code


if __name__ == "__main__":
    sys.exit(main())
