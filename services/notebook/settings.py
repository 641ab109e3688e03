"""Settings of the notebook service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "notebook"
    port: int = 8181
