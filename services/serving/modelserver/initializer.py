"""The storage initializer: puts a downloaded model into the workload before the server loads it.

KServe runs a ``storage-initializer`` container before the model server; it copies the model
from its storageUri into an emptyDir at ``/mnt/models``. Here the same step is the start of
the model server itself (``--storage-plan PLAN``), so it costs no second process: the serving
service (:mod:`services.serving.modelcache`) made the model available in the platform's object
store, and wrote a *plan*, a small JSON file the runtime places in the workload read-only:

.. code-block:: json

    {"dest": "/mnt/models", "maxBytes": 10737418240, "digest": "...",
     "objects": [{"url": "<presigned GET>", "path": "sub/model.joblib", "unpack": null,
                  "size": 1234, "etag": "..."},
                 {"url": "<presigned GET>", "path": null, "unpack": "tar",
                  "name": "model.tgz", "size": 99, "etag": "..."}]}

Each object with a ``path`` becomes that file below ``dest``; one without is an archive,
unpacked into ``dest`` with :mod:`services.serving.unpack`'s rules (plain files and directories
with safe relative names only; the bytes it inflates to count against ``maxBytes``). The
workload reaches only the gateway and the object store, and the URLs are all it holds: no
keys.

- **The same bytes for every replica.** An object whose ETag (or size) differs from the plan's
  is refused: the model changed in the store after the revision was made, and a replica that
  served it would differ from its siblings. A revision serves what was found when it was made.
- **Transient errors are retried** (connection refused or reset, 5xx, 429, a short read) with
  back-off, 0.5 s doubling to 10 s, for up to ``RETRY_SECONDS``; each retry starts the object
  over. A 403 from an expired URL says so.
- **Once per workload.** Objects are written to ``*.part`` and renamed when whole; a marker
  with the plan's digest is written last, so a restarted server (the same pod, its emptyDir
  kept) skips the download, and one that died half-way starts over from an empty directory.

Standard library only (and the stdlib-only unpack module): it runs before numpy, uvicorn or
the model are imported, and adds a few milliseconds besides the transfer itself.

A server that is not the platform's (a ServingRuntime's own container) gets the same step as
an init container of its workload instead (:mod:`services.serving.servers`), run as
``python -m services.serving.modelserver.initializer PLAN`` on the same emptyDir: it exits 1
with the reason on stderr, which the workload's status then quotes.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen

from services.serving.unpack import CHUNK, Budget, SafeDir, UnpackError, safe_parts, unpack

#: Marker written into ``dest`` when the model is complete (its content: the plan's digest).
DONE_MARKER = ".shipyard-storage-initialized"
ARCHIVE_PREFIX = ".shipyard-archive-"
RETRY_SECONDS = float(os.environ.get("SHIPYARD_STORE_RETRY_SECONDS", "120"))
TIMEOUT = 60.0
#: Parallel downloads of a model made of many objects.
WORKERS = 4

T = TypeVar("T")


class StorageInitError(Exception):
    """The model cannot be put into the workload; the message says why."""


class _Transient(Exception):
    """Worth another try (a short read)."""


def initialize(plan: dict[str, Any]) -> None:
    """Put the plan's model into ``plan["dest"]`` (see the module docstring)."""
    dest = plan["dest"]
    digest = str(plan.get("digest") or "")
    with SafeDir.open(dest) as top:
        if digest and _marker(top) == digest:
            return  # a restart: the model is already here
        for entry in top.entries():  # a download that died half-way
            top.remove_tree(entry)
        objects = list(plan.get("objects") or [])
        files = [o for o in objects if o.get("path")]
        archives = [o for o in objects if not o.get("path")]
        budget = Budget(int(plan["maxBytes"]))
        if len(files) == 1:  # most models: no thread pool to import and start
            _place_file(top, files[0])
        elif files:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(WORKERS, len(files))) as pool:
                for done in [pool.submit(_place_file, top, o) for o in files]:
                    done.result()
        for archive in archives:
            _place_archive(top, archive, budget)
        with top.create_file(DONE_MARKER) as f:
            f.write(digest.encode())


def _marker(top: SafeDir) -> str | None:
    try:
        with top.open_file(DONE_MARKER) as f:
            return f.read(200).decode(errors="replace")
    except OSError:
        return None


def _place_file(top: SafeDir, obj: dict[str, Any]) -> None:
    parts = safe_parts(str(obj["path"]), "model file")
    with top.walk_to(parts[:-1]) as parent:
        _download(obj, parent, parts[-1])


