"""The Jupyter web app's backend API (``/jupyter/api``) through the real gateway.

A whole platform in trusted-header mode (two people: alice owns the profile, bob owns
nothing), its notebook service started with an operator's spawner configuration file. One
notebook lives through the story Kubeflow's notebook UI drives: the form with a new workspace
PVC and a data volume and a PodDefault picked, the list's status going waiting -> ready with a
real Jupyter server, the PodDefault's env inside the server's kernel, stop, start and delete.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.common.runtime import LocalRuntime
from services.notebook.jwa_config import DEFAULT_CONFIG
from tests.conftest import (
    ADMIN_USER,
    RunningSeaweedFS,
    create_profile,
    fresh_database,
    running_trusted_header_platform,
)
from tests.jupyter import execute
from tests.notebook.conftest import eventually
from tests.specs import claim

NS = "jwa-team"
ALICE = {"kubeflow-userid": "alice@example.com"}
BOB = {"kubeflow-userid": "bob@example.com"}
API = "/jupyter/api"
NOTEBOOKS = f"{API}/namespaces/{NS}/notebooks"
PODDEFAULTS = f"/apis/kubeflow.org/v1alpha1/namespaces/{NS}/poddefaults"
CUSTOM_IMAGE = "registry.example.com/team/jupyter:2024.1"


def operator_config() -> dict[str, Any]:
    """The built-in configuration with an operator's changes: an image of their own, a
    smaller CPU default without limits, a read-only pull policy and a toleration group."""
    config = yaml.safe_load(DEFAULT_CONFIG)
    defaults = config["spawnerFormDefaults"]
    defaults["image"] = {"value": CUSTOM_IMAGE, "options": [CUSTOM_IMAGE]}
    defaults["cpu"] = {"readOnly": False, "value": "0.25", "limitFactor": "none"}
    defaults["imagePullPolicy"] = {"readOnly": True, "value": "IfNotPresent"}
    defaults["tolerationGroup"]["options"] = [
        {
            "groupKey": "group-1",
            "displayName": "Group 1",
            "tolerations": [{"key": "key1", "operator": "Equal", "value": "v1"}],
        }
    ]
    return config


@pytest.fixture(scope="module")
def jwa_platform(
    nats_url: str, seaweedfs: RunningSeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    state = tmp_path_factory.mktemp("jwa")
    config_file = state / "spawner_ui_config.yaml"
    config_file.write_text(yaml.safe_dump(operator_config()))
    env = {"SHIPYARD_JWA_SPAWNER_UI_CONFIG": str(config_file)}
    with (
        fresh_database() as db,
        running_trusted_header_platform(
            state / "platform", database_url=db, nats_url=nats_url, s3=seaweedfs.config, env=env
        ) as platform,
    ):
        admin = httpx.Client(
            base_url=platform.gateway_url, headers={"kubeflow-userid": ADMIN_USER}, timeout=20
        )
        create_profile(admin, NS, owner=ALICE["kubeflow-userid"])
        yield platform


async def xsrf(http: httpx.AsyncClient) -> dict[str, str]:
    """The XSRF header for a write: the cookie a GET handed out, sent back as a header."""
    if http.cookies.get("XSRF-TOKEN") is None:
        r = await http.get(f"{API}/config")
        assert r.status_code == 200, r.text
        assert "XSRF-TOKEN" in r.cookies, r.headers
    return {"X-XSRF-TOKEN": http.cookies["XSRF-TOKEN"]}


def form(name: str) -> dict[str, Any]:
    """The body Kubeflow's spawner form posts: a new workspace, a new data volume, shared
    memory, a PodDefault picked by its label, and environment variables."""
    return {
        "name": name,
        "namespace": NS,
        "image": "kubeflownotebookswg/jupyter-scipy:v1.8.0",
        "imagePullPolicy": "IfNotPresent",
        "customImage": "",
        "serverType": "jupyter",
        "cpu": "0.5",
        "cpuLimit": "1",
        "memory": "1Gi",
        "memoryLimit": "",
        "gpus": {"num": "none"},
        "workspace": {
            "mount": "/home/jovyan",
            "newPvc": {
                "metadata": {"name": "{notebook-name}-workspace"},
                "spec": {
                    "resources": {"requests": {"storage": "64Mi"}},
                    "accessModes": ["ReadWriteOnce"],
                },
            },
        },
        "datavols": [
            {
                "mount": "/home/jovyan/data",
                "newPvc": {
                    "metadata": {"name": f"{name}-data"},
                    "spec": {
                        "resources": {"requests": {"storage": "32Mi"}},
                        "accessModes": ["ReadWriteOnce"],
                    },
                },
            }
        ],
        "shm": True,
        "configurations": ["add-greeting"],
        "environment": '{"FROM_FORM": "yes"}',
        "affinityConfig": "",
        "tolerationGroup": "group-1",
    }


def poddefault() -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": "add-greeting"},
        "spec": {
            "selector": {"matchLabels": {"add-greeting": "true"}},
            "desc": "Add a greeting",
            "env": [{"name": "GREETING_FROM_PODDEFAULT", "value": "hello from a PodDefault"}],
            "annotations": {"example.com/greeted": "yes"},
            # A team's shared claim, mounted into every notebook that picks this PodDefault.
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}],
            "volumeMounts": [{"name": "shared", "mountPath": "/home/jovyan/shared"}],
        },
    }


async def phase_of(http: httpx.AsyncClient, name: str) -> dict[str, Any] | None:
    r = await http.get(NOTEBOOKS)
    assert r.status_code == 200, r.text
    rows = [nb for nb in r.json()["notebooks"] if nb["name"] == name]
    return rows[0]["status"] if rows else None


async def wait_phase(http: httpx.AsyncClient, name: str, phase: str) -> dict[str, Any]:
    """Poll the list until the notebook's phase is ``phase``; on a timeout, say the last one."""
    seen: list[Any] = []

    async def reached() -> dict[str, Any] | None:
        status = await phase_of(http, name)
        seen.append(status)
        return status if status and status["phase"] == phase else None

    try:
        return await eventually(reached, within=120, what=f"{name} {phase}", every=0.2)  # type: ignore[no-any-return]
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {seen[-1] if seen else None}") from None


