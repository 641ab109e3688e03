"""The kernel tables every service has in its own schema.

- ``objects``: Kubernetes-style resources served by the resource machinery.
- ``counters``: the service's resourceVersion counter (one row).
- ``outbox``: events committed with the state change that caused them; the relay
  publishes them to JetStream and keeps them for a while so that watches can
  replay from a resourceVersion.
- ``inbox``: ids of events a consumer has already applied (exactly-once effects).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

BigId = BigInteger().with_variant(Integer, "sqlite")


def add_kernel_tables(metadata: MetaData) -> None:
    """Declare the kernel tables on a service's metadata."""
    Table(
        "objects",
        metadata,
        Column("uid", String(36), primary_key=True),
        Column("kind", String(63), nullable=False),
        Column("namespace", String(253), nullable=False, default=""),
        Column("name", String(253), nullable=False),
        Column("resource_version", BigInteger, nullable=False),
        Column("body", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("deleting", Integer, nullable=False, default=0),
        UniqueConstraint("kind", "namespace", "name", name="uq_objects_kind_ns_name"),
        Index("ix_objects_kind_ns_rv", "kind", "namespace", "resource_version"),
    )
    Table(
        "counters",
        metadata,
        Column("name", String(63), primary_key=True),
        Column("value", BigInteger, nullable=False),
    )
    Table(
        "outbox",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("msg_id", String(64), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("headers", JSON, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        # Set for resource events so watches can replay "everything after resourceVersion N".
        Column("kind", String(63), nullable=True),
        Column("namespace", String(253), nullable=True),
        Column("resource_version", BigInteger, nullable=True),
        Index("ix_outbox_unpublished", "published_at", "id"),
        Index("ix_outbox_kind_rv", "kind", "resource_version"),
    )
    Table(
        "inbox",
        metadata,
        Column("consumer", String(128), nullable=False),
        Column("msg_id", String(64), nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("consumer", "msg_id"),
    )
