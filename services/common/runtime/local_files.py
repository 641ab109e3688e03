"""The local runtime's file handling on the host: its JSON state files, one file of a volume
read without following links out of it, and a workload's log (where its last lines begin,
and following it)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

LOG_CHUNK = 64 * 1024
FOLLOW_INTERVAL = 0.05
#: A workload directory's files.
SPEC, LAUNCH, STATE, LOCK, LOG = "spec.json", "launch.json", "state.json", "lock", "output.log"


def listdir(path: Path) -> list[str]:
    """Sorted names in ``path``; none if it is missing or not a directory."""
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


def supervisor_alive(lock: Path) -> bool:
    """The workload's supervisor holds an exclusive flock on its ``lock`` file for exactly
    its lifetime; True while it does."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases our probe lock if we got it
    return False


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if missing (or torn by a crashed *runtime*: the
    supervisor writes with atomic renames)."""
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_inside(root: Path, path: str, max_bytes: int) -> bytes:
    """The file at ``path`` under ``root``, opened one component at a time without following
    a link (a workload may have planted one pointing anywhere on the host)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"{path!r}: must be a file path inside the volume, without '..'")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise FileNotFoundError(f"{path}: {part} is not a directory") from None
                raise
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileNotFoundError(f"{path}: a symbolic link is not followed") from None
            raise
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):  # before fdopen: it refuses directories
        os.close(file_fd)
        raise FileNotFoundError(f"{path}: not a regular file")
    with os.fdopen(file_fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes")
    return data


def tail_offset(path: Path, lines: int) -> int:
    """Byte offset where the last ``lines`` lines of the file begin."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = pos = f.tell()
            if lines <= 0:
                return end
            # A trailing newline ends the last line; it does not start a new one.
            f.seek(max(0, end - 1))
            wanted = lines + 1 if end and f.read(1) == b"\n" else lines
            seen = 0
            while pos > 0:
                step = min(LOG_CHUNK, pos)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                for i in range(len(block) - 1, -1, -1):
                    if block[i] == 0x0A:
                        seen += 1
                        if seen == wanted:
                            return pos + i + 1
            return 0
    except FileNotFoundError:
        return 0


async def log_lines(
    path: Path,
    tail: int | None,
    follow: bool,
    finished: Callable[[], Awaitable[bool | None]],
) -> AsyncIterator[str]:
    """A workload's log, line by line, from its last ``tail`` lines (all: None). With
    ``follow``, on until ``finished()`` is True, and then what was written just before the end;
    None from it, or the workload's directory going away, ends it at once (deleted)."""
    position = tail_offset(path, tail) if tail is not None else 0
    pending = b""
    while True:
        try:
            with open(path, "rb") as f:  # noqa: ASYNC230 - a local file, read in chunks
                f.seek(position)
                chunk = f.read(LOG_CHUNK)
        except FileNotFoundError:
            chunk = b""
            if not path.parent.exists():  # deleted while following
                return
        if chunk:
            position += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
            continue
        if not follow:
            break
        over = await finished()
        if over is None:
            return
        if over:
            # One more read: output written just before the exit must not be lost.
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:  # noqa: ASYNC230
                f.seek(position)
                rest = f.read()
            if rest:
                *lines, pending = (pending + rest).split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            break
        await asyncio.sleep(FOLLOW_INTERVAL)
    if pending:
        yield pending.decode(errors="replace")
