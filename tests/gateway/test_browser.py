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
            # After login, the main origin hands the browser to the notebook's own origin
            # (a ticket; Chromium resolves *.localhost itself), which serves the page.
            notebook_origin = f"http://nb.{NS}.notebooks.localhost:{gateway.port}"
            await page.wait_for_url(f"{notebook_origin}/notebook/{NS}/nb/lab", timeout=15000)
            body = json.loads(await page.inner_text("body"))
            # The notebook got its own token, not the visitor's identity (issue 10).
            assert body["identity"] is None and body["authorization"].startswith("token ")
            assert body["path"] == f"/notebook/{NS}/nb/lab"
            cookies = {(c["name"], c["domain"]): c for c in await page.context.cookies()}
            session = cookies[("shipyard_session", "127.0.0.1")]
            assert session["httpOnly"] is True and session["sameSite"] == "Lax"
            # The notebook origin has a host-only cookie of its own, and no session cookie.
            host = f"nb.{NS}.notebooks.localhost"
            assert {name for name, domain in cookies if domain == host} == {
                "shipyard_notebook_session"
            }
            mine = cookies[("shipyard_notebook_session", host)]
            assert mine["httpOnly"] is True and mine["sameSite"] == "Lax"
            # Script on the notebook origin cannot read the dashboard's API as the visitor.
            status = await page.evaluate(
                """async (url) => {
                    try { return (await fetch(url, {credentials: "include"})).status; }
                    catch (e) { return "blocked"; }
                }""",
                f"{gateway.url}/apis/kubeflow.org/v1/namespaces/{NS}/notebooks",
            )
            assert status == "blocked", status
            same = await page.evaluate(
                "async (p) => (await fetch(p)).status",
                f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks",
            )
            assert same == 404, same
        finally:
            await browser.close()
