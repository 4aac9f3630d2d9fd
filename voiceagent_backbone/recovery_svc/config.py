"""recovery_svc settings: environment variables prefixed RECOVERY_ (LiveKit keeps its own)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from voiceagent_backbone.servicekit.config import ServiceSettings

# Attend streams live as long as a call: closing connections by age would look like jobs
# dying. gRPC takes milliseconds in a 32-bit int: 24 days is its "never".
_NEVER_S = 2_147_483.0


class RecoverySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RECOVERY_", extra="ignore", frozen=True)

    port: int = Field(default=50053, ge=0, le=65535)
    metrics_port: int = Field(default=9104, ge=-1, le=65535)
    max_connection_age_s: float = Field(default=_NEVER_S, gt=0)
    # Attend streams never finish by themselves: at shutdown they are closed after this,
    # and their jobs attach to another replica.
    grace_period_s: float = Field(default=1.0, ge=0)
    # A job on a lost node is noticed by keepalive pings: a ping every 5 s, 5 s to answer.
    keepalive_time_s: float = Field(default=5.0, gt=0)
    keepalive_timeout_s: float = Field(default=5.0, gt=0)
    # Streams per replica: one per running agent job.
    max_concurrent_streams: int | None = Field(default=10_000, ge=1)
    # Names this replica in the recovery events it writes.
    replica_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)

    # livekit-server's API (rooms, participants, dispatches) and the key its webhooks are
    # signed with: the same variables as the agent's.
    livekit_url: str = Field(default="", validation_alias=AliasChoices("LIVEKIT_URL"))
    livekit_api_key: str = Field(default="", validation_alias=AliasChoices("LIVEKIT_API_KEY"))
    livekit_api_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LIVEKIT_API_SECRET")
    )
    # Webhooks from livekit-server (POST /livekit/webhook); -1 turns the listener off.
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8090, ge=-1, le=65535)
    # A webhook older than this (its createdAt), or one seen before, changes nothing.
    webhook_max_age_s: float = Field(default=300.0, gt=0)

    # state_svc, where conversations are checked and recoveries claimed and recorded. The
    # token needs state.read and state.write for the tenant of the agents it recovers; on
    # one machine it is minted from the shared key for `tenant`.
    state_target: str = "127.0.0.1:50051"
    state_token_file: Path | None = None
    tenant: str = Field(default="default", min_length=1, max_length=128)

    # A broken stream whose job attaches again within this time was a network blip.
    grace_s: float = Field(default=0.3, ge=0, le=30)
    # A dispatch that no worker took this long after it was created failed (livekit-server
    # does not try again when every worker is full), and so did a new job that has not
    # joined the room this long after its dispatch.
    assign_timeout_s: float = Field(default=3.0, gt=0)
    join_timeout_s: float = Field(default=20.0, gt=0)
    # Attempts per lost job, and the wait before the second one (doubling after, at most
    # retry_backoff_max_s). The defaults span about 45 s: time for a new pod to start when
    # the only agent worker died.
    max_attempts: int = Field(default=6, ge=1, le=50)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    retry_backoff_max_s: float = Field(default=10.0, ge=0)
    # Jobs of one call that may be lost and recovered; beyond, the call is given up (an
    # agent that crashes at every start would otherwise be dispatched for ever).
    max_recoveries: int = Field(default=10, ge=1)
    # Only these agents are recovered by the webhook and reconcile paths (empty: every
    # agent); jobs that attach are always theirs.
    agent_names: list[str] = Field(default_factory=list)
    # Every room is checked through the server API this often, so that a lost webhook or a
    # job without an Attend stream is still recovered.
    reconcile_interval_s: float = Field(default=10.0, ge=0.5)
    # A webhook's "agent left" is checked after this long: a job that ends normally leaves
    # the room just after it ended its conversation, and the check must see the end.
    settle_s: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _livekit_is_configured(self) -> RecoverySettings:
        missing = [
            name
            for name, value in (
                ("LIVEKIT_URL", self.livekit_url),
                ("LIVEKIT_API_KEY", self.livekit_api_key),
                ("LIVEKIT_API_SECRET", self.livekit_api_secret.get_secret_value()),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"{', '.join(missing)} not set: livekit-server's API is needed")
        return self

    def listeners(self) -> list[tuple[str, str]]:
        return [*super().listeners(), ("webhook_host", "webhook_port")]

    def livekit_http_url(self) -> str:
        """The server API's URL (LiveKit's SDKs accept ws:// and wss:// as well)."""
        url = self.livekit_url
        for scheme, http in (("ws://", "http://"), ("wss://", "https://")):
            if url.startswith(scheme):
                return http + url.removeprefix(scheme)
        return url
