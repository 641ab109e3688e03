"""W3C trace context (https://www.w3.org/TR/trace-context/) carried in a contextvar.

The HTTP layer sets the incoming ``traceparent``; :func:`stage_event` copies it into
the event's headers, and the consumer sets it again while the handler runs, so a
chain request -> event -> handler -> event keeps one trace id without a tracing SDK.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

TRACEPARENT_HEADER = "traceparent"
_TRACEPARENT = ContextVar[str | None]("shipyard_traceparent", default=None)
# version 00: 2 hex version, 32 hex trace-id, 16 hex parent-id, 2 hex flags (all-zero ids invalid)
_FORMAT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def is_valid_traceparent(value: str | None) -> bool:
    return value is not None and _FORMAT.match(value) is not None and not value.startswith("ff")


def new_traceparent() -> str:
    """A fresh, sampled root trace context."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current_traceparent() -> str | None:
    """The traceparent of the work running in this context, if any."""
    return _TRACEPARENT.get()


def set_traceparent(value: str | None) -> Token[str | None]:
    """Set the traceparent for this context (invalid values are dropped, per the spec)."""
    return _TRACEPARENT.set(value if is_valid_traceparent(value) else None)


def reset_traceparent(token: Token[str | None]) -> None:
    _TRACEPARENT.reset(token)


@contextmanager
def traceparent_context(value: str | None) -> Iterator[None]:
    """Run a block under ``value`` as the current traceparent."""
    token = set_traceparent(value)
    try:
        yield
    finally:
        _TRACEPARENT.reset(token)
