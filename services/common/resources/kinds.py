"""What a service declares about each kind it serves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.common.catalog import KindNames, PrinterColumn
from services.common.errors import Cause


class Spec(BaseModel):
    """Base for spec models: camelCase names as in Kubernetes, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Validator = Callable[[dict[str, Any]], Sequence[Cause]]


@dataclass(frozen=True)
class ResourceKind(KindNames):
    """A kind served through the resource machinery."""

    group: str  # "" for the core group (served under /api/v1)
    version: str
    kind: str
    plural: str
    spec_model: type[BaseModel] | None
    service: str  # owning service; events go to shipyard.<service>.<singular>.<event>
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    # Added on create; the owning controller removes it once it has torn down
    # what the object owns (workloads, volumes). Until then DELETE only sets
    # metadata.deletionTimestamp, as Kubernetes does with finalizers.
    finalizer: str | None = None
    columns: tuple[PrinterColumn, ...] = ()
    validate: Validator | None = None  # semantic checks beyond the spec model
    # Fields beside metadata/spec/status that the kind accepts (e.g. ConfigMap "data").
    extra_top_level: tuple[str, ...] = field(default=())
    # The role a caller needs to read (get, list, watch) objects of the kind. Kubernetes'
    # aggregated ``view`` role leaves Secrets out: reading one takes ``edit``.
    read_role: str = "view"
    # Top-level fields left out of the kind's events (outbox rows, NATS messages): values
    # that must not leave the service's own table, such as a Secret's ``data``. A watch
    # fills them back in from the table while the object is unchanged since the event.
    event_omit: tuple[str, ...] = field(default=())

    def subject(self, event: str) -> str:
        return f"shipyard.{self.service}.{self.singular}.{event}"
