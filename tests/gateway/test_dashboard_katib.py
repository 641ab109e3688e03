"""The dashboard's Katib flow in headless Chromium against the real platform: the
new-experiment form (algorithm settings with their defaults, the generated YAML), the API's
field causes shown next to the field they name, an experiment created from the form whose
trials run and whose best trial is marked, a trial's log, restart (resumePolicy LongRunning,
a higher maxTrialCount) and delete; each step checked through the API too."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests.browser import SHOTS, launch, needs_chromium

API = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}"
NAME = "dash-katib"
BAD = "dash-katib-bad"
FROM_YAML = "dash-katib-yaml"
MIN_PATH = "spec.parameters[0].feasibleSpace.min"


async def experiment(api: httpx.AsyncClient) -> dict[str, Any]:
    r = await api.get(f"{API}/experiments/{NAME}")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def gone(api: httpx.AsyncClient, path: str) -> bool:
    for _ in range(60):
        r = await api.get(path)
        if r.status_code == 404:
            return True
        await asyncio.sleep(0.5)
    return False


async def invalid_form(page: Any, api: httpx.AsyncClient, expect: Any) -> None:
    """min > max: the form shows the API's cause at the min field and creates nothing;
    fixing the field takes the complaint away."""
    await page.get_by_label("Name", exact=True).fill(BAD)
    await page.get_by_label("Parameter 1 min", exact=True).fill("0.5")
    await page.get_by_label("Parameter 1 max", exact=True).fill("0.1")
    await page.click("#xf-submit")
    note = page.locator(f'.field-error[data-path="{MIN_PATH}"]')
    await expect(note).to_contain_text("must be < max")
    await expect(note).to_contain_text(MIN_PATH)
    # In place: right after the first parameter's row, and the min field is marked invalid.
    following = page.locator(".param-row").nth(1).locator("xpath=following-sibling::*[1]")
    await expect(following).to_have_attribute("data-path", MIN_PATH)
    min_field = page.get_by_label("Parameter 1 min", exact=True)
    await expect(min_field).to_have_attribute("aria-invalid", "true")
    assert (await api.get(f"{API}/experiments/{BAD}")).status_code == 404
    await page.screenshot(path=str(SHOTS / "experiment-form-error.png"))
    await min_field.fill("0.01")
    await expect(page.locator(".field-error")).to_have_count(0)
    await expect(page.locator(".form-errors .error")).to_have_count(0)
    await expect(min_field).not_to_have_attribute("aria-invalid", "true")


async def yaml_step(page: Any, api: httpx.AsyncClient, expect: Any) -> None:
    """The form as YAML, edited before submit: a bad edit is refused with its path, "Back to
    the form" drops the edits, and a good edit creates exactly what the YAML says."""
    await page.get_by_label("Max trials", exact=True).fill("1")
    await page.get_by_label("Parallel trials", exact=True).fill("1")
    await page.get_by_label("Max failed trials", exact=True).fill("1")
    await page.click("#xf-to-yaml")
    yaml = page.get_by_label("Experiment YAML", exact=True)
    for text in (f"name: {BAD}", 'min: "0.01"', "maxTrialCount: 1", "${trialParameters.lr}"):
        await expect(yaml).to_have_value(re.compile(re.escape(text)))
    generated = await yaml.input_value()
    await yaml.fill(generated.replace('min: "0.01"', 'min: "0.5"', 1))
    await page.click("#xf-yaml-submit")
    await expect(page.locator(".form-errors .causes")).to_contain_text(MIN_PATH)
    assert (await api.get(f"{API}/experiments/{BAD}")).status_code == 404
    await page.click("#xf-back")
    await expect(page.get_by_label("Parameter 1 min", exact=True)).to_have_value("0.01")
    await page.click("#xf-to-yaml")
    await expect(yaml).to_have_value(generated)
    await yaml.fill(
        generated.replace(f"name: {BAD}", f"name: {FROM_YAML}").replace(
            'max: "0.1"', 'max: "0.2"', 1
        )
    )
    await page.click("#xf-yaml-submit")
    await page.wait_for_url(f"**/#/experiments/{FROM_YAML}")
    r = await api.get(f"{API}/experiments/{FROM_YAML}")
    assert r.status_code == 200, r.text
    spec = r.json()["spec"]
    assert spec["parameters"][0]["feasibleSpace"] == {"min": "0.01", "max": "0.2"}
    assert (spec["maxTrialCount"], spec["parallelTrialCount"]) == (1, 1)
    assert (await api.delete(f"{API}/experiments/{FROM_YAML}")).status_code in (200, 202)
    assert await gone(api, f"{API}/experiments/{FROM_YAML}")
    assert (await api.get(f"{API}/experiments/{BAD}")).status_code == 404


