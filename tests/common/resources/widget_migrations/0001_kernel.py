"""The kernel tables every service has (objects, counters, outbox, inbox)."""

from services.common.migrate import create_kernel_tables as upgrade  # noqa: F401
from services.common.migrate import drop_kernel_tables as downgrade  # noqa: F401

revision, down_revision, branch_labels, depends_on = "0001", None, None, None
