"""context_svc settings: environment variables prefixed CONTEXT_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from voiceagent_backbone.servicekit.config import ServiceSettings


class ContextSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CONTEXT_", extra="ignore", frozen=True)

    port: int = Field(default=50052, ge=0, le=65535)
    metrics_port: int = Field(default=9102, ge=-1, le=65535)

    # The index file (vectors, knowledge, facts, feed cursor): a cache of what state_svc
    # keeps, rebuilt from its feed when lost (an emptyDir is enough).
    index_path: Path = Path(".run/context.sqlite3")

    # state_svc's change feed. The follower's token needs the scopes state.read and
    # state.feed; without one it is minted from this service's own JWT key.
    state_target: str = "127.0.0.1:50051"
    state_token: SecretStr | None = None
    state_token_file: Path | None = None
    # Set to false to run without memory (knowledge and facts only).
    follow_feed: bool = True
    feed_batch: int = Field(default=256, ge=1, le=1000)
    feed_retry_max_s: float = Field(default=5.0, gt=0)

    # Retrieval. "minilm": the local model (default); "openai": OpenAI's embeddings API or
    # any server speaking it (changing the backend re-embeds the stored index at start-up).
    embedding_backend: Literal["minilm", "openai"] = "minilm"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    openai_embedding_model: str = "text-embedding-3-small"
    openai_embedding_dimensions: int = Field(default=512, ge=16, le=4096)
    openai_timeout_s: float = Field(default=10.0, gt=0)
    # onnxruntime threads per embedding call for the index (2 measured fastest on a 2-core
    # machine for batches).
    embedding_threads: int = Field(default=2, ge=1, le=16)
    # The same for Enrich's query (a second model session with its own threads). One: a
    # query is a few tokens, and with another busy process on the 2 cores, 2 threads took a
    # query's p95 from 3.8 ms to 21 ms while 1 thread stayed at 6.5 ms (it waits for no
    # second core). The second session costs about 200 MB of memory (measured RSS 319 ->
    # 524 MB); equal to embedding_threads, one session serves both.
    query_embedding_threads: int = Field(default=1, ge=1, le=16)
    lexical_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    # Enrich leaves out items whose relevance (index.py: three quarters cosine, a quarter
    # keyword coverage) is below this, so a question nothing answers gets no context; 0 turns
    # it off. Measured with `make bench-context` on LoCoMo dev (760 questions; 40 unrelated
    # ones asked of each of its 5 users): recall@10 0.755 with or without it, and 73 % of the
    # unrelated questions get nothing (memories of 370-680 turns always hold something
    # vaguely alike; a small memory turns "What is the weather on Mars?" away well below
    # it). Up to 0.21 recall stays; 0.29 would turn away 97 % with recall 0.758, but also
    # "Ana is vegetarian." for a dinner with meat (0.22) and a one-passage FAQ's parking
    # answer (0.27), both checked in tests/test_context_service.py. Made for
    # all-MiniLM-L6-v2: measure again for another model (the bench's table per floor).
    min_relevance: float = Field(default=0.2, ge=0.0, le=1.0)
    # Enrich never takes longer than this, whatever the caller's deadline.
    enrich_max_s: float = Field(default=1.0, gt=0)
    # IngestDocument embeds chunks until this long after the call's start (finishing the
    # batch of 16 under way) and answers; the rest are embedded in the background, found by
    # keyword meanwhile.
    # Embedding costs about 20 ms per distinct chunk on 2 cores: 2 s covers a document of
    # about 100 chunks, while a 512 KiB one (1,280) would take half a minute or more.
    ingest_sync_budget_s: float = Field(default=2.0, ge=0)

    # Input bounds.
    chunk_words: int = Field(default=90, ge=10, le=400)
    max_document_bytes: int = Field(default=512 * 1024, ge=1024)
    max_chunks_per_document: int = Field(default=2000, ge=1)
    max_facts_per_user: int = Field(default=500, ge=1)
    max_fact_bytes: int = Field(default=1000, ge=16)
    max_query_bytes: int = Field(default=4096, ge=16)

    @model_validator(mode="after")
    def _openai_key(self) -> ContextSettings:
        if self.embedding_backend == "openai" and self.openai_api_key is None:
            raise ValueError("CONTEXT_EMBEDDING_BACKEND=openai needs CONTEXT_OPENAI_API_KEY")
        return self

    @model_validator(mode="after")
    def _facts_fit_in_a_reply(self) -> ContextSettings:
        # ListFacts answers every fact of a user in one message.
        if self.max_facts_per_user * (self.max_fact_bytes + 64) > self.max_message_bytes // 2:
            raise ValueError(
                "CONTEXT_MAX_FACTS_PER_USER x CONTEXT_MAX_FACT_BYTES must fit in half of "
                "CONTEXT_MAX_MESSAGE_BYTES (ListFacts returns them in one reply)"
            )
        return self
