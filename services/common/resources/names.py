"""Name and label validation, with Kubernetes' rules and messages."""

from __future__ import annotations

import re
import secrets
import string

from services.common.errors import Cause

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_CONFIG_KEY_LENGTH = 253
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes avoids vowels and look-alikes


def check_name(name: str, field: str = "metadata.name") -> list[Cause]:
    """A DNS-1123 subdomain, as Kubernetes requires for object names."""
    if not name:
        return [Cause(field, "name or generateName is required", "FieldValueRequired")]
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return [
            Cause(
                field,
                (
                    f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist "
                    "of lower case alphanumeric characters, '-' or '.', and must start and "
                    "end with an alphanumeric character (e.g. 'example.com'), at most 253 "
                    "characters"
                ),
            )
        ]
    return []


def check_config_key(key: str, field: str) -> list[Cause]:
    """A ConfigMap's or Secret's data key, as Kubernetes' IsConfigMapKey."""
    if not _CONFIG_KEY.match(key) or len(key) > MAX_CONFIG_KEY_LENGTH or key in (".", ".."):
        return [
            Cause(
                field,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                f"(at most {MAX_CONFIG_KEY_LENGTH}, not '.' or '..')",
            )
        ]
    return []


#: metadata fields that are strings when present (a client may send anything).
META_STRINGS = ("name", "generateName", "namespace", "resourceVersion", "uid")


def check_meta_strings(meta: dict[str, object]) -> list[Cause]:
    """metadata's string fields are strings: a list or a number there is a 422, not a crash."""
    return [
        Cause(f"metadata.{key}", f"must be a string, not {type(meta[key]).__name__}")
        for key in META_STRINGS
        if meta.get(key) is not None and not isinstance(meta[key], str)
    ]


def check_namespace(namespace: str, field: str = "metadata.namespace") -> list[Cause]:
    if len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        return [
            Cause(
                field,
                f"Invalid value: {namespace!r}: a lowercase RFC 1123 label must "
                "consist of lower case alphanumeric characters or '-', at most 63",
            )
        ]
    return []


def check_labels(labels: object, field: str = "metadata.labels") -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [Cause(field, "must be a map of string keys to string values")]
    causes = []
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        prefix = key[: -len(name) - 1] if "/" in key else ""
        if (
            len(name) > 63
            or not _LABEL_NAME.match(name)
            or (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))
        ):
            causes.append(Cause(f"{field}.{key}", f"Invalid label key {key!r}"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                Cause(
                    f"{field}.{key}",
                    f"Invalid label value {value!r}: must be 63 "
                    "characters or less, alphanumeric, '-', '_' or '.'",
                )
            )
    return causes


def check_annotations(annotations: object, field: str = "metadata.annotations") -> list[Cause]:
    if annotations is None:
        return []
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        return [Cause(field, "must be a map of string keys to string values")]
    return []


def generate_name(prefix: str) -> str:
    """``generateName`` semantics: the prefix plus five random characters."""
    return prefix[:58] + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


assert set(_SUFFIX_ALPHABET) <= set(string.ascii_lowercase + string.digits)
