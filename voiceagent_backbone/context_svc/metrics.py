"""context_svc's own metrics (the RPC metrics come from servicekit)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ENRICH_SECONDS = Histogram(
    "context_enrich_seconds",
    "Time to rank and render context for one Enrich call (inside the handler).",
    buckets=(0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.1, 0.25, 1.0),
)
ENRICH_PARTIAL = Counter(
    "context_enrich_partial_total",
    "Enrich calls answered without dense ranking because the caller's deadline was near.",
)
EMBEDDINGS = Counter(
    "context_embeddings_total", "Texts embedded, by path (query or index).", ["path"]
)
EMBEDDING_ERRORS = Counter(
    "context_embedding_errors_total", "Failed calls to the embedding backend."
)
FEED_APPLIED = Counter(
    "context_feed_changes_applied_total",
    "Memory index changes applied from state_svc's feed (turns added, turns removed).",
    ["change"],
)
FEED_ERRORS = Counter(
    "context_feed_errors_total", "Failures following state_svc's feed (then retried)."
)
FEED_LAG_EVENTS = Gauge(
    "context_feed_lag_events", "Changes stored in state_svc and not yet applied (estimate)."
)
FEED_LAG_SECONDS = Gauge(
    "context_feed_lag_seconds", "Age of the oldest change not yet applied (0 when caught up)."
)
INDEXED_TURNS = Gauge("context_indexed_turns", "Conversation turns in the memory index.")
INDEX_ENTRIES = Gauge(
    "context_index_entries", "Entries in the in-memory index, by source.", ["source"]
)
INDEX_BYTES = Gauge(
    "context_index_vector_bytes", "Memory held by the index's vectors and per-row arrays."
)
KNOWLEDGE_PENDING_CHUNKS = Gauge(
    "context_knowledge_pending_chunks",
    "Knowledge chunks stored and found by keyword, waiting for the background embedding.",
)
SHARED_VECTORS = Counter(
    "context_shared_vectors_total",
    "Turn vectors by where this replica got them: loaded (stored in state_svc by any "
    "replica), computed (claimed and embedded here, then stored), waited (held by another "
    "replica while it embedded them; counted per wait).",
    ("outcome",),
)
