"""state_svc's own metrics, beside servicekit's RPC metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge, Histogram

STORE_OPERATION_SECONDS = Histogram(
    "state_store_operation_seconds",
    "Latency of state_svc store operations.",
    ("operation", "backend"),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STORE_ERRORS = Counter(
    "state_store_errors_total",
    "Store operations that failed because the database failed or was unreachable.",
    ("operation", "backend"),
)
EVENTS_APPENDED = Counter(
    "state_events_appended_total",
    "Events stored, by event type (duplicates of stored events are not counted).",
    ("type",),
)
EVENTS_DUPLICATE = Counter(
    "state_events_duplicate_total",
    "Events re-sent by clients that were already stored (idempotent retries).",
)
RETENTION_DELETED = Counter(
    "state_retention_conversations_deleted_total",
    "Conversations removed because their tenant's retention period ran out.",
)
USER_DELETIONS = Counter(
    "state_user_deletions_total",
    "DeleteUserData calls that removed a user's data.",
)
EMBEDDING_CLAIMS = Counter(
    "state_embedding_claims_total",
    "Keys claimed by ClaimEmbeddings, by outcome: stored (the vector came back), owned (the"
    " caller computes it), held (another holder computes it), gone (its conversation or"
    " document no longer exists).",
    ("outcome",),
)
EMBEDDINGS_STORED = Counter(
    "state_embeddings_stored_total",
    "Vectors stored by PutEmbeddings (puts of keys stored already are not counted).",
)
EMBEDDINGS_DROPPED = Counter(
    "state_embeddings_dropped_total",
    "Vectors PutEmbeddings did not store because their conversation or document no longer"
    " exists (a replica behind the feed).",
)
KNOWLEDGE_CHANGES = Counter(
    "state_knowledge_changes_total",
    "Knowledge writes announced on the feed, by kind: document_put, document_deleted,"
    " facts_put, fact_deleted (puts that changed nothing are not counted).",
    ("kind",),
)


FEED_WINDOW_CHANGES = Gauge(
    "state_feed_window_changes", "Recent changes this replica's feed hub holds in memory."
)
FEED_CATCH_UP_READS = Counter(
    "state_feed_catch_up_reads_total",
    "Feed reads of Watch streams behind the hub's window (they read the database).",
)
WATCH_STREAMS = Gauge("state_watch_streams", "Watch streams open on this replica.")
WATCH_CUT_OFF = Counter(
    "state_watch_cut_off_total", "Watch streams ended because the consumer stopped reading."
)


@asynccontextmanager
async def timed(operation: str, backend: str) -> AsyncIterator[None]:
    start = time.perf_counter()
    try:
        yield
    except Exception:
        STORE_ERRORS.labels(operation, backend).inc()
        raise
    finally:
        STORE_OPERATION_SECONDS.labels(operation, backend).observe(time.perf_counter() - start)
