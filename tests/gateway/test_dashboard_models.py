"""The dashboard's Models and Volumes pages in headless Chromium against the real platform
(single-user mode): InferenceServices with a canary promoted and another rolled back from the
UI, the test-inference panel answering with a real sklearn model's predictions, a model
deleted; volumes created and deleted from the UI, the "used by" column, and the API's refusal
to delete a claim a running model server mounts. Each step is checked through the API too."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs
from tests.browser import CHROMIUM, CHROMIUM_ARGS, SHOTS, needs_chromium
from tests.serving.conftest import (
    ISVC_PATH,
    PVC_PATH,
    REVISION_MODEL,
    create_claim,
    isvc,
    predict,
    ready,
    train_sklearn,
    wait_isvc,
)

CLAIM = "dash-models"
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]
NOTEBOOKS = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
WORKFLOWS = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
MERGE = {"content-type": "application/merge-patch+json"}


def traffic(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["status"]["components"]["predictor"].get("traffic") or [])


def with_canary(api: httpx.Client, name: str) -> None:
    """InferenceService ``name``: revision 1 serves models/a, then a 20% canary on models/b."""
    predictor = {"model": {"modelFormat": {"name": "python"}, "storageUri": f"pvc://{CLAIM}/a"}}
    r = api.post(ISVC_PATH, json=isvc(name, predictor))
    assert r.status_code == 201, r.text
    wait_isvc(api, name, ready, timeout=60)
    patch = {
        "spec": {
            "predictor": {"canaryTrafficPercent": 20, "model": {"storageUri": f"pvc://{CLAIM}/b"}}
        }
    }
    r = api.patch(f"{ISVC_PATH}/{name}", json=patch, headers=MERGE)
    assert r.status_code == 200, r.text


def failed(obj: dict[str, Any]) -> bool:
    model = (obj.get("status") or {}).get("modelStatus") or {}
    return bool(model.get("transitionStatus") == "BlockedByFailedLoad")


@pytest.fixture(scope="module")
def models(platform: Any) -> Iterator[tuple[httpx.Client, Any]]:
    """Two canaries (80/20) and an sklearn model served over V2, all on one claim."""
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as api:
        data = create_claim(platform, api, CLAIM)
        for version in ("a", "b"):
            (data / version).mkdir(parents=True, exist_ok=True)
            (data / version / "model.py").write_text(REVISION_MODEL)
        sklearn_model = train_sklearn(data / "iris")
        body = isvc(
            "dash-iris",
            {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "protocolVersion": "v2",
                    "storageUri": f"pvc://{CLAIM}/iris",
                }
            },
        )
        assert api.post(ISVC_PATH, json=body).status_code == 201
        for name in ("dash-canary", "dash-rollback"):
            with_canary(api, name)
        for name in ("dash-canary", "dash-rollback"):
            wait_isvc(api, name, lambda o: len(traffic(o)) == 2, timeout=60)
        wait_isvc(api, "dash-iris", ready, timeout=60)
        missing = isvc(
            "dash-broken",
            {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": f"pvc://{CLAIM}/missing"}},
        )
        assert api.post(ISVC_PATH, json=missing).status_code == 201
        wait_isvc(api, "dash-broken", failed, timeout=30)
        yield api, sklearn_model
        clean_up(api)


def clean_up(api: httpx.Client) -> None:
    """The session's platform is shared: what these tests made goes (model servers first,
    then the claims they mounted)."""
    for name in ("dash-canary", "dash-rollback", "dash-iris", "dash-broken"):
        assert api.delete(f"{ISVC_PATH}/{name}").status_code in (200, 404)
    assert api.delete(f"{NOTEBOOKS}/dash-nb").status_code in (200, 404)
    assert api.delete(f"{WORKFLOWS}/dash-vol-wf").status_code in (200, 404)
    deadline = time.monotonic() + 30
    for claim in (CLAIM, "dash-shared", "dash-scratch"):
        while (r := api.delete(f"{PVC_PATH}/{claim}")).status_code == 409:
            assert time.monotonic() < deadline, r.text  # a server still stopping
            time.sleep(0.2)
        assert r.status_code in (200, 404), r.text


def browser_page(pw: Any, url: str) -> tuple[Any, Any, list[str]]:
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url, timeout=15000)
    return browser, page, errors


def tall_screenshot(page: Any, name: str) -> None:
    """The whole page in one viewport (a full-page capture repeats the sticky header)."""
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1280, "height": height})
    page.screenshot(path=str(SHOTS / name))
    page.set_viewport_size({"width": 1280, "height": 900})


@needs_chromium
def test_models_promote_rollback_infer_delete(models: Any, platform: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    api, sklearn_model = models
    with sync_playwright() as pw:
        browser, page, errors = browser_page(pw, platform.gateway_url + "/#/models")
        try:
            # The list: status, URL (path and host), format, the 80/20 split.
            row = page.locator('tr[data-name="dash-canary"]')
            expect(row.locator(".badge")).to_have_text("Ready", timeout=20000)
            expect(row).to_contain_text(f"/serving/{NS}/dash-canary/")
            expect(row).to_contain_text(f"dash-canary.{NS}.example.com")
            expect(row).to_contain_text("python")
            expect(row.locator(".traffic")).to_have_text("00001: 80%00002: 20%")
            expect(page.locator('tr[data-name="dash-iris"]')).to_contain_text("sklearn")
            broken = page.locator('tr[data-name="dash-broken"]')
            expect(broken.locator(".badge")).to_have_text("NotReady")
            expect(broken).to_contain_text("RevisionFailed")
            page.screenshot(path=str(SHOTS / "models.png"))

            # Promote the canary from its page, after the confirmation.
            row.get_by_role("link", name="dash-canary", exact=True).click()
            page.wait_for_url("**/#/models/dash-canary")
            rollout = page.get_by_role("region", name="Rollout")
            expect(rollout).to_contain_text("dash-canary-predictor-00002")
            expect(page.get_by_role("table").first).to_be_visible()
            tall_screenshot(page, "models-canary.png")
            page.once("dialog", lambda d: d.accept())
            rollout.get_by_role("button", name="Promote canary").click()
            expect(page.locator(".messages .ok")).to_have_text(
                "Promoted: dash-canary-predictor-00002 takes 100%.", timeout=30000
            )
            obj = api.get(f"{ISVC_PATH}/dash-canary").json()
            assert traffic(obj) == [
                {
                    "revisionName": "dash-canary-predictor-00002",
                    "percent": 100,
                    "latestRevision": True,
                }
            ]
            assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
            url = f"/serving/{NS}/dash-canary/v1/models/dash-canary:predict"
            answers = {predict(api, url, {"instances": [1]})["predictions"][0] for _ in range(10)}
            assert answers == {"dash-canary-predictor-00002"}

            # Roll the other one back.
            page.goto(platform.gateway_url + "/#/models/dash-rollback")
            rollout = page.get_by_role("region", name="Rollout")
            expect(rollout.get_by_role("button", name="Roll back")).to_be_enabled(timeout=20000)
            page.once("dialog", lambda d: d.accept())
            rollout.get_by_role("button", name="Roll back").click()
            expect(page.locator(".messages .ok")).to_have_text(
                "Rolled back: dash-rollback-predictor-00001 takes 100%.", timeout=30000
            )
            obj = api.get(f"{ISVC_PATH}/dash-rollback").json()
            assert obj["spec"]["predictor"]["canaryTrafficPercent"] == 0
            assert [(t["revisionName"], t["percent"]) for t in traffic(obj)] == [
                ("dash-rollback-predictor-00001", 100),
                ("dash-rollback-predictor-00002", 0),
            ]
            expect(rollout.get_by_role("button", name="Roll back")).to_be_disabled()

            # The test-inference panel: a V2 body from the model's metadata, then real inputs.
            page.goto(platform.gateway_url + "/#/models/dash-iris")
            panel = page.get_by_role("region", name="Test inference")
            body = panel.get_by_label("Request body", exact=True)
            expect(body).to_have_value(re.compile('"datatype": "FP64"'), timeout=20000)
            prefilled = json.loads(body.input_value())
            assert prefilled["inputs"][0]["name"] == "input-0"
            assert prefilled["inputs"][0]["shape"] == [1, 4]
            x = np.array(SAMPLES)
            tensor = {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP64",
                "data": x.ravel().tolist(),
            }
            body.fill(json.dumps({"inputs": [tensor]}))
            panel.get_by_role("button", name="Send").click()
            expect(panel.locator("#infer-latency")).to_contain_text("answered in")
            answer = json.loads(panel.locator("#infer-response").inner_text())
            assert answer["outputs"][0]["data"] == sklearn_model.predict(x).tolist()
            panel.get_by_label("Protocol", exact=True).select_option("v1")
            assert json.loads(body.input_value()) == {"instances": [[0, 0, 0, 0]]}
            body.fill(json.dumps({"instances": SAMPLES}))
            panel.get_by_role("button", name="Send").click()
            expect(panel.locator("#infer-response")).to_contain_text("predictions")
            answer = json.loads(panel.locator("#infer-response").inner_text())
            assert answer == {"predictions": sklearn_model.predict(x).tolist()}
            expect(page.get_by_role("cell", name="PredictorReady")).to_be_visible()
            tall_screenshot(page, "models-infer.png")

            # The server's refusal and a body that is no JSON are shown in the panel.
            panel.get_by_label("Protocol", exact=True).select_option("v2")
            bad = {"name": "input-0", "shape": [3, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
            body.fill(json.dumps({"inputs": [bad]}))
            panel.get_by_role("button", name="Send").click()
            expect(panel.locator("#infer-response .error-message")).to_have_text(
                "input input-0: 4 elements, shape [3, 4] needs 12"
            )
            expect(panel.locator("#infer-latency")).to_contain_text("failed after")
            body.fill("{not json")
            panel.get_by_role("button", name="Send").click()
            expect(panel.locator("#infer-response .error-message")).to_contain_text("not JSON")

            # A model that cannot load: its page says why, and offers no test panel.
            page.goto(platform.gateway_url + "/#/models/dash-broken")
            expect(page.locator("dl.facts").first).to_contain_text("ModelLoadFailed")
            expect(page.locator("dl.facts").first).to_contain_text("does not exist")
            expect(page.get_by_role("region", name="Test inference")).to_contain_text("not ready")

            # Delete from the list.
            page.goto(platform.gateway_url + "/#/models")
            page.once("dialog", lambda d: d.accept())
            page.get_by_role("button", name="Delete dash-rollback").click()
            expect(page.locator('tr[data-name="dash-rollback"]')).to_have_count(0, timeout=20000)
            assert api.get(f"{ISVC_PATH}/dash-rollback").status_code == 404
            assert errors == []
        finally:
            browser.close()


@needs_chromium
def test_volumes_create_used_by_delete(models: Any, platform: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    api, _ = models
    # Another claim, mounted by a stopped notebook server and a suspended workflow: both
    # show in "used by", neither runs, so the claim may go once the question is answered.
    assert api.post(PVC_PATH, json=specs.claim("dash-shared", "16Mi")).status_code == 201
    mount = [{"name": "d", "persistentVolumeClaim": {"claimName": "dash-shared"}}]
    nb = specs.notebook("dash-nb", volumes=mount)
    nb["metadata"]["annotations"] = {"kubeflow-resource-stopped": "2026-01-01T00:00:00Z"}
    assert api.post(NOTEBOOKS, json=nb).status_code == 201
    say = {"name": "main", "container": {"image": "python:3.11", "command": ["true"]}}
    wf = specs.workflow("dash-vol-wf", [say], volumes=mount, suspend=True)
    assert api.post(WORKFLOWS, json=wf).status_code == 201
    with sync_playwright() as pw:
        browser, page, errors = browser_page(pw, platform.gateway_url + "/#/volumes")
        try:
            # "Used by": the claim the models are served from names them.
            row = page.locator(f'tr[data-name="{CLAIM}"]')
            expect(row).to_contain_text("model dash-iris", timeout=20000)
            expect(row).to_contain_text("model dash-canary")

            # Create from the form; a bad size shows the API's message and field in place.
            page.get_by_role("button", name="New volume").click()
            page.get_by_label("Name", exact=True).fill("dash-scratch")
            page.get_by_label("Size", exact=True).fill("lots")
            page.get_by_label("Access mode", exact=True).select_option("ReadWriteMany")
            page.get_by_role("button", name="Create", exact=True).click()
            expect(page.locator(".form-errors .error")).to_contain_text("spec.resources")
            assert api.get(f"{PVC_PATH}/dash-scratch").status_code == 404
            page.get_by_label("Size", exact=True).fill("64Mi")
            page.get_by_role("button", name="Create", exact=True).click()
            scratch = page.locator('tr[data-name="dash-scratch"]')
            expect(scratch.locator(".badge")).to_have_text("Bound", timeout=20000)
            expect(scratch).to_contain_text("ReadWriteMany")
            made = api.get(f"{PVC_PATH}/dash-scratch").json()
            assert made["spec"]["accessModes"] == ["ReadWriteMany"]
            assert made["spec"]["resources"]["requests"]["storage"] == "64Mi"
            page.screenshot(path=str(SHOTS / "volumes.png"))

            # Deleting the claim running model servers mount: the page names them in its
            # question, and the API's refusal is shown; the claim stays.
            questions: list[str] = []

            def answer(dialog: Any) -> None:
                questions.append(dialog.message)
                dialog.accept()

            page.once("dialog", answer)
            row.get_by_role("button", name=f"Delete {CLAIM}").click()
            expect(page.get_by_role("alert")).to_contain_text("is in use by running workload")
            assert "model dash-iris" in questions[0]
            assert api.get(f"{PVC_PATH}/{CLAIM}").status_code == 200

            shared = page.locator('tr[data-name="dash-shared"]')
            expect(shared).to_contain_text("notebook dash-nb")
            expect(shared).to_contain_text("workflow dash-vol-wf")
            page.once("dialog", answer)
            shared.get_by_role("button", name="Delete dash-shared").click()
            expect(shared).to_have_count(0, timeout=20000)
            assert "notebook dash-nb, workflow dash-vol-wf" in questions[1]
            assert api.get(f"{PVC_PATH}/dash-shared").status_code == 404

            page.once("dialog", lambda d: d.accept())
            scratch.get_by_role("button", name="Delete dash-scratch").click()
            expect(scratch).to_have_count(0, timeout=20000)
            assert api.get(f"{PVC_PATH}/dash-scratch").status_code == 404
            assert errors == []
        finally:
            browser.close()
