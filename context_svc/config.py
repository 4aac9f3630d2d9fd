"""context_svc settings: environment variables prefixed CONTEXT_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.config import ServiceSettings


class ContextSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CONTEXT_", extra="ignore", frozen=True)

    port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9102, ge=-1, le=65535)
