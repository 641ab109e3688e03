"""Client-side settings (the CLI and the Python client read only these)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import SINGLE_USER_NAMESPACE


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHIPYARD_", extra="ignore")

    url: str = "http://127.0.0.1:8080"
    namespace: str = SINGLE_USER_NAMESPACE
    token: str = ""  # a bearer token; `shipyard login` stores one instead
    # A file holding the bearer token, re-read on every request: inside a workload the
    # runtime points this at its service-account token, which it refreshes in place.
    token_file: str = ""

    def bearer_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    return f.read().strip()
            except OSError:
                return ""
        return ""
