"""Regular expressions that tenants supply, matched in linear time.

Python's ``re`` backtracks: ``((a|aa)+)+$`` against a line of thirty ``a``s and a ``b``
takes minutes of CPU, and a service that matched it on its event loop stopped for
everyone (issue 10). RE2 (google-re2) guarantees time linear in the input and bounded
memory, and it is the semantics the tenants' regexes were written for in the first place:
Katib's metrics collector and Argo's ``when`` expressions are Go, whose ``regexp`` is RE2.
So ``\\w``, ``\\d`` and ``\\s`` are ASCII, and backreferences and lookaround are refused
at validation (RE2 cannot run them) rather than at match time.

google-re2's ``re``-like wrapper costs ~35 µs a line in Python around a 2 µs match (it maps
every match offset back to str indices), which a collector reading a trial's whole output
cannot afford; :class:`TenantPattern` calls the binding's ``Match`` on the UTF-8 bytes
once per match and slices the groups out itself.

Use :func:`compile_pattern` for any pattern that comes from a request or a stored object;
``re`` stays for the platform's own literals.
"""

from __future__ import annotations

import functools
from typing import Any

import re2
from re2 import _re2

MAX_PATTERN_LENGTH = 4096
# Per compiled pattern; RE2's default. Past it, RE2 falls back to a slower (still linear) NFA.
_MAX_MEMORY = 8 << 20
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED


class PatternError(ValueError):
    """The pattern cannot be compiled by RE2 (or is too long); the message says why."""


class TenantPattern:
    """A tenant's pattern compiled by RE2; ``findall`` and ``search`` behave as ``re``'s."""

    __slots__ = ("pattern", "groups", "_regexp")

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise PatternError(f"longer than {MAX_PATTERN_LENGTH} characters")
        options = re2.Options()
        options.log_errors = False  # a tenant's typo is a 422, not a line on stderr
        options.max_mem = _MAX_MEMORY
        regexp = _re2.RE2(pattern.encode(), options)
        if not regexp.ok():
            raise PatternError(_reason(regexp.error()))
        self.pattern = pattern
        self.groups: int = regexp.NumberOfCapturingGroups()
        self._regexp = regexp

    def findall(self, text: str) -> list[Any]:
        """Every non-overlapping match, left to right, as :func:`re.findall` reports them:
        the match without groups, the group with one, a tuple of groups ('' if unset)."""
        data = text.encode()
        end, pos, last_empty = len(data), 0, -1
        found: list[Any] = []
        while pos <= end:
            spans = self._regexp.Match(_UNANCHORED, data, pos, end)
            start, stop = spans[0]
            if start < 0:
                break
            if start == stop:
                if start == last_empty:  # re reports one empty match per position
                    pos = _after_char(data, start)
                    continue
                last_empty = start
            groups = tuple("" if s < 0 else data[s:e].decode() for s, e in spans[1:])
            if not groups:
                found.append(data[start:stop].decode())
            else:
                found.append(groups[0] if len(groups) == 1 else groups)
            pos = stop if stop > start else _after_char(data, stop)
        return found

    def search(self, text: str) -> bool:
        """True if the pattern matches anywhere in ``text``."""
        data = text.encode()
        return bool(self._regexp.Match(_UNANCHORED, data, 0, len(data))[0][0] >= 0)


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> TenantPattern:
    """``pattern`` compiled by RE2; raises :class:`PatternError` with RE2's reason."""
    return TenantPattern(pattern)


def _after_char(data: bytes, i: int) -> int:
    """The offset after the UTF-8 character at ``i`` (``len(data) + 1`` past the end)."""
    i += 1
    while i < len(data) and data[i] & 0xC0 == 0x80:
        i += 1
    return i


def _reason(raw: Any) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return f"{text} (patterns use RE2 syntax: no backreferences or lookaround)"
