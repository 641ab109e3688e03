"""Label selectors on the API: the runtime's parser, with a 400 Status for bad input."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from services.common.errors import ApiError, Cause
from services.common.runtime.labels import parse_selector as _parse

Requirement = Callable[[Mapping[str, str]], bool]


def parse_selector(selector: str | None, field: str = "labelSelector") -> Requirement:
    """Parse ``a=b,c!=d,e in (x,y),!f`` into a predicate over a label map."""
    try:
        return _parse(selector or None)
    except ValueError as exc:
        raise ApiError(
            400, f"unable to parse requirement: {exc}", causes=[Cause(field, str(exc))]
        ) from None
