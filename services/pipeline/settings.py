"""Settings of the pipeline service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "pipeline"
    port: int = 8183
