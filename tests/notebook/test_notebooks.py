"""Notebook servers end to end: real Jupyter servers behind the real gateway (single-user mode).

One notebook lives through the whole story (its steps depend on each other, so it is one
test): a PVC-backed workspace, Jupyter's REST API and a kernel over the gateway's WebSocket
proxy, a spec change, a crash of the notebook service, stop and start by annotation, and
deletion.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.dataplane import load_or_create_key, notebook_token
from services.common.runtime import LocalRuntime, Phase, WorkloadNotFound, WorkloadStatus
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.notebook.notebooks import running_status
from tests import specs
from tests.browser import CHROMIUM, launch
from tests.conftest import crash_service, start_service_again
from tests.endpoints import assert_endpoint
from tests.jupyter import execute
from tests.notebook.conftest import eventually

NOTEBOOKS = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
PVCS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
MERGE = {"content-type": "application/merge-patch+json"}


def notebook_body(name: str, claim: str, env_value: str = "one") -> dict[str, Any]:
    return specs.notebook(
        name,
        "kubeflownotebookswg/jupyter-scipy:v1.8.0",
        volumes=[{"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}],
        env=[{"name": "GREETING", "value": env_value}],
        resources={"requests": {"cpu": "0.5", "memory": "1Gi"}},
        volumeMounts=[{"name": "workspace", "mountPath": "/home/jovyan"}],
    )


# In the page: a kernel through Jupyter's REST API, then code run over its channels
# WebSocket, both on the page's own origin (the notebook's), as JupyterLab itself does.
RUN_IN_PAGE = """async (prefix) => {
    const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "";
    const made = await fetch(prefix + "/api/kernels", {method: "POST",
        headers: {"Content-Type": "application/json", "X-XSRFToken": xsrf},
        body: JSON.stringify({name: "python3"})});
    if (made.status !== 201) return "kernel: " + made.status;
    const kernel = await made.json();
    const url = location.origin.replace("http", "ws") + prefix + "/api/kernels/" + kernel.id
        + "/channels";
    const ws = new WebSocket(url);
    const msgId = crypto.randomUUID();
    const printed = await new Promise((resolve) => {
        let out = "";
        setTimeout(() => resolve("timeout: " + out), 30000);
        ws.onerror = () => resolve("websocket error");
        ws.onopen = () => ws.send(JSON.stringify({
            header: {msg_id: msgId, username: "t", session: crypto.randomUUID(),
                     msg_type: "execute_request", version: "5.3", date: ""},
            parent_header: {}, metadata: {}, channel: "shell", buffers: [],
            content: {code: "print(6*7)", silent: false, store_history: false,
                      user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
        ws.onmessage = (event) => {
            const msg = JSON.parse(event.data);
            if ((msg.parent_header || {}).msg_id !== msgId) return;
            if (msg.header.msg_type === "stream") out += msg.content.text;
            if (msg.header.msg_type === "status" && msg.content.execution_state === "idle") {
                ws.close();
                resolve(out);
            }
        };
    });
    const gone = await fetch(prefix + "/api/kernels/" + kernel.id,
        {method: "DELETE", headers: {"X-XSRFToken": xsrf}});
    return gone.status === 204 ? printed : "delete: " + gone.status;
}"""


@pytest.mark.timeout(120)
async def lab_starts_in_chromium(url: str, notebook_origin: str, prefix: str) -> None:
    """JupyterLab opened from the gateway's origin runs on the notebook's own origin."""
    if not CHROMIUM.exists():
        return  # the HTML checks above still ran; the browser part needs Debian's chromium
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url, timeout=30000)
            # The gateway sent the browser on (Chromium resolves *.localhost itself).
            assert page.url.startswith(f"{notebook_origin}{prefix}/lab"), page.url
            await page.wait_for_selector("#jp-main-dock-panel", timeout=60000)
            await page.wait_for_selector(".jp-Launcher", timeout=60000)
            assert not errors, errors
            assert await page.evaluate("() => location.origin") == notebook_origin
            # JupyterLab's storage works there (an opaque, sandboxed origin would have none).
            assert await page.evaluate("() => { localStorage.setItem('k', 'v'); return 1; }")
            assert await page.evaluate(RUN_IN_PAGE, prefix) == "42\n"
            # The dashboard's API is another origin's, and not served on this one.
            assert (
                await page.evaluate(
                    "async () => (await fetch('/apis/kubeflow.org/v1/namespaces')).status"
                )
                == 404
            )
        finally:
            await browser.close()


async def test_notebook_lifecycle_through_gateway(platform: Any) -> None:
    runtime = LocalRuntime(platform.state_dir)
    gw = platform.gateway_url
    name, claim = "jup", "jup-workspace"
    route = f"{gw}/notebook/{NS}/{name}"
    async with httpx.AsyncClient(base_url=gw, timeout=20) as http:
        pvc = specs.claim(claim, "64Mi")
        assert (await http.post(PVCS, json=pvc)).status_code == 201
        created = await http.post(NOTEBOOKS, json=notebook_body(name, claim))
        assert created.status_code == 201, created.text

        async def notebook() -> dict[str, Any]:
            return (await http.get(f"{NOTEBOOKS}/{name}")).json()

        async def ready() -> dict[str, Any] | None:
            nb = await notebook()
            return nb if (nb.get("status") or {}).get("readyReplicas") == 1 else None

        async def answering() -> dict[str, Any] | None:
            r = await http.get(f"{route}/api/status")
            return r.json() if r.status_code == 200 else None

        nb = await eventually(ready, what="readyReplicas 1")
        assert nb["status"]["url"] == f"/notebook/{NS}/{name}/"
        assert_endpoint(nb["status"]["endpoint"])
        assert "running" in nb["status"]["containerState"]
        assert nb["status"]["conditions"][0]["type"] == "Ready"
        assert nb["status"]["conditions"][0]["status"] == "True"
        assert "notebooks.kubeflow.org/last-activity" in nb["metadata"]["annotations"]
        server = await eventually(answering, what="Jupyter's /api/status through the gateway")
        assert "started" in server and "kernels" in server

        # JupyterLab, as Kubeflow's notebook images: the root redirects to /lab, and the app
        # starts in a real browser (its shell renders after its JavaScript and REST calls,
        # all through the gateway).
        root = await http.get(f"{route}/", follow_redirects=True)
        assert root.status_code == 200 and root.url.path == f"/notebook/{NS}/{name}/lab"
        assert "<title>JupyterLab</title>" in root.text
        port = httpx.URL(gw).port
        await lab_starts_in_chromium(
            f"{route}/lab",
            f"http://{name}.{NS}.notebooks.localhost:{port}",
            f"/notebook/{NS}/{name}",
        )
        workload = await runtime.status(NS, f"nb-{name}")
        assert workload.image == "kubeflownotebookswg/jupyter-scipy:v1.8.0"
        assert workload.labels["notebook-name"] == name
        assert workload.labels["shipyard.io/service"] == "notebook"

        # The workspace is the claim's volume, mounted at /home/jovyan.
        put = await http.put(
            f"{route}/api/contents/hello.txt",
            json={"type": "file", "format": "text", "content": "hello\n"},
        )
        assert put.status_code == 201, put.text
        volume = await runtime.resolve_volume(NS, claim)
        assert (volume / "hello.txt").read_text() == "hello\n"

        # A kernel, driven over the gateway's WebSocket proxy with the Jupyter protocol.
        kernel = await http.post(f"{route}/api/kernels", json={"name": "python3"})
        assert kernel.status_code == 201, kernel.text
        ws_url = route.replace("http", "ws", 1) + f"/api/kernels/{kernel.json()['id']}/channels"
        assert await execute(ws_url, "print(6*7)") == "42\n"
        env = await execute(
            ws_url, "import os; print(os.environ['NB_PREFIX'], os.getcwd(), os.environ['GREETING'])"
        )
        assert env.split() == [f"/notebook/{NS}/{name}", "/home/jovyan", "one"]

        # A crash of the notebook service: the running server is adopted, not started again.
        await asyncio.to_thread(start_service_again, crash_service(platform, "notebook"))
        await asyncio.sleep(1.0)  # the new controller's first pass
        again = await eventually(ready, what="readyReplicas 1 after the service restart")
        assert again["status"]["endpoint"] == nb["status"]["endpoint"]
        assert (await eventually(answering))["started"] == server["started"]
        kernels = (await http.get(f"{route}/api/kernels")).json()
        assert [k["id"] for k in kernels] == [kernel.json()["id"]]

        # A spec change (generation 2) replaces the server with one built from the new spec.
        patched = await http.patch(
            f"{NOTEBOOKS}/{name}",
            headers=MERGE,
            json={"spec": notebook_body(name, claim, env_value="two")["spec"]},
        )
        assert patched.json()["metadata"]["generation"] == 2

        async def new_server() -> dict[str, Any] | None:
            status = await answering()
            return status if status and status["started"] != server["started"] else None

        await eventually(new_server, what="a new server for generation 2")
        kernel = await http.post(f"{route}/api/kernels", json={"name": "python3"})
        ws_url = route.replace("http", "ws", 1) + f"/api/kernels/{kernel.json()['id']}/channels"
        assert await execute(ws_url, "import os; print(os.environ['GREETING'])") == "two\n"

        # Stop by annotation: no server, no route, readyReplicas 0.
        stop = {"metadata": {"annotations": {"kubeflow-resource-stopped": "now"}}}
        assert (await http.patch(f"{NOTEBOOKS}/{name}", headers=MERGE, json=stop)).is_success

        async def stopped() -> dict[str, Any] | None:
            nb = await notebook()
            conds = (nb.get("status") or {}).get("conditions") or [{}]
            return nb if conds[0].get("reason") == "Stopped" else None

        nb = await eventually(stopped, what="the Stopped condition")
        assert nb["status"]["readyReplicas"] == 0 and "endpoint" not in nb["status"]
        with pytest.raises(WorkloadNotFound):
            await runtime.status(NS, f"nb-{name}")

        async def route_gone() -> bool:
            return (await http.get(f"{route}/api/status")).status_code != 200

        await eventually(route_gone, what="the route to go away")

        # Start again by removing the annotation; the workspace is still there.
        start = {"metadata": {"annotations": {"kubeflow-resource-stopped": None}}}
        assert (await http.patch(f"{NOTEBOOKS}/{name}", headers=MERGE, json=start)).is_success
        await eventually(ready, what="readyReplicas 1 after start")
        await eventually(answering, what="the route after start")
        got = await http.get(f"{route}/api/contents/hello.txt")
        assert got.json()["content"] == "hello\n"

        # Delete: once DELETE answers, the server is gone and the claim is free.
        assert (await http.delete(f"{NOTEBOOKS}/{name}")).status_code == 200
        assert (await http.get(f"{NOTEBOOKS}/{name}")).status_code == 404
        with pytest.raises(WorkloadNotFound):
            await runtime.status(NS, f"nb-{name}")
        gone = await http.delete(f"{PVCS}/{claim}")
        assert gone.status_code == 200, gone.text
        await eventually(route_gone, what="the route to go away after delete")


async def test_create_notebook_invalid_volume_reported(platform: Any) -> None:
    """A spec the runtime cannot run gets a status that says why, and no server."""
    body = notebook_body("broken", "none")
    body["spec"]["template"]["spec"]["volumes"] = [
        {"name": "workspace", "configMap": {"name": "cm"}}
    ]
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=20) as http:
        assert (await http.post(NOTEBOOKS, json=body)).status_code == 201

        async def reported() -> dict[str, Any] | None:
            nb = (await http.get(f"{NOTEBOOKS}/broken")).json()
            waiting = ((nb.get("status") or {}).get("containerState") or {}).get("waiting")
            return waiting if waiting and waiting["reason"] == "InvalidSpec" else None

        waiting = await eventually(reported, within=10, what="InvalidSpec")
        assert "volumes[0]" in waiting["message"]
        assert (await http.delete(f"{NOTEBOOKS}/broken")).status_code == 200


ECHO_SERVER = """
import http.server, os
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (f"path={self.path} auth={self.headers.get('Authorization')} "
                f"prefix={os.environ['NB_PREFIX']}").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Echo).serve_forever()
"""


async def test_custom_command_notebook_behind_gateway(platform: Any) -> None:
    """A container with its own command (a custom image) runs it, with NB_PREFIX and PORT;
    the gateway routes to it with the server's token instead of the caller's Authorization."""
    body = specs.notebook("echo", "example.com/custom:1", command=["python3", "-c", ECHO_SERVER])
    route = f"{platform.gateway_url}/notebook/{NS}/echo"
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=20) as http:
        assert (await http.post(NOTEBOOKS, json=body)).status_code == 201

        async def echoed() -> str | None:
            r = await http.get(f"{route}/lab", headers={"Authorization": "Bearer not-for-it"})
            return r.text if r.status_code == 200 else None

        text = await eventually(echoed, what="the custom server through the gateway")
        # Not the caller's Authorization: the server's own Jupyter token, which the gateway
        # adds (a custom image's Jupyter reads it from JUPYTER_TOKEN, as the default one does).
        key = load_or_create_key(Path(platform.state_dir) / "keys" / "dataplane.key")
        token = notebook_token(key, NS, "echo")
        assert text == f"path=/notebook/{NS}/echo/lab auth=token {token} prefix=/notebook/{NS}/echo"
        assert (await http.delete(f"{NOTEBOOKS}/echo")).status_code == 200

        async def route_gone() -> bool:
            return (await http.get(f"{route}/lab")).status_code != 200

        await eventually(route_gone, what="the route to go away")


def test_a_server_waiting_for_quota_room_says_so() -> None:
    """A notebook whose server waits for room in its namespace's quota shows the runtime's
    reason and message, not "ContainerCreating"; one simply starting still says that."""
    notebook = {"metadata": {"name": "nb", "namespace": NS}}
    message = "exceeded quota: kf-resource-quota, requested: pods=1, used: pods=2, limited: pods=2"
    waiting = WorkloadStatus(
        namespace=NS, name="nb-nb", phase=Phase.PENDING, reason="ExceededQuota", message=message
    )
    status = running_status(notebook, waiting)
    assert status["containerState"] == {"waiting": {"reason": "ExceededQuota", "message": message}}
    (condition,) = status["conditions"]
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        "ExceededQuota",
        message,
    )
    starting = WorkloadStatus(namespace=NS, name="nb-nb", phase=Phase.PENDING)
    assert running_status(notebook, starting)["containerState"] == {
        "waiting": {"reason": "ContainerCreating"}
    }
