"""Open Inference Protocol (V2) tensors: JSON and the binary tensor data extension.

A request body is JSON, optionally followed by raw tensor bytes; the JSON part's length is
the ``Inference-Header-Content-Length`` header and each binary input says its size in
``parameters.binary_data_size``. Binary data is little-endian and row-major; a BYTES element
is a 4-byte little-endian length followed by its bytes. tritonclient sends and asks for binary
by default, so both directions are implemented.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

HEADER_LENGTH = "inference-header-content-length"

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": object,
}
#: The datatype of each numeric numpy dtype (BOOL and BYTES are told by kind).
_DATATYPE_OF = {np.dtype(t): name for name, t in DTYPES.items() if t not in (object, np.bool_)}


class TensorError(ValueError):
    """The request's tensors are malformed (answered with 400)."""


@dataclass
class InferRequest:
    id: str | None
    inputs: list[tuple[str, np.ndarray]]
    outputs: list[dict[str, Any]] | None  # requested outputs, as sent
    binary_output: bool  # request-level binary_data_output


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name for a numpy array."""
    kind = array.dtype
    if kind == np.bool_:
        return "BOOL"
    if kind.kind in "OSU":
        return "BYTES"
    name = _DATATYPE_OF.get(kind.newbyteorder("=") if kind.byteorder not in "=|" else kind)
    if name is None:
        raise TensorError(f"cannot express numpy dtype {kind} as an OIP datatype")
    return name


def _decode_bytes(raw: bytes, count: int) -> np.ndarray:
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorError("truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        out.append(raw[offset : offset + length])
        offset += length
    if len(out) != count:
        raise TensorError(f"BYTES tensor has {len(out)} elements, shape says {count}")
    return np.array(out, dtype=object)


def _tensor(spec: dict[str, Any], raw: bytes | None) -> np.ndarray:
    name = spec.get("name")
    datatype, shape = spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str):
        raise TensorError("input name is required")
    if datatype not in DTYPES:
        raise TensorError(f"input {name}: unsupported datatype {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise TensorError(f"input {name}: shape must be a list of non-negative integers")
    count = math.prod(shape)  # exact: a product too large for int64 is refused below
    if raw is not None:
        if datatype == "BYTES":
            flat = _decode_bytes(raw, count)
        else:
            dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
            if len(raw) != count * dtype.itemsize:
                raise TensorError(
                    f"input {name}: {len(raw)} bytes of binary data, shape "
                    f"{shape} of {datatype} needs {count * dtype.itemsize}"
                )
            flat = np.frombuffer(raw, dtype=dtype)
    else:
        data = spec.get("data")
        if data is None:
            raise TensorError(f"input {name}: data is required")
        try:
            if datatype == "BYTES":
                flat = np.array(data, dtype=object).reshape(-1)
            else:
                flat = np.asarray(data, dtype=DTYPES[datatype]).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise TensorError(f"input {name}: data does not fit {datatype}: {exc}") from None
        if flat.size != count:
            raise TensorError(f"input {name}: {flat.size} elements, shape {shape} needs {count}")
    return flat.reshape(shape)


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an infer request (JSON, or JSON plus binary tensor data)."""
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError:
            raise TensorError("Inference-Header-Content-Length must be an integer") from None
        if not 0 <= json_len <= len(body):
            raise TensorError("Inference-Header-Content-Length exceeds the body")
        head, binary = body[:json_len], memoryview(body)[json_len:]
    else:
        head, binary = body, memoryview(b"")
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TensorError(f"request body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise TensorError("inputs: a non-empty list of tensors is required")
    offset, inputs = 0, []
    for spec in doc["inputs"]:
        if not isinstance(spec, dict):
            raise TensorError("inputs: each input must be an object")
        size = (spec.get("parameters") or {}).get("binary_data_size")
        raw = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise TensorError(
                    f"input {spec.get('name')}: binary_data_size {size!r} does not fit the body"
                )
            raw = bytes(binary[offset : offset + size])
            offset += size
        inputs.append(
            (spec["name"] if isinstance(spec.get("name"), str) else "", _tensor(spec, raw))
        )
    outputs = doc.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise TensorError("outputs: must be a list")
    params = doc.get("parameters") or {}
    rid = doc.get("id")
    return InferRequest(
        id=str(rid) if rid is not None else None,
        inputs=inputs,
        outputs=outputs,
        binary_output=bool(params.get("binary_data_output")),
    )


def _binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _json_data(array: np.ndarray, datatype: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()  # type: ignore[no-any-return]


def encode_response(
    model_name: str, request: InferRequest, outputs: list[tuple[str, np.ndarray]]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary data, the JSON part's length."""
    wanted: dict[str, dict[str, Any]] | None = None
    if request.outputs:
        wanted = {
            str(o.get("name")): (o.get("parameters") or {})
            for o in request.outputs
            if isinstance(o, dict)
        }
        known = {name for name, _ in outputs}
        missing = [n for n in wanted if n not in known]
        if missing:
            raise TensorError(f"unknown output(s) {missing}; the model has {sorted(known)}")
    tensors, blobs = [], []
    for name, array in outputs:
        if wanted is not None and name not in wanted:
            continue
        datatype = datatype_of(array)
        params = wanted.get(name, {}) if wanted is not None else {}
        binary = params.get("binary_data", request.binary_output)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = _binary(array, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(array, datatype)
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "outputs": tensors}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
