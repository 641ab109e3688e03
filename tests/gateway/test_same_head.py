"""gateway/same_head.py: a message is taken as the last one only when its bytes are the last
head's, its Content-Length digits aside, and exactly that many body bytes follow."""

from __future__ import annotations

import pytest

from gateway.same_head import SameHead

HEAD = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nA: b\r\n\r\n"


def message(length: bytes, body: bytes, head: bytes = HEAD) -> bytes:
    return head.replace(b"Content-Length: 12", b"Content-Length: " + length) + body


def memo() -> SameHead:
    same = SameHead.of(HEAD)
    assert same is not None
    return same


def test_the_same_head_with_any_length_gives_the_body_length() -> None:
    same = memo()
    assert same.body_length(message(b"12", b"x" * 12)) == 12
    assert same.body_length(message(b"3", b"abc")) == 3
    assert same.body_length(message(b"0", b"")) == 0
    assert same.body_length(message(b"0004", b"abcd")) == 4  # as llhttp reads it


@pytest.mark.parametrize(
    "data",
    [
        message(b"3", b"ab"),  # a byte short: the rest is still on its way
        message(b"3", b"abcd"),  # a byte more: the start of another message
        message(b"3", b"abc" + b"POST /other HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        message(b"3", b"abc", HEAD.replace(b"Host: x", b"Host: y")),  # another header value
        message(b"3", b"abc", HEAD.replace(b"A: b", b"a: b")),  # a name's case
        message(b"3", b"abc", HEAD.replace(b"A: b\r\n", b"A: b\r\nA: b\r\n")),  # a line more
        message(b"3", b"abc", HEAD.replace(b"/infer", b"/inferx")),  # the URL
        message(b"+3", b"abc"),
        message(b" 3", b"abc"),
        message(b"3 ", b"abc"),
        message(b"-3", b"abc"),
        message(b"", b""),
        message(b"3\n", b"abc"),
        message(b"12345678901", b""),  # more digits than any body the lane takes
        b"",
        HEAD[:20],
    ],
)
def test_anything_else_is_parsed_anew(data: bytes) -> None:
    assert memo().body_length(data) == -1


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",  # no Content-Length
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",  # two
        b"POST / HTTP/1.1\r\nContent-Length: 1 \r\n\r\n",  # trailing space
        b"POST / HTTP/1.1\r\nContent-Length: 0x1\r\n\r\n",
        b"POST / HTTP/1.1\r\nX-Content-Length: 1\r\n\r\n",  # another header's name
    ],
)
def test_a_head_without_one_plain_length_is_not_remembered(head: bytes) -> None:
    assert SameHead.of(head) is None


def test_the_length_name_in_any_case_and_spacing() -> None:
    for line in (b"content-length:5", b"CONTENT-LENGTH: \t5"):
        same = SameHead.of(b"POST / HTTP/1.1\r\n" + line + b"\r\n\r\n")
        assert same is not None
        assert same.body_length(b"POST / HTTP/1.1\r\n" + line[:-1] + b"2\r\n\r\nab") == 2
