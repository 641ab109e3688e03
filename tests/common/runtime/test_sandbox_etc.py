"""The workload's /etc copy (``sandbox.build_etc``): built per runtime, used by every sandbox.

Every service's runtime builds the copy when it starts its first workload, while other
services' sandboxes are starting and running on it. A full run once saw a trial fail with
bubblewrap's "Can't get type of source .../runtime/etc/1000000": the copy was being replaced
in place, and for a moment there was no directory at its path.
"""

from __future__ import annotations

import threading
from pathlib import Path

from services.common.runtime import sandbox


def test_builders_of_the_same_content_share_one_copy_that_never_goes_away(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "1000000"
    first = sandbox.build_etc(target, 1000000, 1000000, {"minio": "10.0.0.1"})
    assert "shipyard:x:1000000:1000000:" in (first / "passwd").read_text()
    assert "10.0.0.1\tminio" in (first / "hosts").read_text()
    gone: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # as a sandbox starting at any moment would look at the path
        while not stop.is_set():
            if not (first / "passwd").is_file():
                gone.append("passwd missing")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        built: list[Path] = []
        builders = [
            threading.Thread(
                target=lambda: built.append(
                    sandbox.build_etc(target, 1000000, 1000000, {"minio": "10.0.0.1"})
                )
            )
            for _ in range(8)
        ]
        for b in builders:
            b.start()
        for b in builders:
            b.join()
    finally:
        stop.set()
        watcher.join()
    assert gone == [] and set(built) == {first}
    # Other content is another copy; the first stays as it was for the sandboxes using it.
    other = sandbox.build_etc(target, 1000000, 1000000, {"minio": "10.0.0.2"})
    assert other != first and (first / "passwd").is_file()
    assert "10.0.0.1\tminio" in (first / "hosts").read_text()
    assert "10.0.0.2\tminio" in (other / "hosts").read_text()
    # No half-built directories are left behind.
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([first.name, other.name])
