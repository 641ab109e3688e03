"""The dashboard's Manage contributors page in headless Chromium against the real platform in
trusted-header mode (the browser's requests carry ``kubeflow-userid`` from 127.0.0.1, the
trusted proxy, as Kubeflow's auth proxy would send them): the owner of a namespace adds a
contributor with a role and removes them through Kubeflow's KFAM API; the binding is checked
through that API; a contributor sees the list but cannot change it. Contributors mean nothing
in single-user mode (one person, no one to share with), so the page is tested where they do."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.browser import CHROMIUM, CHROMIUM_ARGS, SHOTS, launch, needs_chromium
from tests.conftest import ADMIN_USER, create_profile

OWNER = "alice@example.com"
TEAM = "team-alice"
BOB = "bob@example.com"


def as_user(platform: Any, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=platform.gateway_url, headers={"kubeflow-userid": user}, timeout=15
    )


def kfam_binding(namespace: str, user: str, role: str) -> dict[str, Any]:
    return {
        "user": {"kind": "User", "name": user},
        "referredNamespace": namespace,
        "RoleRef": {"kind": "ClusterRole", "name": f"kubeflow-{role}"},
    }


def bindings(api: httpx.Client) -> dict[str, str]:
    r = api.get("/kfam/v1/bindings", params={"namespace": TEAM})
    assert r.status_code == 200, r.text
    return {b["user"]["name"]: b["RoleRef"]["name"] for b in r.json()["bindings"]}


def wait_member(api: httpx.Client, namespace: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        info = api.get("/api/workgroup/env-info").json()
        if namespace in [n["namespace"] for n in info["namespaces"]]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{namespace} never reached env-info: {info}")


@needs_chromium
def test_owner_adds_and_removes_a_contributor(trusted_header_platform: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    platform = trusted_header_platform
    with as_user(platform, ADMIN_USER) as admin, as_user(platform, OWNER) as alice:
        create_profile(admin, TEAM, owner=OWNER)
        wait_member(alice, TEAM)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(
                    viewport={"width": 1280, "height": 760},
                    extra_http_headers={"kubeflow-userid": OWNER},
                )
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(platform.gateway_url + "/#/contributors", timeout=15000)
                page.get_by_label("namespace").select_option(TEAM)
                expect(page.get_by_role("heading", name=f"Contributors of {TEAM}")).to_be_visible()
                rows = page.locator("table.grid").nth(1)
                expect(rows).to_contain_text(OWNER)
                expect(rows.locator(f'tr[data-name="{OWNER}"]')).to_contain_text("owner")

                # Not an address: the form does not send it.
                form = page.get_by_role("form", name="Add contributor")
                email = form.get_by_label("Email", exact=True)
                email.fill("not-an-address")
                form.get_by_role("button", name="Add").click()
                assert email.evaluate("e => e.validity.typeMismatch") is True
                assert set(bindings(alice)) == {OWNER}

                email.fill(BOB)
                form.get_by_label("Role", exact=True).select_option("view")
                form.get_by_role("button", name="Add").click()
                bob_row = rows.locator(f'tr[data-name="{BOB}"]')
                expect(bob_row).to_contain_text("view")
                assert bindings(alice)[BOB] == "kubeflow-view"
                page.screenshot(path=str(SHOTS / "contributors.png"))

                # Bob, a contributor: he sees the list, not the controls.
                with as_user(platform, BOB) as bob:
                    wait_member(bob, TEAM)
                    assert bindings(bob)[BOB] == "kubeflow-view"
                bob_page = browser.new_context(
                    extra_http_headers={"kubeflow-userid": BOB}
                ).new_page()
                bob_page.goto(platform.gateway_url + "/#/contributors", timeout=15000)
                expect(bob_page.get_by_text(f"Only the owner of {TEAM}")).to_be_visible()
                expect(bob_page.get_by_role("button", name=f"Remove {BOB}")).to_have_count(0)

                # The owner removes him.
                page.once("dialog", lambda d: d.accept())
                bob_row.get_by_role("button", name=f"Remove {BOB}").click()
                expect(bob_row).to_have_count(0)
                assert BOB not in bindings(alice)

                # Bob's own namespace, where Alice is an editor: the switcher takes her there,
                # and there she may look but not change.
                create_profile(admin, "team-bob", owner=BOB)
                with as_user(platform, BOB) as bob:
                    r = bob.post("/kfam/v1/bindings", json=kfam_binding("team-bob", OWNER, "edit"))
                    assert r.status_code == 200, r.text
                wait_member(alice, "team-bob")
                page.reload()
                page.get_by_label("namespace").select_option("team-bob")
                expect(page.get_by_role("heading", name="Contributors of team-bob")).to_be_visible()
                theirs = page.locator("table.grid").nth(1)
                expect(theirs.locator(f'tr[data-name="{BOB}"]')).to_contain_text("owner")
                expect(theirs.locator(f'tr[data-name="{OWNER}"]')).to_contain_text("edit")
                expect(page.get_by_text("Only the owner of team-bob")).to_be_visible()
                expect(page.get_by_role("form", name="Add contributor")).to_have_count(0)
                assert errors == []
            finally:
                browser.close()


@needs_chromium
async def test_sign_out_from_the_dashboard(gateway: Any, oidc: Any) -> None:
    """OIDC mode (the test provider, a gateway whose services are a stand-in): log in through
    the provider's page, open the contributors page, Log out. The session is revoked (its
    cookie no longer works anywhere) and the browser is sent to the provider's end-session
    page."""
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{gateway.url}/", timeout=15000)
            await page.fill("#login", "user@example.com")
            await page.fill("#password", "password")
            await page.click("#submit-login")
            await page.wait_for_url(f"{gateway.url}/", timeout=15000)
            await page.goto(f"{gateway.url}/#/contributors")
            await expect(page.locator("#user")).to_have_text("user@example.com")
            owner = page.locator('tr[data-name="user@example.com"]')
            await expect(owner).to_contain_text("owner")
            cookies = {c["name"]: c["value"] for c in await page.context.cookies(gateway.url)}
            session = cookies["shipyard_session"]

            await page.get_by_role("button", name="Log out").click()
            await page.wait_for_url(f"{oidc.issuer}/session/end**", timeout=15000)
            left = {c["name"] for c in await page.context.cookies(gateway.url)}
            assert "shipyard_session" not in left
            async with httpx.AsyncClient(
                base_url=gateway.url, timeout=15, cookies={"shipyard_session": session}
            ) as c:
                r = await c.get("/oauth2/userinfo")
                assert r.status_code == 401, r.text
            assert errors == []
        finally:
            await browser.close()
