"""Model servers side by side: shipyard's against KServe's and MLServer's on one model.

One scikit-learn LogisticRegression (iris), served by

- shipyard: ``python -m services.serving.modelserver`` (at concurrency 16 and 64 a second
  copy with the batcher, ``--max-batch-size 32 --max-latency-ms 2``, is measured too, and
  shipyard's figure is the better of the two: "batching on where it helps");
- KServe 0.21: ``kserve.ModelServer`` with a ``kserve.Model`` that loads the joblib file and
  predicts as KServe's sklearnserver does (``get_predict_input`` / ``get_predict_response``),
  one worker, gRPC off;
- MLServer 1.7.1 with mlserver-sklearn, in-process inference (``parallel_workers: 0``: its
  parallel workers crash on start on this machine).

The peers cannot sit beside our pins, so each gets its own venv, made here on first use under
``$XDG_CACHE_HOME/shipyard/bench-venvs`` (``~/.cache`` by default) from the package registry.
Every server is checked to answer the model's own predictions before it is measured.

Requests: V2 REST infer, (a) JSON with one FP32 row, at concurrency 1, 16 and 64, and (b) the
binary tensor extension with 64 rows (``Inference-Header-Content-Length``) at the same three
concurrencies, for the servers that accept it (a server that answers it wrongly is reported and left
out). Load comes from wrk (one thread); the servers' runs are interleaved, ``--rounds`` times,
and each figure is the median of its rounds. The verdict: shipyard at least TARGET (2.5x) the
faster peer at every point.

    .venv/bin/python bench/bench_serving_peers.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from loadgen import run_wrk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shipyard.up import free_port  # noqa: E402

log = logging.getLogger("bench")
TARGET = 2.5
NAME = "iris"
BATCHER = ("--max-batch-size", "32", "--max-latency-ms", "2")
PEERS = {
    "kserve": ["kserve==0.21.0", "scikit-learn", "joblib"],
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1"],
}
KSERVE_SERVER = """
import sys
import joblib
import kserve
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):  # the sklearnserver recipe, V2 input and output
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path

    def load(self):
        self._model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        instances = get_predict_input(payload)
        return get_predict_response(payload, self._model.predict(instances), self.name)


model = SKLearnModel(sys.argv[1], sys.argv[2])
model.load()
kserve.ModelServer(http_port=int(sys.argv[3]), enable_grpc=False, workers=1,
                   enable_latency_logging=False).start([model])
"""


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/models/{NAME}/infer"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def peer_python(name: str) -> Path:
    """The peer's venv interpreter, making the venv on first use."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "shipyard" / "bench-venvs" / name
    stamp = venv / ".installed"
    wanted = " ".join(PEERS[name])
    if not stamp.exists() or stamp.read_text() != wanted:
        log.info("making %s's venv in %s (%s) ...", name, venv, wanted)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PEERS[name]]
        subprocess.run(pip, check=True, stdout=subprocess.DEVNULL)
        stamp.write_text(wanted)
    return venv / "bin" / "python"


def train(directory: Path) -> tuple[np.ndarray, object]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    joblib.dump(model, directory / "model.joblib")
    return x.astype(np.float32), model


def launch(name: str, argv: list[str], port: int, cwd: Path, log_dir: Path) -> Server:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = (log_dir / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: see {log_dir / name}.log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}/ready").status_code == 200:
                return Server(name, proc, port)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{name} never became ready: see {log_dir / name}.log")


def start_all(model_dir: Path, tmp: Path) -> list[Server]:
    servers = []
    port = free_port()
    shipyard = [sys.executable, "-m", "services.serving.modelserver", "--model-name", NAME]
    shipyard += ["--model-dir", str(model_dir), "--model-format", "sklearn", "--protocol", "v2"]
    shipyard += ["--host", "127.0.0.1", "--port"]
    servers.append(launch("shipyard", [*shipyard, str(port)], port, ROOT, tmp))
    port = free_port()
    servers.append(launch("shipyard+batcher", [*shipyard, str(port), *BATCHER], port, ROOT, tmp))
    script = tmp / "kserve_server.py"
    script.write_text(KSERVE_SERVER)
    port = free_port()
    argv = [str(peer_python("kserve")), str(script), NAME, str(model_dir / "model.joblib")]
    servers.append(launch("kserve", [*argv, str(port)], port, tmp, tmp))
    ml_dir = tmp / "mlserver"
    (ml_dir / NAME).mkdir(parents=True)
    port, grpc, metrics = free_port(), free_port(), free_port()
    settings: dict[str, object] = {"http_port": port, "grpc_port": grpc, "metrics_port": metrics}
    settings |= {"parallel_workers": 0, "host": "127.0.0.1"}
    (ml_dir / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_dir / "model.joblib")},
    }
    (ml_dir / NAME / "model-settings.json").write_text(json.dumps(model_settings))
    mlserver = peer_python("mlserver").parent / "mlserver"
    servers.append(launch("mlserver", [str(mlserver), "start", str(ml_dir)], port, ml_dir, tmp))
    return servers


