"""The dashboard: static files from the gateway, and the UI in headless Chromium against the
real platform (single-user mode, every service a real process)."""

from __future__ import annotations

from typing import Any

import httpx

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs
from tests.browser import launch, needs_chromium

PVCS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
WORKFLOWS = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
EXPERIMENTS = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/experiments"

WORKFLOW = specs.workflow(
    "dash-wf",
    [
        {
            "name": "main",
            "dag": {
                "tasks": [
                    {"name": "hello", "template": "say"},
                    {"name": "world", "template": "say", "dependencies": ["hello"]},
                ]
            },
        },
        {
            "name": "say",
            "container": {
                "image": "python:3.11",
                "command": ["python3", "-c", "print('hello from the dashboard test')"],
            },
        },
    ],
)
EXPERIMENT = specs.experiment(
    "dash-exp",
    ["python3", "-c", "print('accuracy=' + str(1 - float('${trialParameters.lr}')))"],
    parameters=[
        {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.1"}},
        {
            "name": "optimizer",
            "parameterType": "categorical",
            "feasibleSpace": {"list": ["sgd", "adam"]},
        },
    ],
    objective="maximize",
    metric="accuracy",
    parallelTrialCount=3,
    maxTrialCount=3,
    maxFailedTrialCount=1,
)
PVC = specs.claim("dash-pvc", "64Mi")
YAML_PVC = """apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: dash-yaml-pvc
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 32Mi
"""
BAD_YAML_PVC = """apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: dash-bad-pvc}
spec: {accessModes: [ReadWriteOnce], bogus: 1}
"""


def test_read_dashboard_serves_html_and_assets(platform: Any) -> None:
    base = platform.gateway_url
    page = httpx.get(base + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/ui/app.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = "text/javascript; charset=utf-8"
    expected = {
        "app.js": js,
        "api.js": js,
        "style.css": "text/css; charset=utf-8",
        "logo.svg": "image/svg+xml",
    }
    for name, ctype in expected.items():
        r = httpx.get(f"{base}/ui/{name}", timeout=10)
        assert r.status_code == 200, name
        assert r.headers["content-type"] == ctype
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-content-type-options"] == "nosniff"
        again = httpx.get(
            f"{base}/ui/{name}", headers={"If-None-Match": r.headers["etag"]}, timeout=10
        )
        assert again.status_code == 304 and again.content == b""
    for missing in ("/ui/nope.js", "/ui/..%2Fdashboard.py", "/ui/%2e%2e/app.py"):
        r = httpx.get(base + missing, timeout=10)
        assert r.status_code == 404, missing
        assert r.json()["kind"] == "Status"


async def test_read_dashboard_redirects_to_login_without_session(client: httpx.AsyncClient) -> None:
    """OIDC mode: a browser without a session goes to login; the assets stay public."""
    r = await client.get("/")
    assert r.status_code == 302
    assert r.headers["location"] == "/oauth2/start?rd=%2F"
    asset = await client.get("/ui/app.js")
    assert asset.status_code == 200


@needs_chromium
async def test_browse_dashboard_in_headless_chromium(platform: Any) -> None:
    from playwright.async_api import async_playwright, expect

    base = platform.gateway_url
    async with httpx.AsyncClient(base_url=base, timeout=15) as api:
        assert (await api.post(PVCS, json=PVC)).status_code == 201
        assert (await api.post(WORKFLOWS, json=WORKFLOW)).status_code == 201
        assert (await api.post(EXPERIMENTS, json=EXPERIMENT)).status_code == 201

    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base + "/", timeout=15000)
            await expect(page.locator("#user")).to_have_text("user@example.com")
            await expect(page.locator("#namespace")).to_have_value(NS)

            # The list follows the watch stream, so it shows Succeeded without a reload.
            row = page.locator('tr[data-name="dash-wf"]')
            await expect(row.locator(".badge")).to_have_text("Succeeded", timeout=30000)
            await expect(row).to_contain_text("2/2")
            await page.screenshot(path="/tmp/dashboard-pipelines.png")

            await row.locator("a").click()
            await page.wait_for_url("**/#/pipelines/dash-wf")
            for step in ("hello", "world"):
                node = page.locator(f'svg.dag g.node[data-node="{step}"]')
                await expect(node).to_have_attribute("data-phase", "Succeeded")
            await page.locator('g.node[data-node="hello"]').click()
            await expect(page.locator(".node-panel h2")).to_have_text("hello")
            await expect(page.locator("pre.log")).to_contain_text("hello from the dashboard test")
            await page.screenshot(path="/tmp/dashboard-workflow.png")

            # The experiment: three trials in the table and as lines in the chart, best marked.
            await page.click('nav.side a[data-view="experiments"]')
            exp_row = page.locator('tr[data-name="dash-exp"]')
            await expect(exp_row.locator(".badge")).to_have_text("Succeeded", timeout=30000)
            await expect(exp_row).to_contain_text("3/3")
            await exp_row.locator("a").click()
            await expect(page.locator("table.grid tbody tr")).to_have_count(3)
            await expect(page.locator("svg.parallel polyline.pc-line")).to_have_count(3)
            await expect(page.locator("svg.parallel .pc-name")).to_have_text(
                ["lr", "optimizer", "accuracy"]
            )
            await expect(page.locator("tr.best .pill.best")).to_have_count(1)
            await expect(page.locator("svg.parallel polyline.best")).to_have_count(1)
            await page.screenshot(path="/tmp/dashboard-experiment.png")

            await page.click('nav.side a[data-view="volumes"]')
            await expect(page.locator('tr[data-name="dash-pvc"] .badge')).to_have_text("Bound")

            # Create from YAML: the object shows up in the list it belongs to.
            await page.click("#create-yaml")
            await page.fill("#yaml-input", YAML_PVC)
            await page.click("#yaml-submit")
            await expect(page.locator("dialog.create-dialog")).to_have_count(0)
            await expect(page.locator('tr[data-name="dash-yaml-pvc"]')).to_be_visible()
            await page.screenshot(path="/tmp/dashboard-volumes.png")

            # An invalid object: the dialog stays open with the API's field path.
            await page.click("#create-yaml")
            await page.fill("#yaml-input", BAD_YAML_PVC)
            await page.click("#yaml-submit")
            error = page.locator("dialog.create-dialog .error")
            await expect(error.locator("code.field")).to_have_text("spec.bogus")
            await expect(error.locator(".error-message")).to_contain_text("is invalid")
            await page.screenshot(path="/tmp/dashboard-invalid.png")
            assert errors == []
        finally:
            await browser.close()

    async with httpx.AsyncClient(base_url=base, timeout=15) as api:
        assert (await api.get(f"{PVCS}/dash-bad-pvc")).status_code == 404
