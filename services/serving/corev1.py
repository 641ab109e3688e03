"""core/v1 Secret and ServiceAccount: validation and admission, with Kubernetes' rules.

The serving service serves both kinds because it is their one consumer today: an
InferenceService's ``spec.predictor.serviceAccountName`` names a ServiceAccount whose
``secrets`` name the Secret with S3 credentials (KServe's way; :mod:`.credentials`). Reading
them is then a read of this service's own table, as ConfigMaps are the automl service's.

Secret, as the Kubernetes API server has it:

- ``data``: base64 values (checked); ``stringData``: plain strings, write-only: merged into
  ``data`` on create and update (a ``stringData`` key wins over the same ``data`` key) and
  never stored or returned;
- keys of ``[-._a-zA-Z0-9]+``, at most 253 characters, not ``.`` or ``..``;
- ``type`` defaults to ``Opaque`` and never changes; ``immutable: true`` freezes ``data``
  and itself;
- at most 1 MiB of values in all (decoded).

Values never appear in an error message, an event or a log line: the kind's events leave
``data`` out (``ResourceKind.event_omit``), and reading a Secret takes ``edit`` on its
namespace (``read_role``), as Kubernetes' ``view`` role leaves Secrets out.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import ApiError, Cause
from services.common.resources.names import (
    MAX_CONFIG_KEY_LENGTH,
    check_config_key,
    check_name,
)

MAX_SECRET_BYTES = 1024 * 1024  # Kubernetes' limit on a Secret's data
DEFAULT_SECRET_TYPE = "Opaque"


def decoded_size(values: dict[str, Any]) -> int:
    """Bytes of a valid ``data`` map's decoded values."""
    return sum(len(base64.b64decode(v)) for v in values.values())


def validate_secret(obj: dict[str, Any]) -> list[Cause]:
    """Shapes, keys, base64 and the 1 MiB limit (``data`` and ``stringData`` together)."""
    causes: list[Cause] = []
    sizes: dict[str, int] = {}
    for field in ("data", "stringData"):
        values = obj.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            causes.append(Cause(field, "must be a map of strings"))
            continue
        for key, value in values.items():
            path = f"{field}[{key}]"
            causes += check_config_key(key, path)
            if not isinstance(value, str):
                causes.append(Cause(path, "must be a string"))
                continue
            if field == "stringData":
                sizes[key] = len(value.encode())
                continue
            try:
                size = len(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                causes.append(Cause(path, "must be base64-encoded"))  # never echo the value
                continue
            sizes.setdefault(key, size)  # stringData (read second) overrides
    if sum(sizes.values()) > MAX_SECRET_BYTES:
        causes.append(
            Cause(
                "data", f"Too long: must have at most {MAX_SECRET_BYTES} bytes", "FieldValueTooLong"
            )
        )
    kind = obj.get("type", DEFAULT_SECRET_TYPE)
    if not isinstance(kind, str) or not kind or len(kind) > MAX_CONFIG_KEY_LENGTH:
        causes.append(Cause("type", "must be a non-empty string (default Opaque)"))
    if not isinstance(obj.get("immutable", False), bool):
        causes.append(Cause("immutable", "must be true or false"))
    return causes


async def admit_secret(
    session: AsyncSession, new: dict[str, Any], current: dict[str, Any] | None
) -> None:
    """Merge ``stringData`` into ``data``, default ``type``; ``type`` never changes, and
    ``immutable: true`` freezes ``data`` and itself (Kubernetes' rules)."""
    string_data = new.pop("stringData", None) or {}
    if string_data:
        data = dict(new.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
        new["data"] = data
    new.setdefault("type", DEFAULT_SECRET_TYPE)
    if current is None:
        return
    name = current["metadata"]["name"]
    if new["type"] != current.get("type", DEFAULT_SECRET_TYPE):
        raise ApiError.invalid(
            "Secret", name, [Cause("type", "field is immutable", "FieldValueInvalid")]
        )
    if current.get("immutable"):
        for field in ("data", "immutable"):
            if (new.get(field) or None) != (current.get(field) or None):
                raise ApiError.invalid(
                    "Secret",
                    name,
                    [
                        Cause(
                            field,
                            "field is immutable when `immutable` is set",
                            "FieldValueInvalid",
                        )
                    ],
                )


def _references(obj: dict[str, Any], field: str) -> list[Cause]:
    refs = obj.get(field)
    if refs is None:
        return []
    if not isinstance(refs, list):
        return [Cause(field, "must be a list of {name: ...} references")]
    causes: list[Cause] = []
    for i, ref in enumerate(refs):
        path = f"{field}[{i}]"
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
            causes.append(Cause(f"{path}.name", "Required value", "FieldValueRequired"))
            continue
        unknown = set(ref) - {"name", "namespace", "kind", "apiVersion", "uid", "fieldPath"}
        causes += [Cause(f"{path}.{k}", "unknown field", "FieldValueNotSupported") for k in unknown]
        causes += check_name(ref["name"], f"{path}.name")
    return causes


def validate_service_account(obj: dict[str, Any]) -> list[Cause]:
    """``secrets`` and ``imagePullSecrets`` are lists of references by name."""
    causes = _references(obj, "secrets") + _references(obj, "imagePullSecrets")
    if not isinstance(obj.get("automountServiceAccountToken", False), bool):
        causes.append(Cause("automountServiceAccountToken", "must be true or false"))
    return causes