def json_body(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    doc = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    return json.dumps(doc).encode(), {"Content-Type": "application/json"}


def binary_body(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = rows.astype("<f4").tobytes()
    doc = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    header = json.dumps(doc).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + raw, headers


def predictions(response: httpx.Response) -> list[int]:
    """The first output's values, from a JSON or a binary-extension answer."""
    length = response.headers.get("inference-header-content-length")
    if length is None:
        return [int(v) for v in response.json()["outputs"][0]["data"]]
    header = json.loads(response.content[: int(length)])
    out = header["outputs"][0]
    raw = response.content[int(length) :][: out["parameters"]["binary_data_size"]]
    fmt = {"INT64": "q", "INT32": "i", "FP64": "d", "FP32": "f"}[out["datatype"]]
    return [int(v) for v in struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw)]


def answers_right(server: Server, body: bytes, headers: dict[str, str], want: list[int]) -> str:
    """'' when the server answers the model's predictions, else what went wrong."""
    try:
        r = httpx.post(server.url(), content=body, headers=headers, timeout=10)
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text.strip().splitlines()[-1][:160]}"
        got = predictions(r)
    except (httpx.HTTPError, KeyError, ValueError, struct.error) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "" if got == want else f"predicted {got[:8]}..., the model says {want[:8]}..."


def lua(tmp: Path, label: str, body: bytes, headers: dict[str, str]) -> Path:
    data = tmp / f"{label}.body"
    data.write_bytes(body)
    lines = ['wrk.method = "POST"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    lines += [f'local f = io.open("{data}", "rb")', "wrk.body = f:read('*a')", "f:close()"]
    script = tmp / f"{label}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def compare(
    label: str,
    servers: list[Server],
    script: Path,
    levels: list[int],
    seconds: float,
    rounds: int,
) -> bool:
    """Median req/s per server and level, interleaved; True when every level passes."""
    ok = True
    for conc in levels:
        runs: dict[str, list[float]] = {s.name: [] for s in servers}
        for _ in range(rounds):
            for s in servers:
                # A peer slower than 10 s per request under load is an error, not a figure.
                runs[s.name].append(run_wrk(s.url(), seconds, conc, script=script, timeout=10).rps)
        rps = {name: statistics.median(values) for name, values in runs.items()}
        ours = max(v for k, v in rps.items() if k.startswith("shipyard"))
        peers = {k: v for k, v in rps.items() if not k.startswith("shipyard")}
        best_peer = max(peers, key=lambda k: peers[k])
        ratio = ours / peers[best_peer]
        ok = ok and ratio >= TARGET
        cells = ", ".join(f"{k} {v:,.0f}" for k, v in rps.items())
        log.info(
            "%s c=%d: %s req/s -> shipyard/%s %.2fx (target %.1fx) %s",
            label,
            conc,
            cells,
            best_peer,
            ratio,
            TARGET,
            "PASS" if ratio >= TARGET else "FAIL",
        )
    return ok


def measure_all(
    servers: list[Server],
    tmp: Path,
    x: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    seconds: float,
    rounds: int,
) -> bool:
    ok = True
    cases = (
        ("V2 JSON, 1 row", json_body(x[:1]), x[:1], [1, 16, 64]),
        ("V2 binary, 64 rows", binary_body(x[:64]), x[:64], [1, 16, 64]),
    )
    for label, (body, headers), rows, levels in cases:
        want = [int(v) for v in predict(rows)]
        able = []
        for s in servers:
            problem = answers_right(s, body, headers, want)
            if problem:
                log.info("%s: %s left out (%s)", label, s.name, problem)
            else:
                able.append(s)
        if not any(s.name.startswith("shipyard") for s in able):
            log.info("%s: shipyard does not answer it -> FAIL", label)
            ok = False
            continue
        if len(able) == sum(s.name.startswith("shipyard") for s in able):
            log.info("%s: no peer answers it; nothing to compare", label)
            continue
        script = lua(tmp, label.replace(" ", "_").replace(",", ""), body, headers)
        for s in able:
            run_wrk(s.url(), 1, 4, script=script)  # warm
        ok = compare(label, able, script, levels, seconds, rounds) and ok
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not shutil.which("wrk"):
        log.error("wrk is needed (make loadgen): a Python client would measure itself")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as name:
        tmp = Path(name)
        model_dir = tmp / "model"
        model_dir.mkdir()
        x, model = train(model_dir)
        servers: list[Server] = []
        try:
            servers = start_all(model_dir, tmp)
            ok = measure_all(servers, tmp, x, model.predict, args.seconds, args.rounds)  # type: ignore[attr-defined]
        finally:
            for s in servers:
                s.stop()
    log.info("model servers against KServe and MLServer: %s", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
