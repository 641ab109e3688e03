"""YAML that tenants supply, loaded with a bound on what aliases expand to.

``yaml.safe_load`` builds nothing dangerous, but an alias is a reference: nine aliases to a
list of nine aliases to ... ("billion laughs") is 338 bytes of text and a few hundred nodes
in memory, which become megabytes (or gigabytes, at 500 bytes) the moment anything walks
the document: validation, ``json.dumps``, the database. So every document is measured as
if expanded before it is constructed, counting each node once per path that reaches it,
in time linear in its number of distinct nodes. Aliases stay usable (``kubectl`` accepts
them, and hand-written Argo YAML uses anchors for repeated blocks) as long as they add at
most :data:`MAX_ALIAS_EXPANSION` to the document; a recursive alias, which JSON cannot
represent, is refused outright. Kubernetes guards its YAML decoder the same way
(go-yaml's "document contains excessive aliasing").

Use :func:`load` / :func:`load_all` wherever YAML comes from a request, a stored object or
a file a user points at; they raise :class:`YamlError` (a ``yaml.YAMLError``) whose message
says what was wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

# How much aliases may add to a document, in "size" units: one per node plus the length of
# each scalar, roughly the document's size as JSON. A legitimate document's anchors repeat
# a few blocks; a bomb multiplies.
MAX_ALIAS_EXPANSION = 256 * 1024
MAX_DEPTH = 200

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(yaml.YAMLError):
    """The YAML is refused before it is built; the message says why."""


def load(text: str | bytes) -> Any:
    """The single document in ``text`` (None if empty), as ``yaml.safe_load`` would give."""
    loader = _Loader(text)
    try:
        node = _guarded(loader.get_single_node)
        return None if node is None else _construct(loader, node)
    finally:
        loader.dispose()


def load_all(text: str | bytes) -> Iterator[Any]:
    """Every document in ``text``, as ``yaml.safe_load_all`` would give."""
    loader = _Loader(text)
    try:
        while _guarded(loader.check_node):
            yield _construct(loader, _guarded(loader.get_node))
    finally:
        loader.dispose()


def _guarded(step: Any) -> Any:
    try:
        return step()
    except RecursionError:
        raise YamlError(f"the YAML is nested more than {MAX_DEPTH} levels deep") from None


def _construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    check_expansion(node)
    return _guarded(lambda: loader.construct_document(node))


def check_expansion(root: yaml.Node) -> None:
    """Refuse a composed document whose aliases expand by more than ``MAX_ALIAS_EXPANSION``,
    that refers to itself through an alias, or that nests deeper than ``MAX_DEPTH``."""
    expanded: dict[int, int] = {}  # id(node) -> its size with every alias expanded
    written = 0  # the size with each distinct node counted once
    # An explicit stack, not recursion: depth is what is being checked.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            size = 1 + sum(expanded[id(child)] for child in _children(node))
            expanded[key] = size
            written += 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
            if size - written > MAX_ALIAS_EXPANSION:
                raise YamlError(
                    f"YAML aliases would add more than {MAX_ALIAS_EXPANSION} nodes and "
                    "characters to this document (an alias bomb?); write the repeated parts "
                    "out, or use fewer aliases"
                )
            continue
        if key in expanded:
            continue  # an alias to a node already measured
        if key in open_nodes:
            raise YamlError(
                f"the YAML has a recursive alias (near line {node.start_mark.line + 1}); "
                "it cannot be represented as JSON"
            )
        if isinstance(node, yaml.ScalarNode):
            expanded[key] = 1 + len(node.value)
            written += expanded[key]
            continue
        if len(open_nodes) >= MAX_DEPTH:
            raise YamlError(f"the YAML is nested more than {MAX_DEPTH} levels deep")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
