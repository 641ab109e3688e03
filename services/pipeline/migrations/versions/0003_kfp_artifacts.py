"""The KFP artifact records (``kfp_artifacts``) behind ``/apis/v2beta1/artifacts``.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from services.pipeline.tables import artifact_table_items

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("kfp_artifacts", *artifact_table_items())


def downgrade() -> None:
    op.drop_table("kfp_artifacts")
