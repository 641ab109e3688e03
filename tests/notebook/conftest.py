from tests.common.resources.conftest import notebook_service  # noqa: F401 - shared fixture
