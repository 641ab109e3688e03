"""Test-only kinds, served by a service with no controllers, to test the machinery alone.

Domain kinds (Notebook, Workflow, ...) have controllers that write status and finalizers
of their own; the machinery's tests must not depend on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from pydantic import Field

from services.common.app import build_service
from services.common.db import new_metadata
from services.common.resources import ResourceKind
from services.common.resources.kinds import Spec
from services.common.settings import ServiceSettings
from services.common.tables import add_kernel_tables
from services.notebook.models import PVC

GROUP, VERSION = "test.shipyard.io", "v1"
VERSIONS = Path(__file__).parent / "widget_migrations"


class Part(Spec):
    name: str
    count: int = 1


class WidgetSpec(Spec):
    color: Literal["red", "green", "blue"] = "red"
    size: int = Field(1, ge=1)
    parts: list[Part] = []
    template: dict[str, object] | None = None


WIDGET = ResourceKind(GROUP, VERSION, "Widget", "widgets", WidgetSpec, "widgets")
GADGET = ResourceKind(
    GROUP,
    VERSION,
    "Gadget",
    "gadgets",
    WidgetSpec,
    "widgets",
    finalizer="test.shipyard.io/teardown",
)
# The core-group PersistentVolumeClaim kind, without the notebook service's controller,
# so CoreV1Api can be tested too.
KINDS = (WIDGET, GADGET, PVC)

metadata = new_metadata()
add_kernel_tables(metadata)


def create_app(settings: ServiceSettings) -> FastAPI:
    return build_service("widgets", settings, metadata, VERSIONS, kinds=KINDS)
