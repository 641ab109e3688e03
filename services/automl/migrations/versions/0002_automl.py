"""AutoML tables: observation logs, study trials and studies.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "observation_logs",
        sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("trial_name", sa.String(253), nullable=False),
        sa.Column("metric_name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_observation_logs_trial",
        "observation_logs",
        ["namespace", "trial_name", "metric_name", "id"],
    )
    op.create_table(
        "study_trials",
        sa.Column("experiment_uid", sa.String(36), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("trial_name", sa.String(253), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("distributions", sa.JSON, nullable=False),
        sa.Column("system_attrs", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("rung", sa.Integer, nullable=True),
    )
    op.create_table(
        "studies",
        sa.Column("experiment_uid", sa.String(36), primary_key=True),
        sa.Column("system_attrs", sa.JSON, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("updated", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("studies")
    op.drop_table("study_trials")
    op.drop_index("ix_observation_logs_trial", table_name="observation_logs")
    op.drop_table("observation_logs")
