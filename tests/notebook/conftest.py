from tests.common.resources.conftest import (  # noqa: F401 - shared fixtures
    notebook_db,
    notebook_service,
)
