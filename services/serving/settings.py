"""Settings of the serving service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "serving"
    port: int = 8184
