"""Browser login end to end in headless Chromium (Debian's chromium package)."""

from __future__ import annotations

import json

from tests.browser import launch, needs_chromium

NS = "kubeflow-user-example-com"


@needs_chromium
async def test_login_in_headless_chromium(gateway, upstream) -> None:
    from playwright.async_api import async_playwright

    gateway.gw.route_table.upsert("notebook", NS, "nb", [(upstream.url, 1)])
    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await browser.new_page()
            await page.goto(f"{gateway.url}/notebook/{NS}/nb/lab", timeout=15000)
            await page.fill("#login", "user@example.com")
            await page.fill("#password", "password")
            await page.click("#submit-login")
            await page.wait_for_url(f"{gateway.url}/notebook/{NS}/nb/lab", timeout=15000)
            body = json.loads(await page.inner_text("body"))
            # The notebook got its own token, not the visitor's identity (issue 10).
            assert body["identity"] is None and body["authorization"].startswith("token ")
            assert body["path"] == f"/notebook/{NS}/nb/lab"
            cookies = {c["name"]: c for c in await page.context.cookies()}
            assert cookies["shipyard_session"]["httpOnly"] is True
            assert cookies["shipyard_session"]["sameSite"] == "Lax"
        finally:
            await browser.close()
