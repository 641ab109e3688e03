"""tritonclient.grpc calls made in a child process: ``python -m tests.serving.triton_grpc_calls``.

As tests/automl/grpc_calls.py explains, the tests keep gRPC out of the pytest process: its
threads would be forked along with every platform process a later test starts, and gRPC's
fork handlers can then abort such a child before it execs. Standard input is JSON:
``{"address": "HOST:PORT", "options": [[name, value], ...], "calls": [{"method": a method of
tritonclient.grpc.InferenceServerClient, "args": [...], "headers": {...}}]}``; an ``infer``
call gives ``"inputs": [{"name", "datatype", "data" (nested lists) or "zeros" (a shape)}]``;
``{"method": "sleep", "args": [seconds]}`` paces a series (and has no result);
``"compression": "gzip"`` or ``"deflate"`` compresses an ``infer``'s or a ``stream``'s requests.
``{"method": "stream", "args": [model], "requests": [{"inputs": [...]}, ...]}`` sends the
requests on one ``start_stream`` (ModelStreamInfer) and its reply is the callbacks, in order:
``{"id", "outputs"}`` or ``{"status", "message"}``.
Standard output is one JSON list, per call ``{"reply": ...}`` (a bool, a message as a dict,
or for ``infer`` the outputs as ``{"name", "datatype", "shape", "data"}``) or
``{"status": "StatusCode.NOT_FOUND", "message": str}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any


def run(address: str, calls: list[dict[str, Any]], authority: str | None = None) -> list[Any]:
    """Run ``calls`` against ``address`` (with ``authority`` as the :authority, if given) in a
    child process; the results, in order."""
    options = [["grpc.default_authority", authority]] if authority else []
    done = subprocess.run(
        [sys.executable, "-m", "tests.serving.triton_grpc_calls"],
        input=json.dumps({"address": address, "options": options, "calls": calls}),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: list[Any] = json.loads(done.stdout)
    return results


def call(address: str, method: str, *args: Any, authority: str | None = None, **kw: Any) -> Any:
    """One call (``headers=``, or ``inputs=`` for infer); its result."""
    return run(address, [{"method": method, "args": list(args), **kw}], authority)[0]


def _inputs(grpcclient: Any, specs: list[dict[str, Any]]) -> list[Any]:
    import numpy as np
    from tritonclient.utils import triton_to_np_dtype

    inputs = []
    for spec in specs:
        dtype = triton_to_np_dtype(spec["datatype"])
        if "zeros" in spec:  # a large tensor, not sent through JSON
            data = np.zeros(spec["zeros"], dtype=dtype)
        else:
            data = np.array(spec["data"], dtype=dtype)
        tensor = grpcclient.InferInput(spec["name"], list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data)
        if "shape" in spec:  # a shape that contradicts the data, for the error tests
            tensor.set_shape(spec["shape"])
        inputs.append(tensor)
    return inputs


def _infer(client: Any, grpcclient: Any, c: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = _inputs(grpcclient, c["inputs"])
    result = client.infer(
        *c["args"],
        inputs,
        headers=c.get("headers"),
        compression_algorithm=c.get("compression"),
    )
    return _outputs(result)


def _outputs(result: Any) -> list[dict[str, Any]]:
    outputs = []
    for out in result.get_response().outputs:
        array = result.as_numpy(out.name)
        outputs.append(
            {
                "name": out.name,
                "datatype": out.datatype,
                "shape": list(out.shape),
                "data": array.tolist(),
            }
        )
    return outputs


def _stream(client: Any, grpcclient: Any, c: dict[str, Any]) -> list[dict[str, Any]]:
    import queue

    from tritonclient.utils import InferenceServerException

    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(
        lambda result, error: answers.put((result, error)),
        headers=c.get("headers"),
        compression_algorithm=c.get("compression"),
    )
    for i, request in enumerate(c["requests"]):
        inputs = _inputs(grpcclient, request["inputs"])
        try:
            client.async_stream_infer(c["args"][0], inputs, request_id=str(i))
        except InferenceServerException:
            break  # the call ended with an error, which the callback has
    client.stop_stream()  # the requests are all sent; it returns once the answers are in
    out = []
    while not answers.empty():
        result, error = answers.get_nowait()
        if error is not None:
            out.append({"status": error.status(), "message": error.message()})
        else:
            out.append({"id": result.get_response().id, "outputs": _outputs(result)})
    return out


def _main() -> None:
    import tritonclient.grpc as grpcclient
    from google.protobuf import json_format
    from google.protobuf.message import Message
    from tritonclient.utils import InferenceServerException

    job = json.load(sys.stdin)
    options = [tuple(o) for o in job.get("options") or []] or None
    client = grpcclient.InferenceServerClient(job["address"], channel_args=options)
    out: list[Any] = []
    for c in job["calls"]:
        try:
            if c["method"] == "sleep":  # pace a series of calls
                time.sleep(c["args"][0])
                continue
            if c["method"] == "infer":
                reply: Any = _infer(client, grpcclient, c)
            elif c["method"] == "stream":
                reply = _stream(client, grpcclient, c)
            else:
                reply = getattr(client, c["method"])(*c["args"], headers=c.get("headers"))
        except InferenceServerException as exc:
            out.append({"status": exc.status(), "message": exc.message()})
            continue
        if isinstance(reply, Message):
            reply = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        out.append({"reply": reply})
    client.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    _main()
