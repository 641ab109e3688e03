"""The step cache and the Kubeflow Pipelines API tables.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from services.pipeline.tables import pipeline_columns

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, columns in pipeline_columns().items():
        op.create_table(name, *columns)


def downgrade() -> None:
    for name in reversed(list(pipeline_columns())):
        op.drop_table(name)
