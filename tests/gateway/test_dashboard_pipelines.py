"""The dashboard's Kubeflow Pipelines flows in headless Chromium against the real platform:
upload the seed's Argo Workflow as a pipeline, run it and read a step's log; upload a pipeline
compiled with the kfp SDK (and a second version), run it twice with different parameters,
see its metrics (scalars, confusion matrix, ROC curve) and compare the runs; archive, restore
and delete runs; a recurring run that starts runs; a KFP experiment created and archived.
Each step is checked through the KFP API too.

No ``from __future__ import annotations``: kfp reads the component's annotations as types.
"""

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from kfp import compiler, dsl
from kfp.dsl import ClassificationMetrics, Dataset, Metrics, Output

from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests.browser import SHOTS, launch, needs_chromium
from tests.pipeline.components import napper

ROOT = Path(__file__).resolve().parents[2]
SEED_WORKFLOW = ROOT / "tests" / "seed" / "workflow.yaml"
SEED_PVC = ROOT / "tests" / "seed" / "pvc.yaml"
KFP = "/apis/v2beta1"
PVCS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
FINAL = re.compile("SUCCEEDED|FAILED|CANCELED")
RUN_URL = re.compile(r".*#/kfp/runs/[0-9a-f-]{36}$")


@dsl.component(base_image="python:3.11")
def train(
    lr: float,
    metrics: Output[Metrics],
    quality: Output[ClassificationMetrics],
    report: Output[Dataset],
) -> None:
    accuracy = round(1 - lr, 4)
    print(f"training with lr={lr}: accuracy={accuracy}")
    metrics.log_metric("accuracy", accuracy)
    metrics.log_metric("loss", round(lr * 2, 4))
    quality.log_confusion_matrix(["cat", "dog"], [[8, 2], [1, 9]])
    tpr = [0.0, round(0.9 - lr, 4), round(1 - lr / 2, 4), 1.0]
    quality.log_roc_curve([0.0, 0.1, 0.4, 1.0], tpr, [1.0, 0.8, 0.5, 0.0])
    with open(report.path, "w") as f:
        f.write(f"report: lr={lr} accuracy={accuracy}\n")


@dsl.pipeline(name="metrics-demo")
def metrics_demo(lr: float = 0.1) -> None:
    train(lr=lr).set_caching_options(False)