async def check_created(alice: httpx.AsyncClient, name: str) -> None:
    """The Notebook and its claims the form made, as the Kubernetes-style API has them."""
    nb = (await alice.get(f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks/{name}")).json()
    container = nb["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "0.5", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1.2Gi"},
    }
    assert {"name": "FROM_FORM", "value": "yes"} in container["env"]
    assert nb["metadata"]["labels"]["add-greeting"] == "true"
    creator = nb["metadata"]["annotations"]["notebooks.kubeflow.org/creator"]
    assert creator == "alice@example.com"
    assert nb["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "key1", "operator": "Equal", "value": "v1"}
    ]
    assert {(m["name"], m["mountPath"]) for m in container["volumeMounts"]} == {
        ("dshm", "/dev/shm"),
        (f"{name}-workspace", "/home/jovyan"),
        (f"{name}-data", "/home/jovyan/data"),
    }
    pvcs = (await alice.get(f"{API}/namespaces/{NS}/pvcs")).json()["pvcs"]
    assert sorted(pvcs, key=lambda p: p["name"]) == [
        {"name": f"{name}-data", "size": "32Mi", "mode": "ReadWriteOnce"},
        {"name": f"{name}-workspace", "size": "64Mi", "mode": "ReadWriteOnce"},
        {"name": "shared", "size": "8Mi", "mode": "ReadWriteOnce"},
    ]
    row = next(n for n in (await alice.get(NOTEBOOKS)).json()["notebooks"] if n["name"] == name)
    assert (row["cpu"], row["memory"], row["gpus"]["count"]) == ("0.5", "1Gi", 0)
    assert row["shortImage"] == "jupyter-scipy:v1.8.0" and row["serverType"] == "jupyter"


async def check_pod_and_events(alice: httpx.AsyncClient, name: str) -> None:
    """Its pod (the server's workload, with the PodDefault's annotations) and events."""
    pod = (await alice.get(f"{NOTEBOOKS}/{name}/pod")).json()["pod"]
    assert pod["metadata"]["name"] == f"{name}-0"
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert pod["metadata"]["annotations"]["example.com/greeted"] == "yes"
    assert (
        "poddefault.admission.kubeflow.org/poddefault-add-greeting"
        in pod["metadata"]["annotations"]
    )
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["GREETING_FROM_PODDEFAULT"] == "hello from a PodDefault"
    events = (await alice.get(f"{NOTEBOOKS}/{name}/events")).json()["events"]
    assert [e["reason"] for e in events][:1] == ["Created"]
    assert events[-1]["reason"] == "Ready" and events[-1]["involvedObject"]["name"] == name
    one = (await alice.get(f"{NOTEBOOKS}/{name}")).json()
    assert one["notebook"]["processed_status"]["phase"] == "ready"


async def check_inside_server(platform: Any, alice: httpx.AsyncClient, name: str) -> None:
    """Inside the running server: the PodDefault's env and claim, the form's env and data
    volume."""
    route = f"{platform.gateway_url}/notebook/{NS}/{name}"
    kernel = await alice.post(f"{route}/api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    ws = route.replace("http", "ws", 1) + f"/api/kernels/{kernel.json()['id']}/channels"
    code = (
        "import os, pathlib\n"
        "pathlib.Path('/home/jovyan/data/x.txt').write_text('data')\n"
        "pathlib.Path('/home/jovyan/shared/y.txt').write_text('shared')\n"
        "print(os.environ['GREETING_FROM_PODDEFAULT'], '|', os.environ['FROM_FORM'], '|',"
        " pathlib.Path('/home/jovyan/data/x.txt').read_text(), '|',"
        " pathlib.Path('/home/jovyan/shared/y.txt').read_text())"
    )
    out = await execute(ws, code, headers=ALICE, timeout=60)
    assert out == "hello from a PodDefault | yes | data | shared\n"
    # The PodDefault's claim is the namespace's "shared" volume, as the runtime has it.
    runtime = LocalRuntime(platform.state_dir)
    volume = await runtime.resolve_volume(NS, "shared")
    assert (volume / "y.txt").read_text() == "shared"


async def test_notebook_from_the_spawner_form(jwa_platform: Any) -> None:
    gw = jwa_platform.gateway_url
    name = "lab"
    async with (
        httpx.AsyncClient(base_url=gw, headers=ALICE, timeout=30) as alice,
        httpx.AsyncClient(base_url=gw, headers=BOB, timeout=30) as bob,
    ):
        # A PodDefault, served by the notebook service as a kind, listed for the form.
        shared = await alice.post(
            f"/api/v1/namespaces/{NS}/persistentvolumeclaims", json=claim("shared", "8Mi")
        )
        assert shared.status_code == 201, shared.text
        r = await alice.post(PODDEFAULTS, json=poddefault())
        assert r.status_code == 201, r.text
        r = await alice.get(f"{API}/namespaces/{NS}/poddefaults")
        assert r.status_code == 200, r.text
        listed = r.json()
        assert listed["success"] is True and listed["user"] == "alice@example.com"
        assert [(p["label"], p["desc"]) for p in listed["poddefaults"]] == [
            ("add-greeting", "Add a greeting")
        ]

        # A write without the XSRF header is refused, and creates nothing.
        headers = await xsrf(alice)
        refused = await alice.post(NOTEBOOKS, json=form(name))
        assert refused.status_code == 403, refused.text
        assert refused.json()["success"] is False
        assert "X-XSRF-TOKEN" in refused.json()["log"]
        wrong = await alice.post(NOTEBOOKS, json=form(name), headers={"X-XSRF-TOKEN": "forged"})
        assert wrong.status_code == 403 and "doesn't match" in wrong.json()["log"]
        assert (await alice.get(NOTEBOOKS)).json()["notebooks"] == []

        created = await alice.post(NOTEBOOKS, json=form(name), headers=headers)
        assert created.status_code == 200, created.text
        assert created.json() == {
            "status": 200,
            "success": True,
            "user": "alice@example.com",
            "message": "Notebook created successfully.",
        }
        # The list shows it waiting at once (no server yet), then ready.
        first = await phase_of(alice, name)
        assert first is not None and first["phase"] == "waiting", first
        ready = await wait_phase(alice, name, "ready")
        assert ready["message"] == "Running"

        await check_created(alice, name)
        await check_pod_and_events(alice, name)
        await check_inside_server(jwa_platform, alice, name)

        # Another person sees and changes none of it.
        denied = await bob.get(NOTEBOOKS)
        assert denied.status_code == 403, denied.text
        bob_headers = await xsrf(bob)
        denied = await bob.patch(f"{NOTEBOOKS}/{name}", json={"stopped": True}, headers=bob_headers)
        assert denied.status_code == 403, denied.text
        assert "bob@example.com" in denied.text

        # Stop: the annotation, the server gone, the phase "stopped"; twice is a conflict.
        r = await alice.patch(f"{NOTEBOOKS}/{name}", json={"stopped": True}, headers=headers)
        assert r.status_code == 200 and r.json()["success"] is True, r.text
        stopped = await wait_phase(alice, name, "stopped")
        assert "No Pods" in stopped["message"]
        nb = (await alice.get(f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks/{name}")).json()
        assert "kubeflow-resource-stopped" in nb["metadata"]["annotations"]
        gone = await alice.get(f"{NOTEBOOKS}/{name}/pod")
        assert gone.status_code == 404 and gone.json()["log"] == "No pod detected."
        again = await alice.patch(f"{NOTEBOOKS}/{name}", json={"stopped": True}, headers=headers)
        assert again.status_code == 409 and "already stopped" in again.json()["log"]

        # Start again: the annotation removed, the server back.
        r = await alice.patch(f"{NOTEBOOKS}/{name}", json={"stopped": False}, headers=headers)
        assert r.status_code == 200, r.text
        await wait_phase(alice, name, "ready")
        nb = (await alice.get(f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks/{name}")).json()
        assert "kubeflow-resource-stopped" not in (nb["metadata"].get("annotations") or {})

        # Delete: gone from the list and the API; the claims stay, as in Kubeflow.
        r = await alice.delete(f"{NOTEBOOKS}/{name}", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["message"] == f"Notebook {name} successfully deleted."
        assert (await alice.get(NOTEBOOKS)).json()["notebooks"] == []
        missing = await alice.get(f"{NOTEBOOKS}/{name}")
        assert missing.status_code == 404 and missing.json()["success"] is False
        assert missing.json()["user"] == "alice@example.com"
        assert missing.json()["log"] == f'notebooks.kubeflow.org "{name}" not found'
        pvcs = (await alice.get(f"{API}/namespaces/{NS}/pvcs")).json()["pvcs"]
        assert {p["name"] for p in pvcs} == {f"{name}-workspace", f"{name}-data", "shared"}


async def test_config_for_anyone_signed_in(jwa_platform: Any) -> None:
    """The operator's configuration, readable by anyone signed in (bob has no profile), with
    the XSRF cookie; no GPU vendor is offered (no node reports GPUs)."""
    async with httpx.AsyncClient(base_url=jwa_platform.gateway_url, headers=BOB) as bob:
        r = await bob.get(f"{API}/config")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["user"] == "bob@example.com"
        config = body["config"]
        assert config["image"] == {"value": CUSTOM_IMAGE, "options": [CUSTOM_IMAGE]}
        assert config["cpu"]["value"] == "0.25"
        assert config["workspaceVolume"]["value"]["mount"] == "/home/jovyan"
        assert [v["limitsKey"] for v in config["gpus"]["value"]["vendors"]] == [
            "nvidia.com/gpu",
            "amd.com/gpu",
        ]
        cookie = r.headers["set-cookie"]
        assert "XSRF-TOKEN=" in cookie and "Path=/;" in cookie and "SameSite=strict" in cookie
        gpus = (await bob.get(f"{API}/gpus")).json()
        assert gpus["vendors"] == [] and gpus["success"] is True
        classes = (await bob.get(f"{API}/storageclasses")).json()
        assert classes["storageClasses"] == [] and classes["success"] is True
        default = (await bob.get(f"{API}/storageclasses/default")).json()
        assert default["defaultStorageClass"] == "" and default["user"] == "bob@example.com"


BAD_FORMS = [
    ({"image": "x"}, "name", "Required value"),
    ({"name": "Bad_Name"}, "name", "RFC 1123"),
    ({"name": "nb", "cpu": "lots"}, "cpu", "'lots' is not a quantity"),
    ({"name": "nb", "memory": "1Gi", "memoryLimit": "512Mi"}, "memoryLimit", "less than"),
    ({"name": "nb", "imagePullPolicy": "Always"}, "imagePullPolicy", "read-only"),
    ({"name": "nb", "tolerationGroup": "nope"}, "tolerationGroup", "not one of"),
    ({"name": "nb", "gpus": {"num": 1, "vendor": "x.com/gpu"}}, "gpus.vendor", "vendors"),
    (
        {"name": "nb", "datavols": [{"mount": "/d", "existingSource": {"nfs": {}}}]},
        "datavols[0].existingSource",
        "persistentVolumeClaim",
    ),
    ({"name": "nb", "workspace": {"newPvc": {}}}, "workspace.mount", "mount path"),
]


def with_new_claim(name: str, claim: str) -> dict[str, Any]:
    """A form whose workspace is a new claim called ``claim``."""
    spec = {"resources": {"requests": {"storage": "8Mi"}}, "accessModes": ["ReadWriteOnce"]}
    return {
        "name": name,
        "workspace": {"mount": "/w", "newPvc": {"metadata": {"name": claim}, "spec": spec}},
    }


async def test_bad_forms_and_defaults(jwa_platform: Any) -> None:
    gw = jwa_platform.gateway_url
    async with httpx.AsyncClient(base_url=gw, headers=ALICE, timeout=30) as alice:
        # A PodDefault is validated as a Notebook's pod template is: no hostPath.
        hostpath = poddefault()
        hostpath["metadata"]["name"] = "host"
        hostpath["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": "/etc"}}]
        r = await alice.post(PODDEFAULTS, json=hostpath)
        assert r.status_code == 422, r.text
        assert [c["field"] for c in r.json()["details"]["causes"]] == ["spec.volumes[0].hostPath"]

        headers = await xsrf(alice)
        post = lambda b: alice.post(NOTEBOOKS, json=b, headers=headers)  # noqa: E731
        for form_body, field, words in BAD_FORMS:
            r = await post(form_body)
            assert r.status_code == 400, (form_body, r.text)
            answer = r.json()
            assert answer["success"] is False and answer["status"] == 400, answer
            assert answer["field"] == field and answer["log"].startswith(f"{field}: "), answer
            assert words in answer["log"], answer
            assert answer["user"] == "alice@example.com"

        # Defaults fill what the form leaves out: the operator's image and CPU, no CPU limit
        # (limitFactor none); nothing is left behind by the refused forms.
        r = await post({"name": "defaults", "workspace": None, "shm": False})
        assert r.status_code == 200, r.text
        nb = (await alice.get(f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks/defaults")).json()
        container = nb["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == CUSTOM_IMAGE
        assert container["resources"] == {
            "requests": {"cpu": "0.25", "memory": "1.0Gi"},
            "limits": {"memory": "1.2Gi"},
        }
        assert container["volumeMounts"] == [] and nb["spec"]["template"]["spec"]["volumes"] == []
        names = [n["name"] for n in (await alice.get(NOTEBOOKS)).json()["notebooks"]]
        assert names == ["defaults"]

        # A claim of that name exists already: 409, and the notebook is not created.
        assert (await post(with_new_claim("clash", "taken"))).status_code == 200
        r = await post(with_new_claim("clash2", "taken"))
        assert r.status_code == 409 and "taken" in r.json()["log"], r.text
        missing = await alice.get(f"{NOTEBOOKS}/clash2")
        assert missing.status_code == 404
        for name in ("defaults", "clash"):
            assert (await alice.delete(f"{NOTEBOOKS}/{name}", headers=headers)).status_code == 200


def test_config_file_is_the_operators(tmp_path: Path) -> None:
    """A configuration file that is no spawner configuration is refused with its path."""
    from services.common.errors import ApiError
    from services.notebook.jwa_config import load_config

    broken = tmp_path / "broken.yaml"
    broken.write_text("images: []\n")
    with pytest.raises(ApiError) as err:
        load_config(str(broken))
    assert err.value.code == 500 and "spawnerFormDefaults" in err.value.message
    assert str(broken) in err.value.message


def test_status_phases_as_kubeflow() -> None:
    """The phases the list cannot reach in the story above, from Notebook objects."""
    from services.notebook.jwa_status import process_status

    long_ago = {"name": "nb", "namespace": NS, "creationTimestamp": "2020-01-01T00:00:00Z"}
    stopping = {
        "metadata": {**long_ago, "annotations": {"kubeflow-resource-stopped": "x"}},
        "status": {"readyReplicas": 1},
    }
    assert process_status(stopping) == {
        "phase": "waiting",
        "message": "Notebook Server is stopping.",
        "state": "",
    }
    deleting = {
        "metadata": {**long_ago, "deletionTimestamp": "2020-01-01T00:01:00Z"},
        "status": {"readyReplicas": 1},
    }
    assert process_status(deleting)["phase"] == "terminating"
    crashing = {
        "metadata": long_ago,
        "status": {
            "readyReplicas": 0,
            "containerState": {"waiting": {"reason": "CrashLoopBackOff", "message": "exit 1"}},
        },
    }
    assert process_status(crashing) == {
        "phase": "warning",
        "message": "CrashLoopBackOff: exit 1",
        "state": "",
    }
    failed = {
        "metadata": long_ago,
        "status": {
            "readyReplicas": 0,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Error", "message": "m"}],
        },
    }
    assert process_status(failed) == {"phase": "warning", "message": "Error: m", "state": ""}
    silent = {"metadata": long_ago, "status": {}}
    assert process_status(silent)["phase"] == "warning"
    assert "Couldn't find any information" in process_status(silent)["message"]


def test_read_only_image_refuses_a_custom_image() -> None:
    """An operator who fixes the image (readOnly) cannot be bypassed with customImage."""
    from services.common.errors import ApiError
    from services.notebook.jwa_config import load_config
    from services.notebook.jwa_form import spawn

    config = load_config()
    config["image"]["readOnly"] = True
    with pytest.raises(ApiError) as err:
        spawn({"name": "nb", "customImage": "evil/image:1"}, NS, "alice@example.com", config)
    assert err.value.code == 400 and err.value.causes[0].field == "customImage"
    made = spawn({"name": "nb"}, NS, "alice@example.com", config)
    assert (
        made.notebook["spec"]["template"]["spec"]["containers"][0]["image"]
        == (config["image"]["value"])
    )


async def test_poddefault_claim_that_appears_later(jwa_platform: Any) -> None:
    """A PodDefault's claim that does not exist yet: the list says why the server cannot
    start (warning), and the server starts as soon as the claim is created."""
    gw = jwa_platform.gateway_url
    late = {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": "late-claim"},
        "spec": {
            "selector": {"matchLabels": {"needs-late": "true"}},
            "volumes": [{"name": "late", "persistentVolumeClaim": {"claimName": "late"}}],
            "volumeMounts": [{"name": "late", "mountPath": "/home/jovyan/late"}],
        },
    }
    async with httpx.AsyncClient(base_url=gw, headers=ALICE, timeout=30) as alice:
        assert (await alice.post(PODDEFAULTS, json=late)).status_code == 201
        headers = await xsrf(alice)
        body = {"name": "later", "workspace": None, "shm": False, "configurations": ["needs-late"]}
        r = await alice.post(NOTEBOOKS, json=body, headers=headers)
        assert r.status_code == 200, r.text
        warning = await wait_phase(alice, "later", "warning")
        assert "PersistentVolumeClaimNotFound" in warning["message"], warning
        r = await alice.post(f"/api/v1/namespaces/{NS}/persistentvolumeclaims", json=claim("late"))
        assert r.status_code == 201, r.text
        await wait_phase(alice, "later", "ready")
        assert (await alice.delete(f"{NOTEBOOKS}/later", headers=headers)).status_code == 200
