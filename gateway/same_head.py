"""A message whose head is byte for byte the last one's, its length aside, parses the same.

A client calling a model sends the same request head call after call, with only the
Content-Length changing, and the model server answers with the same response head (until its
Date turns over, once a second). The inference lane (gateway/inference_lane.py) keeps, per
connection and direction, the raw bytes of the last head that llhttp accepted, with the
Content-Length digits cut out (:class:`SameHead`). When the next message arrives whole in
one read and its bytes are that head again (any digits in the gap) followed by exactly as
many body bytes as they say, llhttp would parse it to the same method, URL, status and
headers, and to that body: so what the last parse found is used again, without llhttp's
callbacks into Python. Anything else (another head, a byte more or less, a second message in
the same read, a head in two reads) goes to llhttp, as before. The comparison is of bytes, so
a head that differs in a single byte (a header's case, a space) is parsed anew; it can never
be read differently from how llhttp read it.
"""

from __future__ import annotations

_LENGTH_NAME = b"\r\ncontent-length:"
#: Digits of a Content-Length the lane takes: its bodies are at most SMALL_BODY (64 KiB).
_MAX_DIGITS = 10


class SameHead:
    """The last accepted head of one connection's messages, around its Content-Length value."""

    __slots__ = ("before", "after")

    def __init__(self, before: bytes, after: bytes) -> None:
        self.before = before  # up to the Content-Length digits
        self.after = after  # from the line's CRLF to the head's end (CRLF CRLF)

    @classmethod
    def of(cls, head: bytes) -> SameHead | None:
        """The memo of ``head`` (a whole message head, ending in CRLF CRLF, that llhttp
        accepted), or None when it has no single plain Content-Length line (digits alone)."""
        lowered = head.lower()
        at = lowered.find(_LENGTH_NAME)
        if at < 0 or lowered.find(_LENGTH_NAME, at + 1) >= 0:
            return None
        start = at + len(_LENGTH_NAME)
        while head[start : start + 1] in (b" ", b"\t"):
            start += 1
        end = head.find(b"\r\n", start)
        if not head[start:end].isdigit() or end - start > _MAX_DIGITS:
            return None
        return cls(head[:start], head[end:])

    def body_length(self, data: bytes) -> int:
        """The body length when ``data`` is exactly one message with this head (any length
        digits) and that many body bytes, else -1."""
        before = self.before
        if not data.startswith(before):
            return -1
        start = len(before)
        end = data.find(b"\r", start, start + _MAX_DIGITS + 1)
        if end <= start:
            return -1
        digits = data[start:end]
        if not digits.isdigit():
            return -1
        length = int(digits)
        after = self.after
        if len(data) != end + len(after) + length or not data.startswith(after, end):
            return -1
        return length