async def kfp_get(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    r = await api.get(KFP + path, params={"namespace": NS})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def by_name(api: httpx.AsyncClient, path: str, key: str, name: str) -> dict[str, Any]:
    items = (await kfp_get(api, path)).get(key) or []
    found = [i for i in items if i["display_name"] == name]
    assert len(found) == 1, items
    return found[0]


async def finished(page: Any, expect: Any, api: httpx.AsyncClient, wait_ms: int) -> None:
    """Wait until the run page shows a final state; the run must have succeeded."""
    badge = page.locator(".summary .badge").first
    await expect(badge).to_have_text(FINAL, timeout=wait_ms)
    run = await kfp_get(api, "/runs/" + page.url.rsplit("/", 1)[1])
    assert run["state"] == "SUCCEEDED", (run.get("error"), run["run_details"])
    await expect(badge).to_have_text("SUCCEEDED")


async def start_run(page: Any, expect: Any, pipeline: str, name: str, lr: str | None) -> str:
    """The run form, from the pipeline list; the run's id (from the page it lands on)."""
    await page.goto(page.url.split("#")[0] + "#/kfp/pipelines")
    await page.get_by_role("link", name=f"Create run of {pipeline}").click()
    await page.wait_for_url("**/#/kfp/runs/+new?pipeline=*")
    await page.get_by_label("Run name", exact=True).fill(name)
    if lr is not None:
        await expect(page.get_by_label("lr", exact=True)).to_have_value("0.1")
        await page.get_by_label("lr", exact=True).fill(lr)
    await page.click("#run-submit")
    await page.wait_for_url(RUN_URL)
    return page.url.rsplit("/", 1)[1]


@needs_chromium
async def test_kfp_pipelines_runs_and_experiments_in_the_dashboard(
    platform: Any, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    package = tmp_path / "metrics-demo.yaml"
    compiler.Compiler().compile(metrics_demo, str(package))
    base = platform.gateway_url
    async with httpx.AsyncClient(base_url=base, timeout=15) as api:
        pvc = yaml.safe_load(SEED_PVC.read_text())
        made = await api.post(PVCS, json=pvc)
        assert made.status_code in (201, 409), made.text
        async with async_playwright() as pw:
            browser = await launch(pw)
            try:
                page = await browser.new_page(viewport={"width": 1360, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("dialog", lambda dialog: dialog.accept())
                await page.goto(base + "/#/kfp/pipelines", timeout=15000)
                # (Other tests of the session may have uploaded pipelines: no empty list here.)
                await expect(page.get_by_role("heading", name="Pipelines")).to_be_visible()
                await expect(page.locator("nav.tabs a[aria-current=page]")).to_have_text(
                    "Pipelines"
                )

                # A KFP experiment first, so the metrics runs can go into it.
                await page.get_by_role("link", name="KFP experiments").click()
                await page.click("#new-kfp-experiment")
                await page.get_by_label("Experiment name", exact=True).fill("dash-kfp-exp")
                await page.get_by_label("Experiment description", exact=True).fill("from the UI")
                await page.get_by_role("button", name="Create experiment").click()
                await expect(page.locator('tr[data-name="dash-kfp-exp"]')).to_be_visible()
                exp = await by_name(api, "/experiments", "experiments", "dash-kfp-exp")
                assert exp["description"] == "from the UI"

                await upload_and_run_seed(page, expect, api)
                metric_runs = await run_metrics_pipeline(page, expect, api, package)
                await compare_and_archive(page, expect, api, metric_runs)
                await artifacts_page(page, expect)
                await recurring_run(page, expect, api)
                await terminate_a_run(page, expect, api, tmp_path)

                # Archive the KFP experiment: it leaves the active list, as the API says.
                await page.goto(base + "/#/kfp/experiments")
                row = page.locator('tr[data-name="dash-kfp-exp"]')
                await page.screenshot(path=str(SHOTS / "pipelines-experiments.png"))
                await row.get_by_role("button", name="Archive dash-kfp-exp").click()
                await expect(row).to_have_count(0)
                exp = await by_name(api, "/experiments", "experiments", "dash-kfp-exp")
                assert exp["storage_state"] == "ARCHIVED"
                await page.get_by_role("button", name="Archived").click()
                await expect(row).to_be_visible()

                # The Argo Workflows tab still lists every run's Workflow.
                await page.get_by_role("link", name="Workflows").click()
                await expect(page.locator("table.grid tbody tr").first).to_be_visible()
                assert errors == []
            finally:
                await browser.close()
        if made.status_code == 201:  # the session's platform is shared: leave the seed's claim
            gone = await api.delete(f"{PVCS}/{pvc['metadata']['name']}")  # as it was (absent)
            assert gone.status_code == 200, gone.text


async def upload_and_run_seed(page: Any, expect: Any, api: httpx.AsyncClient) -> None:
    await page.goto(page.url.split("#")[0] + "#/kfp/pipelines")
    await page.click("#upload-pipeline")
    await page.get_by_label("Package file", exact=True).set_input_files(str(SEED_WORKFLOW))
    await expect(page.get_by_label("Name", exact=True)).to_have_value("workflow")
    await page.get_by_label("Name", exact=True).fill("seed-workflow")
    await page.get_by_role("button", name="Upload", exact=True).click()
    await page.wait_for_url("**/#/kfp/pipelines/*")
    for step in ("repeat-line", "print-text"):
        await expect(page.locator(f'svg.dag g.node[data-node="{step}"]')).to_be_visible()
    await page.locator('svg.dag g.node[data-node="print-text"]').click()
    await expect(page.locator(".task-facts")).to_contain_text("Templateprint-text")
    await expect(page.locator(".task-facts")).to_contain_text("python:3.7")
    await page.screenshot(path=str(SHOTS / "pipelines-graph.png"))
    seed = await by_name(api, "/pipelines", "pipelines", "seed-workflow")
    versions = await kfp_get(api, f"/pipelines/{seed['pipeline_id']}/versions")
    assert versions["pipeline_versions"][0]["pipeline_spec"]["kind"] == "Workflow"

    run_id = await start_run(page, expect, "seed-workflow", "seed-run", None)
    await finished(page, expect, api, 60000)
    await page.locator('g.node[data-node="print-text"]').click()
    await expect(page.locator(".node-panel h2")).to_have_text("print-text")
    await expect(page.locator("pre.log")).to_contain_text("Hello\nHello")
    await page.screenshot(path=str(SHOTS / "runs-detail.png"))
    await expect(page.locator(".summary")).to_contain_text("Pipeline seed-workflow · seed-workflow")
    run = await kfp_get(api, f"/runs/{run_id}")
    assert run["state"] == "SUCCEEDED" and run["display_name"] == "seed-run"
    assert run["pipeline_version_reference"]["pipeline_id"] == seed["pipeline_id"]


async def run_metrics_pipeline(
    page: Any, expect: Any, api: httpx.AsyncClient, package: Path
) -> list[str]:
    await page.goto(page.url.split("#")[0] + "#/kfp/pipelines")
    await page.click("#upload-pipeline")
    await page.get_by_label("Package file", exact=True).set_input_files(str(package))
    await page.get_by_role("button", name="Upload", exact=True).click()
    await page.wait_for_url("**/#/kfp/pipelines/*")
    # A second version of it, uploaded on the pipeline's page.
    await page.click("#upload-version")
    await page.get_by_label("Package file", exact=True).set_input_files(str(package))
    await page.get_by_label("Name", exact=True).fill("v2")
    await page.get_by_role("button", name="Upload", exact=True).click()
    v2 = page.get_by_role("button", name="v2", exact=True)
    await expect(v2).to_have_attribute("aria-pressed", "true")
    await page.locator('svg.dag g.node[data-node="train"]').click()
    await expect(page.locator(".task-facts")).to_contain_text("Input lrpipeline input lr")
    # A version uploaded by mistake is deleted from its row.
    await page.click("#upload-version")
    await page.get_by_label("Package file", exact=True).set_input_files(str(package))
    await page.get_by_label("Name", exact=True).fill("scratch")
    await page.get_by_role("button", name="Upload", exact=True).click()
    await page.get_by_role("button", name="Delete version scratch").click()
    await expect(page.get_by_role("button", name="scratch", exact=True)).to_have_count(0)
    # A version from a URL: the form sends KFP's package_url, which the platform fetches; the
    # shared platform allows no private host, so a loopback URL is refused, naming the field.
    await page.click("#upload-version")
    await page.get_by_label("From URL", exact=True).check()
    await page.get_by_label("Package URL", exact=True).fill("http://127.0.0.1:9/p.yaml")
    await page.get_by_role("button", name="Upload", exact=True).click()
    await expect(page.locator('form[aria-label="Upload version"] .form-errors')).to_contain_text(
        "package_url.pipeline_url: address refused"
    )
    pipeline = await by_name(api, "/pipelines", "pipelines", "metrics-demo")
    listed = await kfp_get(api, f"/pipelines/{pipeline['pipeline_id']}/versions")
    assert sorted(v["display_name"] for v in listed["pipeline_versions"]) == [
        "metrics-demo",
        "v2",
    ]
    v2_id = next(
        v["pipeline_version_id"] for v in listed["pipeline_versions"] if v["display_name"] == "v2"
    )
    await page.goto(page.url.split("#")[0] + "#/kfp/pipelines")
    await expect(page.locator('tr[data-name="metrics-demo"]')).to_be_visible()
    await expect(page.locator('tr[data-name="seed-workflow"]')).to_be_visible()
    await page.screenshot(path=str(SHOTS / "pipelines.png"))

    run_ids = []
    for lr in ("0.2", "0.4"):
        await page.goto(page.url.split("#")[0] + "#/kfp/pipelines")
        await page.get_by_role("link", name="Create run of metrics-demo").click()
        await page.wait_for_url("**/#/kfp/runs/+new?pipeline=*")
        await page.get_by_label("Version", exact=True).select_option(label="v2")
        await page.get_by_label("Run name", exact=True).fill(f"metrics-lr-{lr}")
        await page.get_by_label("Experiment", exact=True).select_option(label="dash-kfp-exp")
        await page.get_by_label("lr", exact=True).fill(lr)
        if lr == "0.2":
            await page.screenshot(path=str(SHOTS / "runs-new.png"))
            # A value that is not the parameter's type is refused before anything is sent.
            await page.get_by_label("lr", exact=True).fill("fast")
            await page.click("#run-submit")
            await expect(page.locator(".form-errors .error-message")).to_have_text(
                'parameter lr: "fast" is not double'
            )
            await page.get_by_label("lr", exact=True).fill(lr)
        await page.click("#run-submit")
        await page.wait_for_url(RUN_URL)
        run_ids.append(page.url.rsplit("/", 1)[1])
        await finished(page, expect, api, 90000)
    # The last run's metrics: scalars, the confusion matrix and the ROC curve.
    metrics = page.get_by_role("region", name="Metrics")
    await expect(metrics.locator("table.grid")).to_contain_text("accuracy")
    await expect(metrics.locator("table.grid")).to_contain_text("0.6")
    await expect(page.get_by_role("table", name="confusion matrix")).to_contain_text("dog")
    await expect(page.get_by_role("img", name="ROC curve").locator("circle")).to_have_count(4)
    # The report artifact: previewed as text, downloadable.
    await page.locator('g.node[data-node="train"]').click()
    await page.get_by_role("button", name="Preview report").click()
    await expect(page.get_by_label("report preview")).to_have_text("report: lr=0.4 accuracy=0.6\n")
    link = page.get_by_role("link", name="Download report")
    async with page.expect_download() as download:
        await link.click()
    assert (await download.value).suggested_filename == "report"
    got = await api.get(str(await link.get_attribute("href")))
    assert got.status_code == 200 and got.text == "report: lr=0.4 accuracy=0.6\n", got.text
    await expect(page.locator("pre.log")).to_contain_text("training with lr=0.4")
    await metrics.scroll_into_view_if_needed()
    await page.screenshot(path=str(SHOTS / "runs-metrics.png"))
    # Clone run: the form comes back filled from this run.
    await page.get_by_role("link", name="Clone run").click()
    await page.wait_for_url("**/#/kfp/runs/+new?clone=*")
    await expect(page.get_by_label("Run name", exact=True)).to_have_value("Clone of metrics-lr-0.4")
    await expect(page.get_by_label("lr", exact=True)).to_have_value("0.4")
    for label, chosen in (("Version", "v2"), ("Experiment", "dash-kfp-exp")):
        picked = page.get_by_label(label, exact=True).locator("option:checked")
        await expect(picked).to_have_text(chosen)
    exp = await by_name(api, "/experiments", "experiments", "dash-kfp-exp")
    for run_id, value in zip(run_ids, (0.2, 0.4), strict=True):
        run = await kfp_get(api, f"/runs/{run_id}")
        assert run["state"] == "SUCCEEDED"
        assert run["experiment_id"] == exp["experiment_id"]
        assert run["runtime_config"]["parameters"] == {"lr": value}
        assert run["pipeline_version_reference"]["pipeline_version_id"] == v2_id
    return run_ids


async def compare_and_archive(
    page: Any, expect: Any, api: httpx.AsyncClient, run_ids: list[str]
) -> None:
    await page.goto(page.url.split("#")[0] + "#/kfp/runs")
    await page.get_by_label("Filter runs").fill("lr-0.4")
    await expect(page.locator("table.grid tbody tr")).to_have_count(1)
    await page.get_by_label("Filter runs").fill("")
    for name in ("metrics-lr-0.2", "metrics-lr-0.4"):
        await page.get_by_label(f"Select {name}", exact=True).check()
    row = page.locator('tr[data-name="metrics-lr-0.2"]')
    await expect(row.get_by_role("link", name="metrics-demo")).to_be_visible()
    await expect(row).to_contain_text("dash-kfp-exp")
    await page.screenshot(path=str(SHOTS / "runs.png"))
    await page.click("#compare-runs")
    await page.wait_for_url("**/#/kfp/compare/*")
    params = page.get_by_role("region", name="parameters compared")
    await expect(params.locator('tr[data-name="lr"]')).to_contain_text("0.2")
    await expect(params.locator('tr[data-name="lr"]')).to_contain_text("0.4")
    metrics = page.get_by_role("region", name="metrics compared")
    await expect(metrics.locator('tr[data-name="train/accuracy"]')).to_contain_text("0.8")
    await expect(metrics.locator('tr[data-name="train/accuracy"]')).to_contain_text("0.6")
    roc = page.get_by_role("img", name="ROC curve")
    await expect(roc.locator("g.series")).to_have_count(2)
    await expect(roc).to_contain_text("metrics-lr-0.2 · train/quality")
    await page.screenshot(path=str(SHOTS / "runs-compare.png"), full_page=True)

    # Archive the seed run, restore it, then delete it.
    await page.goto(page.url.split("#")[0] + "#/kfp/runs")
    seed_row = page.locator('tr[data-name="seed-run"]')
    seed = next(r for r in (await kfp_get(api, "/runs"))["runs"] if r["display_name"] == "seed-run")
    await page.get_by_label("Select seed-run", exact=True).check()
    await page.get_by_role("button", name="Archive", exact=True).click()
    await expect(seed_row).to_have_count(0)
    assert (await kfp_get(api, f"/runs/{seed['run_id']}"))["storage_state"] == "ARCHIVED"
    await page.get_by_role("button", name="Archived", exact=True).click()
    await page.get_by_label("Select seed-run", exact=True).check()
    await page.get_by_role("button", name="Restore", exact=True).click()
    await expect(seed_row).to_have_count(0)
    assert (await kfp_get(api, f"/runs/{seed['run_id']}"))["storage_state"] == "AVAILABLE"
    await page.get_by_role("button", name="Active", exact=True).click()
    await page.get_by_label("Select seed-run", exact=True).check()
    await page.get_by_role("button", name="Delete", exact=True).click()
    await expect(seed_row).to_have_count(0)
    gone = await api.get(f"{KFP}/runs/{seed['run_id']}")
    assert gone.status_code == 404, gone.text


async def recurring_run(page: Any, expect: Any, api: httpx.AsyncClient) -> None:
    await page.goto(page.url.split("#")[0] + "#/kfp/pipelines")
    await page.get_by_role("link", name="Create run of seed-workflow").click()
    await page.wait_for_url("**/#/kfp/runs/+new?pipeline=*")
    await page.get_by_label("Run name", exact=True).fill("seed-every-5s")
    await page.get_by_label("Recurring", exact=True).check()
    # A bad cron schedule: the API's message, with the field, shown in place.
    await page.get_by_label("Cron", exact=True).check()
    await page.get_by_label("Cron expression", exact=True).fill("every day")
    await page.click("#run-submit")
    await expect(page.locator(".form-errors .error-message")).to_contain_text(
        "trigger.cron_schedule.cron"
    )
    await page.get_by_label("Periodic", exact=True).check()
    await page.get_by_label("Run every", exact=True).fill("5")
    await page.get_by_label("Unit", exact=True).select_option("seconds")
    await page.get_by_label("Maximum concurrent runs", exact=True).fill("1")
    await page.click("#run-submit")
    await page.wait_for_url("**/#/kfp/recurring")
    row = page.locator('tr[data-name="seed-every-5s"]')
    await expect(row).to_contain_text("every 5s")
    await expect(row.locator(".badge")).to_have_text("ENABLED")
    rec = await by_name(api, "/recurringruns", "recurringRuns", "seed-every-5s")
    assert rec["trigger"] == {"periodic_schedule": {"interval_second": "5"}}
    assert rec["max_concurrency"] == "1" and rec["status"] == "ENABLED"
    # It starts runs on its own; the list counts them.
    await expect(row.locator("td").nth(4)).not_to_have_text("0", timeout=30000)
    await page.screenshot(path=str(SHOTS / "runs-recurring.png"))
    # Its page: the settings and the runs it started; disable it there.
    await row.get_by_role("link", name="seed-every-5s").click()
    await page.wait_for_url(f"**/#/kfp/recurring/{rec['recurring_run_id']}")
    await expect(page.locator("dl.facts")).to_contain_text("every 5s")
    await expect(page.locator("dl.facts")).to_contain_text("seed-workflow")
    await expect(page.locator("table.grid tbody tr").first).to_contain_text("SUCCEEDED")
    await page.get_by_role("button", name="Disable seed-every-5s").click()
    await expect(page.locator("dl.facts .badge")).to_have_text("DISABLED")
    rec = await by_name(api, "/recurringruns", "recurringRuns", "seed-every-5s")
    assert rec["status"] == "DISABLED"
    await page.screenshot(path=str(SHOTS / "runs-recurring-detail.png"))
    await page.get_by_role("link", name="← All recurring runs").click()
    await expect(row.locator(".badge")).to_have_text("DISABLED")
    started = [
        r
        for r in (await kfp_get(api, "/runs"))["runs"]
        if r.get("recurring_run_id") == rec["recurring_run_id"]
    ]
    assert started, "the recurring run started no run"
    await row.get_by_role("button", name="Delete seed-every-5s").click()
    await expect(row).to_have_count(0)
    gone = await api.get(f"{KFP}/recurringruns/{rec['recurring_run_id']}")
    assert gone.status_code == 404, gone.text


async def terminate_a_run(page: Any, expect: Any, api: httpx.AsyncClient, tmp: Path) -> None:
    """A long step, terminated from its run's page: the run ends CANCELED."""
    package = tmp / "napper.yaml"
    compiler.Compiler().compile(napper, str(package))
    made = await api.post(
        f"{KFP}/pipelines/upload",
        params={"namespace": NS, "display_name": "napper"},
        files={"uploadfile": ("napper.yaml", package.read_bytes())},
    )
    assert made.status_code == 200, made.text
    started = await api.post(
        f"{KFP}/runs",
        json={
            "display_name": "long-nap",
            "namespace": NS,
            "pipeline_version_reference": {"pipeline_id": made.json()["pipeline_id"]},
            "runtime_config": {"parameters": {"seconds": 120}},
        },
    )
    assert started.status_code == 200, started.text
    run_id = started.json()["run_id"]
    # The runs list follows its state; so does the run's page.
    await page.goto(page.url.split("#")[0] + "#/kfp/runs")
    row = page.locator('tr[data-name="long-nap"]')
    await expect(row.locator(".badge")).to_have_text("RUNNING", timeout=30000)
    await row.get_by_role("link", name="long-nap").click()
    badge = page.locator(".summary .badge").first
    await expect(badge).to_have_text("RUNNING")
    await expect(page.locator(".summary")).to_contain_text("Pipeline napper")
    await page.get_by_role("button", name="Terminate").click()
    await expect(badge).to_have_text("CANCELED", timeout=30000)
    assert (await kfp_get(api, f"/runs/{run_id}"))["state"] == "CANCELED"
    await page.go_back()
    await expect(row.locator(".badge")).to_have_text("CANCELED")


async def artifacts_page(page: Any, expect: Any) -> None:
    """The namespace's KFP artifacts, with their metadata; a download through the signed URL."""
    await page.goto(page.url.split("#")[0] + "#/kfp/artifacts")
    grid = page.locator("table.grid")
    await expect(grid).to_contain_text("accuracy=0.6")
    await expect(grid).to_contain_text("system.ClassificationMetrics")
    await page.screenshot(path=str(SHOTS / "runs-artifacts.png"))
    newest_report = page.get_by_role("button", name=re.compile(r"^Download report ")).first
    async with page.expect_download() as download:
        await newest_report.click()
    saved = await (await download.value).path()
    got = await asyncio.to_thread(Path(saved).read_text)
    assert got == "report: lr=0.4 accuracy=0.6\n"
    await expect(page.get_by_role("heading", name="Artifacts")).to_be_visible()
