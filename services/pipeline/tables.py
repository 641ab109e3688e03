"""The notebook service's tables (its own schema)."""

from services.common.db import new_metadata
from services.common.tables import add_kernel_tables

metadata = new_metadata()
add_kernel_tables(metadata)