def _place_archive(top: SafeDir, obj: dict[str, Any], budget: Budget) -> None:
    kind = obj.get("unpack")
    if kind not in ("tar", "zip"):
        raise StorageInitError(f"object {obj.get('name')!r}: no path and no archive kind")
    name = f"{ARCHIVE_PREFIX}{uuid.uuid4().hex}"
    _download(obj, top, name)
    try:
        unpack(top, name, kind, top, budget)
    finally:
        top.remove_tree(name)


def _download(obj: dict[str, Any], parent: SafeDir, name: str) -> None:
    """The object at ``obj["url"]`` as the file ``name`` in ``parent``: exactly its size, its
    ETag the plan's; retried while the store's errors are transient."""
    url, size, etag = obj["url"], int(obj["size"]), str(obj.get("etag") or "")
    what = obj.get("path") or obj.get("name") or "the model"
    part = f"{name}.part"

    def attempt() -> None:
        parent.remove_tree(part)
        with urlopen(Request(url), timeout=TIMEOUT) as resp:  # a presigned URL
            got = str(resp.headers.get("ETag") or "").strip('"')
            if etag and got and got != etag:
                raise StorageInitError(
                    f"{what}: the object changed in the store after this revision was made "
                    f"(ETag {got}, expected {etag}); a revision serves only what was found "
                    "when it was made: upload a new model under a new key and point the "
                    "InferenceService's storageUri at it"
                )
            written = 0
            with parent.create_file(part) as out:
                while chunk := resp.read(CHUNK):
                    written += len(chunk)
                    if written > size:
                        raise StorageInitError(
                            f"{what}: more than the {size} bytes the plan expects (the object "
                            "changed in the store after this revision was made)"
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        if written != size:
            raise _Transient(f"{what}: {written} of {size} bytes arrived")
        os.rename(part, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)

    try:
        _retrying(f"download of {what}", url, attempt)
    finally:
        parent.remove_tree(part)


def _retrying(what: str, url: str, action: Callable[[], T]) -> T:
    delay, give_up = 0.5, time.monotonic() + RETRY_SECONDS
    while True:
        try:
            return action()
        except HTTPError as exc:
            if exc.code < 500 and exc.code != 429 or time.monotonic() > give_up:
                detail = exc.read()[:300].decode(errors="replace")
                expired = _expired(url) if exc.code == 403 else None
                if expired:
                    raise StorageInitError(f"{what}: {expired}") from None
                raise StorageInitError(f"{what}: the store answered {exc.code}: {detail}") from None
        except (StorageInitError, UnpackError):
            raise
        except (URLError, OSError, http.client.HTTPException, _Transient) as exc:
            if time.monotonic() > give_up:
                raise StorageInitError(f"{what}: {exc}") from None
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def _expired(url: str) -> str | None:
    """Why a presigned URL no longer works, if it expired (SigV4 query parameters)."""
    query = parse_qs(urlsplit(url).query)
    try:
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        lifetime = int(query["X-Amz-Expires"][0])
    except (KeyError, IndexError, ValueError):
        return None
    age = (datetime.now(UTC) - signed).total_seconds()
    if age <= lifetime:
        return None
    return (
        f"its presigned URL expired {age - lifetime:.0f} s ago (valid for {lifetime} s from "
        f"{signed:%Y-%m-%dT%H:%M:%SZ}): this server started long after its spec was made; "
        "the serving service makes a new one with fresh URLs when this one is deleted"
    )


def load_plan(path: str) -> dict[str, Any]:
    """The plan file the serving service wrote (a read-only file in the workload)."""
    with open(path) as f:
        plan = json.load(f)
    if not isinstance(plan, dict) or not isinstance(plan.get("dest"), str):
        raise StorageInitError(f"{path}: not a storage plan")
    return plan


def main(argv: list[str] | None = None) -> int:
    """``python -m services.serving.modelserver.initializer PLAN``: the model into its place,
    as an init step before a server of the user's own; 1 with the reason on stderr if not."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m services.serving.modelserver.initializer PLAN\n")
        return 2
    started = time.monotonic()
    try:
        initialize(load_plan(args[0]))
    except (StorageInitError, UnpackError, OSError, ValueError) as exc:
        sys.stderr.write(f"storage initializer: cannot download the model: {exc}\n")
        return 1
    sys.stdout.write(f"storage initializer: model in place in {time.monotonic() - started:.2f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
