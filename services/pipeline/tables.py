"""The pipeline service's tables (its own schema): kernel tables, the step cache, and the
Kubeflow Pipelines API's records (pipelines, versions, experiments, runs, recurring runs,
artifacts)."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.schema import SchemaItem

from services.common.db import new_metadata
from services.common.tables import add_kernel_tables

metadata = new_metadata()
add_kernel_tables(metadata)


def pipeline_columns() -> dict[str, list[Column]]:  # type: ignore[type-arg]
    """Column lists per table; the 0002 migration creates exactly these."""
    ts = DateTime(timezone=True)
    return {
        "step_cache": [
            Column("namespace", String(253), primary_key=True),
            Column("key", String(512), primary_key=True),
            Column("outputs", JSON, nullable=False),
            Column("workflow", String(253), nullable=False),
            Column("node", String(253), nullable=False),
            Column("created_at", ts, nullable=False),
        ],
        "kfp_experiments": [
            Column("id", String(36), primary_key=True),
            Column("namespace", String(253), nullable=False),
            Column("display_name", String(255), nullable=False),
            Column("description", Text, nullable=False, default=""),
            Column("storage_state", String(16), nullable=False),
            Column("created_at", ts, nullable=False),
        ],
        "kfp_pipelines": [
            Column("id", String(36), primary_key=True),
            Column("namespace", String(253), nullable=False),
            Column("display_name", String(255), nullable=False),
            Column("description", Text, nullable=False, default=""),
            Column("created_at", ts, nullable=False),
        ],
        "kfp_versions": [
            Column("id", String(36), primary_key=True),
            Column("pipeline_id", String(36), nullable=False, index=True),
            Column("display_name", String(255), nullable=False),
            Column("description", Text, nullable=False, default=""),
            Column("spec", JSON, nullable=False),
            Column("created_at", ts, nullable=False),
        ],
        "kfp_runs": [
            Column("id", String(36), primary_key=True),
            Column("namespace", String(253), nullable=False),
            Column("experiment_id", String(36), nullable=False, index=True),
            Column("display_name", String(255), nullable=False),
            Column("description", Text, nullable=False, default=""),
            Column("storage_state", String(16), nullable=False),
            Column("state", String(32), nullable=False),
            Column("workflow", String(253), nullable=False),
            Column("recurring_run_id", String(36), nullable=False, default="", index=True),
            Column("body", JSON, nullable=False),  # the rest of the KFP Run message
            Column("created_at", ts, nullable=False),
            Column("finished_at", ts, nullable=True),
        ],
        "kfp_recurring_runs": [
            Column("id", String(36), primary_key=True),
            Column("namespace", String(253), nullable=False),
            Column("experiment_id", String(36), nullable=False),
            Column("display_name", String(255), nullable=False),
            Column("status", String(16), nullable=False),
            Column("body", JSON, nullable=False),
            Column("last_fire", ts, nullable=True),
            Column("fires", Integer, nullable=False, default=0),
            Column("created_at", ts, nullable=False),
        ],
    }


for _name, _columns in pipeline_columns().items():
    Table(_name, metadata, *_columns)


def artifact_table_items() -> list[SchemaItem]:
    """``kfp_artifacts``: one row per artifact a KFP task produced (the v2beta1 artifact API).

    The id is an integer, as MLMD's artifact ids that KFP's ``GetArtifact`` parses. The
    unique (run_id, node_id, name) makes recording idempotent: a redelivered event or a
    restarted collector finds the row it wrote before. The 0003 migration creates exactly
    these.
    """
    ts = DateTime(timezone=True)
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("namespace", String(253), nullable=False, index=True),
        Column("run_id", String(36), nullable=False, index=True),
        Column("workflow", String(253), nullable=False),
        Column("node_id", String(253), nullable=False),
        Column("task_name", String(255), nullable=False),
        Column("name", String(255), nullable=False),
        Column("uri", Text, nullable=False),
        Column("artifact_type", String(255), nullable=False),
        Column("properties", JSON, nullable=False),  # KFP's artifact metadata
        Column("size", BigInteger, nullable=True),  # None: no object (a metric)
        Column("created_at", ts, nullable=False),
        Column("updated_at", ts, nullable=False),
        UniqueConstraint("run_id", "node_id", "name", name="uq_kfp_artifacts_run_node_name"),
    ]


Table("kfp_artifacts", metadata, *artifact_table_items())