@needs_chromium
async def test_katib_experiment_from_the_dashboard_form(platform: Any) -> None:
    from playwright.async_api import async_playwright, expect

    base = platform.gateway_url
    async with httpx.AsyncClient(base_url=base, timeout=15) as api, async_playwright() as pw:
        browser = await launch(pw)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 1500})
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(base + "/#/experiments", timeout=15000)
            await page.click("#new-experiment")
            await page.wait_for_url("**/#/experiments/+new")

            # The chosen algorithm's settings, with Katib's defaults.
            algorithm = page.get_by_label("Algorithm", exact=True)
            await algorithm.select_option("tpe")
            await expect(
                page.get_by_label("Algorithm setting n_EI_candidates", exact=True)
            ).to_have_value("24")
            await algorithm.select_option("bayesianoptimization")
            await expect(page.get_by_label("Algorithm setting acq_func", exact=True)).to_have_value(
                "gp_hedge"
            )
            await algorithm.select_option("random")
            await expect(
                page.get_by_label("Algorithm setting random_state", exact=True)
            ).to_be_visible()
            await page.get_by_label("Early stopping", exact=True).select_option("medianstop")
            await expect(
                page.get_by_label("Early stopping setting min_trials_required", exact=True)
            ).to_have_value("3")
            await page.get_by_label("Early stopping", exact=True).select_option("none")

            # Parameter rows: add one, a categorical takes a list instead of bounds, remove it.
            await page.click("#xf-add-parameter")
            await page.get_by_label("Parameter 3 type", exact=True).select_option("categorical")
            await expect(page.get_by_label("Parameter 3 min", exact=True)).to_be_hidden()
            await expect(page.get_by_label("Parameter 3 list", exact=True)).to_be_visible()
            await page.get_by_role("button", name="Remove parameter 3").click()
            await expect(page.get_by_label("Parameter 3 name", exact=True)).to_have_count(0)
            await expect(
                page.get_by_label("trial parameters", exact=True).locator("li")
            ).to_have_count(2)

            await invalid_form(page, api, expect)
            await yaml_step(page, api, expect)

            # The good experiment: random, two parameters (the form's defaults), three trials,
            # the default command; on a fresh form.
            await page.get_by_role("link", name="← All experiments").click()
            await page.click("#new-experiment")
            await page.wait_for_url("**/#/experiments/+new")
            await page.get_by_label("Name", exact=True).fill(NAME)
            await page.get_by_label("Max trials", exact=True).fill("3")
            await page.get_by_label("Parallel trials", exact=True).fill("3")
            await page.get_by_label("Max failed trials", exact=True).fill("1")
            await page.get_by_label("Resume policy", exact=True).select_option("LongRunning")
            # No goal: a random trial reaching it would end the experiment as GoalReached,
            # which (as in Katib) cannot be restarted.
            await page.get_by_label("Goal", exact=True).fill("")
            await expect(page.get_by_label("trial parameters", exact=True)).to_contain_text(
                "${trialParameters.num_layers} ← parameter num-layers"
            )
            await expect(page.get_by_label("Command", exact=True)).to_have_value(
                re.compile(re.escape("${trialParameters.num_layers}"))
            )
            await page.screenshot(path=str(SHOTS / "experiment-form.png"))
            await page.click("#xf-submit")
            await page.wait_for_url(f"**/#/experiments/{NAME}")
            await expect(page.locator(".field-error")).to_have_count(0)

            made = await experiment(api)
            spec = made["spec"]
            assert spec["algorithm"]["algorithmName"] == "random"
            assert [(p["name"], p["parameterType"]) for p in spec["parameters"]] == [
                ("lr", "double"),
                ("num-layers", "int"),
            ]
            assert spec["parameters"][0]["feasibleSpace"] == {"min": "0.01", "max": "0.05"}
            assert (spec["maxTrialCount"], spec["parallelTrialCount"]) == (3, 3)
            objective = spec["objective"]
            assert (objective["type"], objective["objectiveMetricName"]) == ("maximize", "accuracy")
            assert "goal" not in objective
            template = spec["trialTemplate"]
            assert {(t["name"], t["reference"]) for t in template["trialParameters"]} == {
                ("lr", "lr"),
                ("num_layers", "num-layers"),
            }
            container = template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
            assert container["command"][-2:] == [
                "${trialParameters.lr}",
                "${trialParameters.num_layers}",
            ]

            # Trials run; the page follows them to the end and marks the best one.
            await expect(page.locator(".summary .badge")).to_have_text("Succeeded", timeout=60000)
            rows = page.locator("table.grid tbody tr")
            await expect(rows).to_have_count(3)
            best = (await experiment(api))["status"]["currentOptimalTrial"]["bestTrialName"]
            assert best.startswith(NAME)
            await expect(page.locator("tr.best")).to_have_attribute("data-name", best)
            await expect(page.locator("tr.best .pill.best")).to_have_count(1)
            await expect(page.get_by_label("best trial")).to_contain_text(best)
            await expect(page.locator("svg.parallel polyline.pc-line")).to_have_count(3)
            await expect(page.locator("svg.objective-chart circle.oc-point")).to_have_count(3)
            await expect(
                page.locator(f'svg.objective-chart circle.best[data-trial="{best}"]')
            ).to_have_count(1)
            await expect(page.locator("svg.objective-chart polyline.oc-best-line")).to_have_count(1)

            # One trial's log: what the trial printed, as the API (shipyard logs trial) has it.
            await page.get_by_role("button", name=f"Logs of {best}").click()
            log = page.get_by_label("trial log")
            await expect(log).to_contain_text("accuracy=", timeout=15000)
            r = await api.get(f"{API}/trials/{best}/log")
            assert r.status_code == 200, r.text
            assert "accuracy=" in r.text
            await expect(log).to_contain_text(r.text.strip().splitlines()[-1])
            await page.screenshot(path=str(SHOTS / "experiment.png"))

            # Restart (resumePolicy LongRunning): a higher maxTrialCount runs one more trial.
            await expect(page.locator("#restart")).to_be_enabled()
            await page.get_by_label("New max trial count", exact=True).fill("4")
            await page.click("#restart")
            await expect(page.get_by_role("status").filter(has_text="Restarting")).to_have_text(
                "Restarting with maxTrialCount 4."
            )
            await expect(rows).to_have_count(4, timeout=30000)
            await expect(page.locator(".summary .badge")).to_have_text("Succeeded", timeout=60000)
            restarted = await experiment(api)
            assert restarted["spec"]["maxTrialCount"] == 4
            assert restarted["status"]["trialsSucceeded"] == 4

            # Delete, after the confirmation.
            page.once("dialog", lambda dialog: dialog.accept())
            await page.click("#delete-experiment")
            await page.wait_for_url("**/#/experiments")
            # Deletion finishes once its trials are gone (Kubernetes' foreground style).
            await expect(page.locator("table.grid, .empty").first).to_be_visible()
            await expect(page.locator(f'tr[data-name="{NAME}"]')).to_have_count(0, timeout=30000)
            assert await gone(api, f"{API}/experiments/{NAME}")
            left = await api.get(
                f"{API}/trials", params={"labelSelector": f"katib.kubeflow.org/experiment={NAME}"}
            )
            assert left.json()["items"] == []
            assert errors == []
        finally:
            await browser.close()
