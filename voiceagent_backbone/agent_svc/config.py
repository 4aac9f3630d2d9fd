"""agent_svc settings: environment variables prefixed AGENT_ (LiveKit and OpenAI keep theirs).

LiveKit's own variables (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET) and
OPENAI_API_KEY keep their usual names, so an existing LiveKit deployment's environment works
unchanged.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voiceagent_backbone.servicekit.config import secret_value


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENT_", extra="ignore", frozen=True)

    # Explicit dispatch: rooms get this agent only when a dispatch names it.
    name: str = Field(default="voiceagent", min_length=1, max_length=128)
    # The tenant whose data this worker writes; the services take it from the token.
    tenant: str = Field(default="default", min_length=1, max_length=128)

    livekit_url: str = Field(default="", validation_alias=AliasChoices("LIVEKIT_URL"))
    livekit_api_key: str = Field(default="", validation_alias=AliasChoices("LIVEKIT_API_KEY"))
    livekit_api_secret: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("LIVEKIT_API_SECRET")
    )

    # Backend services. Tokens are minted from the HS256 key the services verify with.
    state_target: str = "127.0.0.1:50051"
    context_target: str = "127.0.0.1:50052"
    # recovery_svc: each job holds a stream there, so that the agent is dispatched to the call
    # again if the job dies. Empty: no recovery (a dead job leaves a silent room).
    recovery_target: str | None = None
    # Empty: no enrichment (the agent still persists everything to state_svc).
    # Credentials, least privilege first: a token file (the pod's projected
    # service-account token, or a token for this agent's tenant from a mounted Secret),
    # read again when it changes; or, on one machine, the services' shared HS256 key,
    # from which the agent mints its own tokens for AGENT_TENANT.
    auth_token_file: Path | None = None
    auth_jwt_key: SecretStr | None = None
    auth_jwt_key_file: Path | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None

    # Providers: OpenAI or any server speaking its API (base URL). Without a key the
    # terminal chat uses the offline responder; the worker needs one.
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AGENT_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = None
    llm_model: str = "gpt-4.1-mini"
    stt_model: str = "gpt-4o-mini-transcribe"
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "ash"
    default_language: str = "en"

    # Worker.
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8081, ge=0, le=65535)
    # Metrics are served on the health host (one listener address for the worker).
    # -1 disables the metrics endpoint.
    metrics_port: int = Field(default=9103, ge=-1, le=65535)
    # How long SIGTERM waits for running jobs; the chart's grace period is this plus a margin.
    drain_timeout_s: int = Field(default=300, ge=1)
    # Above this CPU load the worker stops taking jobs; the HPA target sits below it.
    load_threshold: float = Field(default=0.7, gt=0, le=1)
    num_idle_processes: int | None = Field(default=None, ge=0)
    # The load the worker reports to LiveKit: the machine's CPU by default. With max_jobs,
    # running jobs / max_jobs instead: a capacity that does not move with what else runs on
    # the machine (livekit-server gives no job to a worker whose load is at its target).
    max_jobs: int | None = Field(default=None, ge=1)

    # State layers.
    history_window: int = Field(default=20, ge=2, le=500)
    # Turns of earlier history pulled into the chat context on resume.
    resume_turns: int = Field(default=20, ge=0, le=500)

    # BackendClient.
    spool_dir: Path = Path(".run/agent-spool")
    # fsync the spool before each send. Off by default: a record is in the kernel once
    # written, which survives the process being killed, and in Kubernetes the spool is an
    # emptyDir that does not outlive its node anyway. Measured: with it on, handlers' writes
    # wait behind the fsync of the same file (p99 hand-off 0.4 ms instead of 0.04 ms).
    spool_fsync: bool = False
    queue_max_events: int = Field(default=10_000, ge=10)
    batch_max_events: int = Field(default=64, ge=1, le=500)
    # Oldest-event age that triggers a send when a batch is not full yet.
    batch_linger_ms: float = Field(default=20.0, ge=0)
    send_timeout_s: float = Field(default=5.0, gt=0)
    send_retry_max_s: float = Field(default=5.0, gt=0)
    # Hard budget for context enrichment on the turn path; every timeout is counted.
    enrich_budget_ms: float = Field(default=200.0, gt=0, le=10_000)
    enrich_max_items: int = Field(default=6, ge=1, le=50)
    enrich_token_budget: int = Field(default=600, ge=16, le=32_000)
    # Reads at session start (history, snapshot, profile).
    read_timeout_s: float = Field(default=2.0, gt=0)
    # Circuit breaker for reads: open after this many consecutive failures, for this long.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_open_s: float = Field(default=5.0, gt=0)
    # How long the shutdown callback may spend flushing queue and spool.
    flush_timeout_s: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    otlp_endpoint: str | None = None
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # Transcripts and prompts in exported span attributes (off: they are user data).
    trace_allow_pii: bool = False

    @model_validator(mode="after")
    def _one_key_source(self) -> AgentSettings:
        sources = [
            name
            for name, value in (
                ("AGENT_AUTH_TOKEN_FILE", self.auth_token_file),
                ("AGENT_AUTH_JWT_KEY", self.auth_jwt_key),
                ("AGENT_AUTH_JWT_KEY_FILE", self.auth_jwt_key_file),
            )
            if value is not None
        ]
        if len(sources) > 1:
            raise ValueError(f"set one of {' or '.join(sources)}, not several")
        return self

    def jwt_key(self) -> str | None:
        return secret_value(self.auth_jwt_key, self.auth_jwt_key_file)

    def openai_key(self) -> str | None:
        if self.openai_api_key is None or not self.openai_api_key.get_secret_value():
            return None
        return self.openai_api_key.get_secret_value()
