"""state_svc settings: environment variables prefixed STATE_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.config import ServiceSettings


class StateSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATE_", extra="ignore", frozen=True)

    port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9101, ge=-1, le=65535)
