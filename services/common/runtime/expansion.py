"""Kubernetes ``$(VAR)`` expansion for command, args and env values (no shell involved).

Rules, as in Kubernetes (k8s.io/kubernetes/third_party/forked/golang/expansion): ``$(VAR)`` is
replaced by the variable's value when it is defined and kept verbatim otherwise; ``$$`` is an
escaped ``$`` (so ``$$(VAR)`` yields the literal ``$(VAR)``); any other ``$`` is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(env[name] if name in env else text[i : close + 1])
            i = close + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)
