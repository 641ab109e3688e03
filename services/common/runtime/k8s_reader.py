"""Reading one file of a volume on Kubernetes: the output of a reader pod, decoded.

The reader pod (``k8s_manifests.reader_pod_manifest``) mounts the claim read-only and prints
``SHIPYARD-READ OK <size>``, the file base64-encoded, then ``SHIPYARD-READ END``; or
``SHIPYARD-READ ERR <kind> <words>``. Its log is read through the pod log API.
"""

from __future__ import annotations

import base64
import binascii

from .errors import RuntimeBackendError

MARK = "SHIPYARD-READ"


def check_path(path: str) -> str:
    """``path`` relative to the volume's root, normalised; ValueError if it could escape."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\0" in path:
        raise ValueError(f"{path!r}: must be a file path inside the volume, without '..'")
    return "/".join(parts)


def decode_reader_output(text: str, path: str, max_bytes: int) -> bytes:
    """The file's bytes from a reader pod's log, or the error it reported, raised."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        words = line.split(" ")
        if words[0] != MARK or len(words) < 2:
            continue
        if words[1] == "ERR":
            kind = words[2] if len(words) > 2 else "error"
            detail = " ".join(words[3:])
            if kind == "notfound":
                raise FileNotFoundError(f"{path}: {detail or 'no such file'}")
            if kind == "toolarge":
                raise ValueError(f"{path}: larger than {max_bytes} bytes")
            raise OSError(f"{path}: {detail}")
        if words[1] == "OK":
            size = int(words[2])
            body: list[str] = []
            for rest in lines[i + 1 :]:
                if rest.startswith(f"{MARK} END"):
                    try:
                        data = base64.b64decode("".join(body), validate=True)
                    except binascii.Error:
                        break
                    if len(data) != size:
                        break
                    return data
                body.append(rest.strip())
            break
    raise RuntimeBackendError(f"reading {path}: the reader pod's output was cut short")
