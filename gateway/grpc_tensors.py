"""ModelInfer over gRPC to and from the V2 REST binary tensor request of the model server.

The gateway answers the Open Inference Protocol's gRPC ``ModelInfer`` from the model server's
REST ``/v2/models/{model}/infer`` with the binary tensor data extension (the layout is the
same: little-endian row-major bytes, a BYTES element as a 4-byte length and its bytes; see
services/serving/modelserver/tensors.py). Each input's bytes (``raw_input_contents``, or its
typed ``contents`` packed) follow the JSON header unchanged, and the outputs are asked for in
binary, so tensors are copied, never parsed element by element. Why convert rather than a gRPC
port on every model server: docs/serving.md, "gRPC".

Message classes are passed in (``gateway.grpc_inference`` imports them): this module names
no generated code.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from .grpc_server import Code, GRPCError

HEADER_LENGTH = "inference-header-content-length"
#: Tensor parameters the conversion sets itself (a client's are replaced).
BINARY_KEYS = frozenset({"binary_data_size", "binary_data", "binary_data_output"})

#: datatype -> (numpy dtype, the InferTensorContents field holding it, or None: raw only).
DATATYPES: dict[str, tuple[str, str | None]] = {
    "BOOL": ("?", "bool_contents"),
    "UINT8": ("<u1", "uint_contents"),
    "UINT16": ("<u2", "uint_contents"),
    "UINT32": ("<u4", "uint_contents"),
    "UINT64": ("<u8", "uint64_contents"),
    "INT8": ("<i1", "int_contents"),
    "INT16": ("<i2", "int_contents"),
    "INT32": ("<i4", "int_contents"),
    "INT64": ("<i8", "int64_contents"),
    "FP16": ("<f2", None),
    "FP32": ("<f4", "fp32_contents"),
    "FP64": ("<f8", "fp64_contents"),
    "BYTES": ("O", "bytes_contents"),
}


def parameter_value(param: Any) -> Any:
    """The Python value of an ``InferParameter`` (None when unset)."""
    which = param.WhichOneof("parameter_choice")
    return getattr(param, which) if which else None


def parameters_of(params: Any) -> dict[str, Any]:
    """A parameters map as JSON, without the binary-data keys the conversion owns."""
    return {k: parameter_value(v) for k, v in params.items() if k not in BINARY_KEYS}


def set_parameters(target: Any, values: dict[str, Any]) -> None:
    """Fill a protobuf parameters map from JSON values (others than these types are skipped)."""
    for key, value in values.items():
        if key in BINARY_KEYS:
            continue
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        elif isinstance(value, str):
            target[key].string_param = value


def _count(shape: list[int], name: str) -> int:
    if any(d < 0 for d in shape):
        raise GRPCError(Code.INVALID_ARGUMENT, f"input {name}: shape {shape} has a negative size")
    return int(np.prod(shape)) if shape else 1


def pack_bytes(items: list[bytes]) -> bytes:
    """BYTES elements as the binary extension lays them out."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def contents_bytes(tensor: Any) -> bytes:
    """An input's typed ``contents`` as raw bytes, checked against its datatype and shape."""
    name, datatype = tensor.name, tensor.datatype
    if datatype not in DATATYPES:
        raise GRPCError(Code.INVALID_ARGUMENT, f"input {name}: unsupported datatype {datatype!r}")
    dtype, field = DATATYPES[datatype]
    if field is None:
        raise GRPCError(
            Code.INVALID_ARGUMENT,
            f"input {name}: {datatype} has no contents field; send it in raw_input_contents",
        )
    values = getattr(tensor.contents, field)
    count = _count(list(tensor.shape), name)
    if len(values) != count:
        raise GRPCError(
            Code.INVALID_ARGUMENT,
            f"input {name}: contents.{field} has {len(values)} elements, shape "
            f"{list(tensor.shape)} needs {count}",
        )
    if datatype == "BYTES":
        return pack_bytes(list(values))
    try:
        return np.asarray(values, dtype=dtype).tobytes()
    except OverflowError as exc:
        raise GRPCError(Code.INVALID_ARGUMENT, f"input {name}: {exc}") from None


def rest_request(request: Any) -> tuple[bytes, int]:
    """The REST body (JSON header and binary tensors) for a ``ModelInferRequest``, and the
    header's length (``Inference-Header-Content-Length``)."""
    if not request.inputs:
        raise GRPCError(Code.INVALID_ARGUMENT, "inputs: at least one input tensor is required")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise GRPCError(
            Code.INVALID_ARGUMENT,
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
            "(give raw contents for every input or for none)",
        )
    specs, blobs = [], []
    for index, tensor in enumerate(request.inputs):
        blob = raw[index] if raw else contents_bytes(tensor)
        params = {**parameters_of(tensor.parameters), "binary_data_size": len(blob)}
        specs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": params,
            }
        )
        blobs.append(blob)
    doc: dict[str, Any] = {
        "inputs": specs,
        "parameters": {**parameters_of(request.parameters), "binary_data_output": True},
    }
    if request.id:
        doc["id"] = request.id
    if request.outputs:
        doc["outputs"] = [
            {"name": o.name, "parameters": {**parameters_of(o.parameters), "binary_data": True}}
            for o in request.outputs
        ]
    head = json.dumps(doc, separators=(",", ":")).encode()
    return head + b"".join(blobs), len(head)


def _output_bytes(spec: dict[str, Any], binary: memoryview, offset: int) -> tuple[bytes, int]:
    """One output's raw bytes (from the binary part, or its JSON data packed) and the new
    offset into the binary part."""
    name, datatype = spec.get("name"), spec.get("datatype")
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or offset + size > len(binary):
            raise GRPCError(
                Code.INTERNAL, f"output {name}: the model server's binary data is short"
            )
        return bytes(binary[offset : offset + size]), offset + size
    data = spec.get("data")
    if datatype not in DATATYPES or not isinstance(data, list):
        raise GRPCError(Code.INTERNAL, f"output {name}: the model server sent no usable data")
    if datatype == "BYTES":
        return pack_bytes([str(v).encode() for v in data]), offset
    return np.asarray(data, dtype=DATATYPES[datatype][0]).tobytes(), offset


def fill_response(response: Any, body: bytes, header_length: str | None, model: str) -> None:
    """Fill a ``ModelInferResponse`` from the model server's REST infer answer."""
    try:
        split = int(header_length) if header_length is not None else len(body)
        doc = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError):
        raise GRPCError(Code.INTERNAL, "the model server's infer answer is not V2 JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise GRPCError(Code.INTERNAL, "the model server's infer answer has no outputs")
    response.model_name = str(doc.get("model_name") or model)
    response.model_version = str(doc.get("model_version") or "")
    if doc.get("id") is not None:
        response.id = str(doc["id"])
    set_parameters(response.parameters, doc.get("parameters") or {})
    binary, offset = memoryview(body)[split:], 0
    for spec in doc["outputs"]:
        if not isinstance(spec, dict):
            raise GRPCError(Code.INTERNAL, "the model server's infer answer is malformed")
        raw, offset = _output_bytes(spec, binary, offset)
        tensor = response.outputs.add(
            name=str(spec.get("name")), datatype=str(spec.get("datatype"))
        )
        tensor.shape.extend(int(d) for d in spec.get("shape") or [])
        set_parameters(tensor.parameters, spec.get("parameters") or {})
        response.raw_output_contents.append(raw)
