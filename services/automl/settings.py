"""Settings of the automl service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "automl"
    port: int = 8182
