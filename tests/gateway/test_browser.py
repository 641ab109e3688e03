"""Browser login end to end in headless Chromium (Debian's chromium package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
NS = "kubeflow-user-example-com"


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium absent: apt-get install -y chromium"
)
async def test_login_in_headless_chromium(gateway, upstream) -> None:
    from playwright.async_api import async_playwright

    gateway.gw.route_table.upsert("notebook", NS, "nb", [(upstream.url, 1)])
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{gateway.url}/notebook/{NS}/nb/lab", timeout=15000)
            await page.fill("#login", "user@example.com")
            await page.fill("#password", "password")
            await page.click("#submit-login")
            await page.wait_for_url(f"{gateway.url}/notebook/{NS}/nb/lab", timeout=15000)
            body = json.loads(await page.inner_text("body"))
            assert body["identity"]["user"] == "user@example.com"
            assert body["path"] == f"/notebook/{NS}/nb/lab"
            cookies = {c["name"]: c for c in await page.context.cookies()}
            assert cookies["shipyard_session"]["httpOnly"] is True
            assert cookies["shipyard_session"]["sameSite"] == "Lax"
        finally:
            await browser.close()
