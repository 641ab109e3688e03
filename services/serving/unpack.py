"""Writing a model into a directory without following links, and unpacking archives safely.

The storage initializer (:mod:`services.serving.modelserver.initializer`) uses this inside the
model server's workload to fill its emptyDir at ``/mnt/models``. Every write is made relative
to a directory descriptor opened with ``O_NOFOLLOW``, one path component at a time, and files
are created with ``O_EXCL``: a name in an archive or a plan can never lead a write outside the
directory, even through a link an earlier entry made (the same rule the runtime applies to
``subPath``, see docs/security.md).

Archives (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``, as KServe's storage initializer unpacks
them) hold only regular files and directories here: absolute names, ``..``, links, devices
and FIFOs are refused, and unpacking stops once the bytes actually written pass the size
limit (a member's declared size can lie; a gzip or zip bomb is caught by what it inflates
to). Standard library only and synchronous: the initializer runs before anything else is
imported in the model server.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, BinaryIO

CHUNK = 1024 * 1024
ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: At most this many entries in one model (files and directories, archive or prefix).
MAX_ENTRIES = 100_000
DIR_MODE, FILE_MODE = 0o755, 0o644  # the model server runs as the namespace's uid: it reads


class UnpackError(Exception):
    """The archive or object cannot be written safely; the message says why."""


class SizeLimitExceeded(UnpackError):
    """More bytes than the size limit allows."""


def archive_kind(filename: str) -> str | None:
    """``"zip"``, ``"tar"`` or None, by the file name (KServe decides by the name too)."""
    lower = filename.lower()
    if lower.endswith(ZIP_SUFFIXES):
        return "zip"
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    return None


def safe_parts(name: str, what: str) -> tuple[str, ...]:
    """The components of a relative path from an archive or an object key; UnpackError for
    an absolute path, ``..``, an empty or ``.`` component, or a NUL byte."""
    if not name or name.startswith("/") or "\0" in name or "\\" in name:
        raise UnpackError(f"{what} {name!r}: only relative paths without '\\' are allowed")
    parts = tuple(name.rstrip("/").split("/"))
    if any(p in ("", ".", "..") for p in parts):
        raise UnpackError(f"{what} {name!r}: '..', '.' and empty path components are refused")
    return parts


class SafeDir:
    """A directory held open by descriptor; everything below it is reached without links."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SafeDir:
        return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subdir(self, name: str, *, create: bool = True) -> SafeDir:
        """The child directory ``name`` (made if missing and ``create``), never a link."""
        made = False
        if create:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=self.fd)
                made = True
            except FileExistsError:
                pass
        try:
            fd = os.open(
                name,
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=self.fd,
            )
        except OSError as exc:  # ELOOP: a link; ENOTDIR: a file
            raise UnpackError(f"{name!r} is not a plain directory ({exc.strerror})") from None
        if made:
            os.fchmod(fd, DIR_MODE)  # whatever the umask: the model server's uid reads it
        return SafeDir(fd)

    def exists(self, name: str) -> bool:
        try:
            mode = os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(mode)

    @contextmanager
    def walk_to(self, parts: tuple[str, ...]) -> Iterator[SafeDir]:
        """The directory ``parts`` below this one, each component made and checked."""
        current = self
        opened: list[SafeDir] = []
        try:
            for part in parts:
                current = current.subdir(part)
                opened.append(current)
            yield current
        finally:
            for d in opened:
                d.close()

    def create_file(self, name: str) -> BinaryIO:
        """A new regular file ``name`` for writing (never an existing file or a link)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, FILE_MODE, dir_fd=self.fd)
        except FileExistsError:
            raise UnpackError(f"{name!r} is written twice (a duplicate entry)") from None
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "wb")

    def open_file(self, name: str) -> BinaryIO:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        return os.fdopen(fd, "rb")

    def remove_tree(self, name: str) -> None:
        """Delete ``name`` below this directory (a file, a link or a whole tree), no links
        followed."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=self.fd)
            return
        with self.subdir(name, create=False) as child:
            for entry in os.listdir(child.fd):
                child.remove_tree(entry)
        os.rmdir(name, dir_fd=self.fd)

    def entries(self) -> list[str]:
        return os.listdir(self.fd)


class Budget:
    """Bytes and entries still allowed for one model."""

    def __init__(self, max_bytes: int, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.written = 0
        self.entries_left = max_entries

    def take(self, n: int) -> None:
        self.written += n
        if self.written > self.max_bytes:
            raise SizeLimitExceeded(
                f"the model is larger than the download limit of {self.max_bytes} bytes "
                "(SHIPYARD_MODEL_DOWNLOAD_MAX_BYTES)"
            )

    def entry(self) -> None:
        self.entries_left -= 1
        if self.entries_left < 0:
            raise UnpackError(f"more than {MAX_ENTRIES} files and directories")


def copy_into(root: SafeDir, parts: tuple[str, ...], source: IO[bytes], budget: Budget) -> None:
    """Write ``source`` to the file ``parts`` below ``root``, counting against ``budget``."""
    budget.entry()
    with root.walk_to(parts[:-1]) as parent, parent.create_file(parts[-1]) as out:
        while chunk := source.read(CHUNK):
            budget.take(len(chunk))
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())  # renamed into place as complete only after this


def unpack(archive: SafeDir, name: str, kind: str, target: SafeDir, budget: Budget) -> None:
    """Unpack the archive file ``name`` (in ``archive``) into ``target``; UnpackError if it
    holds anything but plain files and directories with safe relative names, or is too big."""
    with archive.open_file(name) as raw:
        try:
            if kind == "zip":
                _unpack_zip(raw, target, budget)
            else:
                _unpack_tar(raw, target, budget)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            if isinstance(exc, UnpackError):
                raise
            raise UnpackError(f"{name}: not a valid {kind} archive ({exc})") from None


def _unpack_tar(raw: BinaryIO, target: SafeDir, budget: Budget) -> None:
    # Stream mode ("r|*"): one pass, any compression; members come in archive order.
    with tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            parts = safe_parts(member.name, "archive member")
            if member.isdir():
                budget.entry()
                with target.walk_to(parts):
                    pass
            elif member.isreg():
                source = tar.extractfile(member)
                assert source is not None
                copy_into(target, parts, source, budget)
            else:
                what = "link" if member.issym() or member.islnk() else "device or FIFO"
                raise UnpackError(f"archive member {member.name!r} is a {what}; refused")


def _unpack_zip(raw: BinaryIO, target: SafeDir, budget: Budget) -> None:
    with zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            parts = safe_parts(info.filename, "archive member")
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: a zip from a non-Unix tool
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise UnpackError(f"archive member {info.filename!r} is not a plain file; refused")
            if info.is_dir():
                budget.entry()
                with target.walk_to(parts):
                    pass
                continue
            with archive.open(info) as source:
                copy_into(target, parts, source, budget)
