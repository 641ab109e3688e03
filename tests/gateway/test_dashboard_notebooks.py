"""The dashboard's notebook flow in headless Chromium against the real platform: the spawner
form (built from /jupyter/api/config), the list's live status, Connect into JupyterLab, stop,
start, the server's events and log, and delete; each step checked through the API too."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs
from tests.browser import SHOTS, launch, needs_chromium

NOTEBOOKS = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
PVCS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
NAME = "dash-lab"


async def notebook(api: httpx.AsyncClient) -> dict[str, Any]:
    r = await api.get(f"{NOTEBOOKS}/{NAME}")
    assert r.status_code == 200, r.text
    return dict(r.json())


@needs_chromium
async def test_notebook_from_the_dashboard_form(platform: Any) -> None:
    from playwright.async_api import async_playwright, expect

    base = platform.gateway_url
    async with httpx.AsyncClient(base_url=base, timeout=15) as api:
        made = await api.post(PVCS, json=specs.claim("dash-data", "16Mi"))
        assert made.status_code == 201, made.text

        async with async_playwright() as pw:
            browser = await launch(pw)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 860})
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(base + "/#/notebooks", timeout=15000)
                await expect(page.get_by_text("No notebook servers yet")).to_be_visible()

                # The form: its choices come from the spawner configuration and the namespace.
                await page.click("#new-notebook")
                await page.wait_for_url("**/#/notebooks/+new")
                image = page.get_by_label("Image", exact=True)
                await expect(image).to_have_value("kubeflownotebookswg/jupyter-scipy:v1.8.0")
                await expect(page.get_by_label("CPU", exact=True)).to_have_value("0.5")
                data = page.get_by_label("Data volume", exact=True)
                await expect(data.locator("option")).to_contain_text(["(none)", "dash-data"])

                # A bad name: the API's message is shown in place and nothing is created.
                await page.get_by_label("Name", exact=True).fill("Bad_Name")
                await page.evaluate("document.querySelector('#nb-name').removeAttribute('pattern')")
                await page.click("#nb-submit")
                await expect(page.locator(".form-errors .error-message")).to_contain_text(
                    "Bad_Name"
                )
                assert (await api.get(f"{NOTEBOOKS}/Bad_Name")).status_code in (404, 422)

                await page.get_by_label("Name", exact=True).fill(NAME)
                await image.select_option("kubeflownotebookswg/jupyter-pytorch-full:v1.8.0")
                await page.get_by_label("Memory", exact=True).fill("512Mi")
                await page.get_by_label("Workspace size", exact=True).fill("32Mi")
                await data.select_option("dash-data")
                await page.screenshot(path=str(SHOTS / "notebook-form.png"))
                await page.click("#nb-submit")
                await page.wait_for_url("**/#/notebooks")

                # What the form made, as the API has it.
                nb = await notebook(api)
                container = nb["spec"]["template"]["spec"]["containers"][0]
                assert container["image"] == "kubeflownotebookswg/jupyter-pytorch-full:v1.8.0"
                assert container["resources"]["requests"] == {"cpu": "0.5", "memory": "512Mi"}
                claims = {
                    v["persistentVolumeClaim"]["claimName"]
                    for v in nb["spec"]["template"]["spec"]["volumes"]
                    if "persistentVolumeClaim" in v
                }
                assert claims == {f"{NAME}-workspace", "dash-data"}
                ws = await api.get(f"{PVCS}/{NAME}-workspace")
                assert ws.status_code == 200, ws.text
                assert ws.json()["spec"]["resources"]["requests"]["storage"] == "32Mi"

                # The list follows it to ready; Connect opens JupyterLab.
                row = page.locator(f'tr[data-name="{NAME}"]')
                await expect(row.locator(".badge")).to_have_text("ready", timeout=90000)
                await page.screenshot(path=str(SHOTS / "notebooks.png"))
                async with context.expect_page() as opened:
                    await row.get_by_role("link", name=f"Connect {NAME}").click()
                lab = await opened.value
                await lab.wait_for_load_state()
                await expect(lab).to_have_title("JupyterLab", timeout=60000)
                await lab.close()

                # Its page: events and the server's log.
                await row.get_by_role("link", name=NAME, exact=True).click()
                await page.wait_for_url(f"**/#/notebooks/{NAME}")
                await expect(page.locator("table.grid")).to_contain_text("Created")
                await expect(page.locator("pre.log")).not_to_be_empty(timeout=30000)
                await page.screenshot(path=str(SHOTS / "notebook.png"))

                # Stop and start from the list.
                await page.goto(base + "/#/notebooks")
                await row.get_by_role("button", name=f"Stop {NAME}").click()
                await expect(row.locator(".badge")).to_have_text("stopped", timeout=60000)
                stopped = (await notebook(api))["metadata"]["annotations"]
                assert "kubeflow-resource-stopped" in stopped
                await row.get_by_role("button", name=f"Start {NAME}").click()
                await expect(row.locator(".badge")).to_have_text("ready", timeout=90000)
                annotations = (await notebook(api))["metadata"].get("annotations") or {}
                assert "kubeflow-resource-stopped" not in annotations

                # Delete, after the confirmation; the volumes stay.
                page.once("dialog", lambda dialog: dialog.accept())
                await row.get_by_role("button", name=f"Delete {NAME}").click()
                await expect(row).to_have_count(0, timeout=30000)
                assert (await api.get(f"{NOTEBOOKS}/{NAME}")).status_code == 404
                assert (await api.get(f"{PVCS}/{NAME}-workspace")).status_code == 200
                assert errors == []
            finally:
                await browser.close()
