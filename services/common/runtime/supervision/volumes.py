"""Claims' sizes, which no local filesystem enforces: measured, as the kubelet measures."""

import os

#: Entries one usage check looks at, at most (a walk of a huge tree must not stall us).
USAGE_MAX_ENTRIES = 200_000


def disk_usage(path: str) -> int:
    """Bytes the files under ``path`` occupy (allocated blocks, as ``du`` counts; links are
    not followed), counting at most :data:`USAGE_MAX_ENTRIES` entries."""
    total, seen, pending = 0, 0, [path]
    while pending and seen < USAGE_MAX_ENTRIES:
        try:
            entries = os.scandir(pending.pop())
        except OSError:  # removed meanwhile, or not ours to read
            continue
        with entries:
            for entry in entries:
                seen += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return total


def human_bytes(n: float) -> str:
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if n < 1024 or unit == "Ti":
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}Ti"


def over_size(volume_limits: list) -> str | None:
    """Why the workload must stop, if a claim it writes to holds more than its size.

    A local claim is a directory of the host's filesystem, which does not stop writes at the
    claim's size; this check (every ``volumeCheckSeconds``) does, like the kubelet's for an
    emptyDir's ``sizeLimit``: a workload may overshoot by what it writes between two checks.
    """
    for vol in volume_limits:
        used = disk_usage(vol["path"])
        if used > int(vol["bytes"]):
            return (
                f"No space left on device: PersistentVolumeClaim {vol['claim']} (mounted at "
                f"{vol['mountPath']}) holds {human_bytes(used)}, more than its size "
                f"{vol['size']} (spec.resources.requests.storage); the workload was stopped. "
                "Delete files from the claim or use a larger one"
            )
    return None
