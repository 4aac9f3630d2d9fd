"""state_svc settings: environment variables prefixed STATE_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from voiceagent_backbone.servicekit.config import ServiceSettings

# What a document's message holds beside its text: metadata (16 KiB), title, ids, framing.
DOCUMENT_HEADROOM_BYTES = 64 * 1024


class StateSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="STATE_", extra="ignore", frozen=True)

    port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9101, ge=-1, le=65535)

    # Storage: MongoDB when a URI is set, otherwise the embedded SQLite file.
    mongodb_uri: SecretStr | None = None
    mongodb_database: str = "voiceagent"
    # "majority" survives a primary failover; "1" is faster on a single node.
    mongodb_write_concern: str = "majority"
    mongodb_timeout_ms: int = Field(default=5000, ge=100)
    # At start-up, how long to wait for the database to answer before exiting (an
    # orchestrator starts the service again); a wrong URI is then said within seconds.
    mongodb_start_timeout_ms: int = Field(default=3000, ge=100)
    sqlite_path: Path = Path(".run/state.sqlite3")
    # FULL: every acknowledged append survives a power cut; NORMAL: survives a crash.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    # Retention: conversations inactive longer than this are removed (0 keeps them forever).
    default_retention_s: int = Field(default=90 * 24 * 3600, ge=0)
    retention_sweep_interval_s: float = Field(default=60.0, gt=0)
    # MongoDB TTL indexes remove anything the sweeper missed this long after expiry.
    ttl_backstop_s: int = Field(default=24 * 3600, ge=0)

    # Change feed: how often Watch looks for writes of other replicas.
    feed_poll_interval_s: float = Field(default=0.25, gt=0)
    # The replica's feed hub keeps this much of the most recent feed in memory; streams
    # further behind read the database, this many at a time.
    feed_window_bytes: int = Field(default=32 * 1024 * 1024, ge=64 * 1024)
    feed_catch_up_readers: int = Field(default=4, ge=1)
    # A Watch consumer that does not take a reply for this long is cut off
    # (RESOURCE_EXHAUSTED; it resumes from its last cursor), so it holds no memory for ever.
    watch_send_timeout_s: float = Field(default=30.0, gt=0)
    # An idle stream sends an empty reply this often (dead consumers show up on the write).
    watch_heartbeat_s: float = Field(default=15.0, gt=0)

    # Input bounds.
    max_batch_events: int = Field(default=500, ge=1)
    max_text_bytes: int = Field(default=32 * 1024, ge=1)
    max_payload_bytes: int = Field(default=16 * 1024, ge=2)
    max_payload_depth: int = Field(default=8, ge=1)
    max_snapshot_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Knowledge: the text of one document; how many facts one user may have.
    max_document_bytes: int = Field(default=512 * 1024, ge=1)
    max_facts_per_user: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _document_fits_in_a_message(self) -> StateSettings:
        # PutDocument and GetDocument carry the whole text, with up to 16 KiB of metadata
        # and the title beside it.
        room = self.max_message_bytes - DOCUMENT_HEADROOM_BYTES
        if self.max_document_bytes > room:
            raise ValueError(
                f"STATE_MAX_DOCUMENT_BYTES ({self.max_document_bytes}) must be at most "
                f"STATE_MAX_MESSAGE_BYTES - {DOCUMENT_HEADROOM_BYTES} ({room}): a document "
                "is stored and read in one message"
            )
        return self
