"""Headless Chromium (Debian's chromium package) driven by Playwright, for the UI tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Where the UI tests save their screenshots: the docs' own (docs/dashboard, the pictures
#: docs/dashboard.md shows) with ``SHIPYARD_UPDATE_SCREENSHOTS=1``, else a scratch directory,
#: so that running the tests leaves the checkout as it was.
SHOTS = (
    Path(__file__).resolve().parents[1] / "docs" / "dashboard"
    if os.environ.get("SHIPYARD_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / f"shipyard-screenshots-{os.getuid()}"
)
SHOTS.mkdir(parents=True, exist_ok=True)

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium absent: apt-get install -y chromium"
)


async def launch(playwright: Any) -> Any:
    """A headless Chromium browser (close it when done)."""
    return await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
