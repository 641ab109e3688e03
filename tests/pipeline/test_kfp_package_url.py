"""KFP v2beta1's pipeline version by URL (``package_url.pipeline_url``), against the real
pipeline service: the package is served by a loopback HTTP server in the test, so the
service's allow-list (``artifact_download_allowed_hosts``) must name it before it is fetched."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.fetch import AllowedHosts
from services.pipeline import kfp_api
from tests.pipeline.components import napper
from tests.pipeline.conftest import PipelineService, compile_to, unique

FIELD = "pipeline_version.package_url.pipeline_url"


class Files:
    """A loopback HTTP server answering ``files`` (404 otherwise); counts its GETs."""

    def __init__(self, files: dict[str, bytes]) -> None:
        owner = self
        self.gets = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.gets += 1
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def package(tmp_path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(compile_to(napper, tmp_path / "napper.yaml")).read_text())


@pytest.fixture
def files(package: dict[str, Any]) -> Iterator[Files]:
    served = Files(
        {
            "/napper.yaml": yaml.safe_dump(package).encode(),
            "/napper.json": json.dumps(package).encode(),
            "/notes.yaml": b"kind: ConfigMap\ndata: {a: b}\n",
        }
    )
    yield served
    served.server.shutdown()
    served.server.server_close()


def by_url(name: str, url: str) -> dict[str, Any]:
    return {
        "pipeline": {"display_name": name},
        "pipeline_version": {"display_name": name, "package_url": {"pipeline_url": url}},
    }


async def test_create_pipeline_and_version_by_url(
    pipeline: PipelineService,
    namespace: str,
    files: Files,
    package: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = pipeline.app.state.ctx.artifacts
    monkeypatch.setattr(repo, "allowed_hosts", AllowedHosts.parse(files.base.split("//")[1]))
    name = unique("by-url")
    async with pipeline.client(namespace) as c:
        r = await c.post(
            "/apis/v2beta1/pipelines/create", json=by_url(name, files.base + "/napper.yaml")
        )
        assert r.status_code == 200, r.text
        pipeline_id = r.json()["pipeline_id"]
        assert r.json()["display_name"] == name
        # A second version, from the same package as JSON, through CreatePipelineVersion.
        r = await c.post(
            f"/apis/v2beta1/pipelines/{pipeline_id}/versions",
            json={
                "display_name": "v2",
                "package_url": {"pipeline_url": files.base + "/napper.json"},
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["display_name"] == "v2"
        listed = (await c.get(f"/apis/v2beta1/pipelines/{pipeline_id}/versions")).json()
    specs = {v["display_name"]: v["pipeline_spec"] for v in listed["pipeline_versions"]}
    assert specs == {name: package, "v2": package}
    assert files.gets == 2


async def test_package_url_errors_name_the_field(
    pipeline: PipelineService,
    namespace: str,
    files: Files,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with pipeline.client(namespace) as c:
        # Loopback is the platform's own network: refused before any connection.
        r = await c.post(
            "/apis/v2beta1/pipelines/create",
            json=by_url(unique("private"), files.base + "/napper.yaml"),
        )
        assert r.status_code == 403, r.text
        message = r.json()["message"]
        assert "loopback" in message and "SHIPYARD_ARTIFACT_DOWNLOAD_ALLOWED_HOSTS" in message
        assert f"{FIELD}: address refused" in message
        assert files.gets == 0

        r = await c.post(
            "/apis/v2beta1/pipelines/create", json=by_url("ftp", "ftp://example.com/p")
        )
        assert r.status_code == 400, r.text
        assert "only http:// and https://" in r.json()["message"]

        repo = pipeline.app.state.ctx.artifacts
        monkeypatch.setattr(repo, "allowed_hosts", AllowedHosts.parse("127.0.0.1"))
        for path, status, why, says in [
            ("/notes.yaml", 400, "not a pipeline package", "neither KFP IR"),
            ("/missing.yaml", 400, "unreachable", "answered 404"),
        ]:
            r = await c.post(
                "/apis/v2beta1/pipelines/create", json=by_url(unique("bad"), files.base + path)
            )
            assert r.status_code == status, r.text
            assert f"{FIELD}: {why}" in r.json()["message"] and says in r.json()["message"]

        monkeypatch.setattr(kfp_api, "MAX_UPLOAD", 100)
        r = await c.post(
            "/apis/v2beta1/pipelines/create",
            json=by_url(unique("big"), files.base + "/napper.yaml"),
        )
        assert r.status_code == 413, r.text
        assert f"{FIELD}: too large" in r.json()["message"]

        # Neither a spec nor a URL.
        r = await c.post(
            "/apis/v2beta1/pipelines/create",
            json={"pipeline": {"display_name": unique("none")}, "pipeline_version": {}},
        )
        assert r.status_code == 400, r.text
        assert "pipeline_version.pipeline_spec: Required value" in r.json()["message"]
        listed = (await c.get("/apis/v2beta1/pipelines")).json()
    assert listed.get("pipelines", []) == []  # no failed create left a pipeline behind
