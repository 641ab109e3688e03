"""Calls to Katib's DB manager API, made in a child process: ``python -m tests.automl.grpc_calls``.

The tests keep gRPC out of the pytest process: gRPC's threads there would be forked along
with every platform process a later test starts (``shipyard up`` forks them), and gRPC's
fork handlers can then abort the child before it execs. Standard input is JSON:
``{"address": "HOST:PORT", "calls": [{"method", "request" (the message as a dict, field
names as in the .proto), "metadata" ([[key, value], ...])}]}``; standard output is one JSON
list, per call ``{"reply": dict}`` or ``{"code": "NOT_FOUND", "details": str}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from services.common.eventspb.katib.v1beta1 import dbmanager_pb2 as pb

SERVICE = "/api.v1.beta1.DBManager/"
TYPES: dict[str, tuple[type[Message], type[Message]]] = {
    "ReportObservationLog": (pb.ReportObservationLogRequest, pb.ReportObservationLogReply),
    "GetObservationLog": (pb.GetObservationLogRequest, pb.GetObservationLogReply),
    "DeleteObservationLog": (pb.DeleteObservationLogRequest, pb.DeleteObservationLogReply),
}


def call_all(address: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``calls`` against the DB manager at ``address`` in a child process; the results."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.automl.grpc_calls"],
        input=json.dumps({"address": address, "calls": calls}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def call(address: str, method: str, request: dict[str, Any], **metadata: str) -> dict[str, Any]:
    """One call (``metadata`` keys with ``_`` for ``-``); its result."""
    pairs = [[k.replace("_", "-"), v] for k, v in metadata.items()]
    return call_all(address, [{"method": method, "request": request, "metadata": pairs}])[0]


def _main() -> None:
    import grpc

    job = json.load(sys.stdin)
    out = []
    with grpc.insecure_channel(job["address"]) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        for c in job["calls"]:
            request_type, reply_type = TYPES[c["method"]]
            stub = channel.unary_unary(
                SERVICE + c["method"],
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=reply_type.FromString,
            )
            request = json_format.ParseDict(c["request"], request_type())
            metadata = tuple((k, v) for k, v in c.get("metadata") or [])
            try:
                reply = stub(request, metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                out.append({"code": exc.code().name, "details": exc.details()})
                continue
            out.append(
                {
                    "reply": json_format.MessageToDict(
                        reply,
                        preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=True,
                    )
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    _main()
