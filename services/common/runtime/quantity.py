"""Kubernetes resource quantities ("512Mi", "1G", "0.5", "250m") as numbers."""

from __future__ import annotations

import re

_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "m": 10**-3,
    "": 1,
}
_QUANTITY = re.compile(r"^\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*([A-Za-z]{0,2})\s*$")


def parse_quantity(value: str | int | float, field: str = "quantity") -> float:
    """Parse a quantity; raise ValueError naming ``field`` when it is malformed."""
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.match(value)
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"{field}: {value!r} is not a valid quantity (e.g. 512Mi, 1G, 250m)")
    return float(m.group(1)) * _SUFFIX[m.group(2)]
