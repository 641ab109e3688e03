"""Regular expressions that tenants supply, matched in linear time.

Python's ``re`` backtracks: ``((a|aa)+)+$`` against a line of thirty ``a``s and a ``b``
takes minutes of CPU, and a service that matched it on its event loop stopped for
everyone (issue 10). RE2 (google-re2) guarantees time linear in the input and bounded
memory, and it is the semantics the tenants' regexes were written for in the first place:
Katib's metrics collector and Argo's ``when`` expressions are Go, whose ``regexp`` is RE2.
So ``\\w``, ``\\d`` and ``\\s`` are ASCII, and backreferences and lookaround are refused
at validation (RE2 cannot run them) rather than at match time.

Use :func:`compile_pattern` for any pattern that comes from a request or a stored object;
``re`` stays for the platform's own literals.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

MAX_PATTERN_LENGTH = 4096
# Per compiled pattern; RE2's default. Past it, RE2 falls back to a slower (still linear) NFA.
_MAX_MEMORY = 8 << 20


class PatternError(ValueError):
    """The pattern cannot be compiled by RE2 (or is too long); the message says why."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a tenant's typo is a 422, not a line on the service's stderr
    options.max_mem = _MAX_MEMORY
    return options


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2: ``search``, ``match``, ``fullmatch``, ``findall`` and
    ``groups`` as in :mod:`re`. Raises :class:`PatternError` with RE2's reason."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        raise PatternError(_reason(exc)) from None


def _reason(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else exc
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return f"{text} (patterns use RE2 syntax: no backreferences or lookaround)"
