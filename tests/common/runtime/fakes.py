"""Fakes of the workload runtime for tests about something else.

:class:`NamespacesOnlyRuntime` is a :class:`Runtime` for tests of the namespace seam (the
gateway's Profile sync): every abstract method of the interface (workloads, volumes) raises
``NotImplementedError``. They are filled in from ``Runtime.__abstractmethods__`` rather than
written out again, so the fake follows the interface when it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common.runtime import Runtime


def _not_here(name: str) -> Callable[..., Any]:
    def method(self: Runtime, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.{name} is not part of this fake")

    method.__name__ = method.__qualname__ = name
    return method


# mypy cannot see the methods filled in below and would call every subclass abstract; to it the
# base is opaque (Any). At run time it is Runtime.
_RuntimeBase: Any = Runtime


class NamespacesOnlyRuntime(_RuntimeBase):
    """A runtime with no workloads or volumes; subclasses implement the namespace hooks."""

    name = "namespaces-only"


for _name in NamespacesOnlyRuntime.__abstractmethods__:
    setattr(NamespacesOnlyRuntime, _name, _not_here(_name))
NamespacesOnlyRuntime.__abstractmethods__ = frozenset()
