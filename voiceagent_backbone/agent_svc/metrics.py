"""The agent's Prometheus metrics.

Job code runs in child processes, so the worker runs prometheus_client in multiprocess mode:
`PROMETHEUS_MULTIPROC_DIR` must be set before this module is imported (agent_svc.__main__
does it) and the worker's metrics endpoint aggregates every process's files.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5)
_PROVIDER = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

TURNS = Counter("agent_turns_total", "User messages committed to the chat context.")
ENRICH_WAIT_SECONDS = Histogram(
    "agent_enrich_wait_seconds",
    "Time an LLM request waited for its enrichment (0 when it was ready before the request).",
    buckets=_FAST,
)
ENRICH_SECONDS = Histogram(
    "agent_enrich_seconds", "Enrichment calls to context_svc, including failures.", buckets=_FAST
)
ENRICH_TIMEOUTS = Counter(
    "agent_enrich_timeouts_total", "Enrichment calls cut off by the budget (turn went on)."
)
ENRICH_FAILURES = Counter(
    "agent_enrich_failures_total",
    "Enrichment skipped or failed for another reason (turn went on).",
    ["reason"],
)
EVENTS_QUEUED = Counter("agent_events_queued_total", "Writes handed to the BackendClient.")
EVENTS_SENT = Counter("agent_events_sent_total", "Writes acknowledged by state_svc.")
EVENTS_SPOOLED = Counter("agent_events_spooled_total", "Writes appended to the local spool.")
EVENTS_REPLAYED = Counter(
    "agent_events_replayed_total", "Writes replayed from a spool left by an earlier process."
)
EVENTS_REJECTED = Counter(
    "agent_events_rejected_total",
    "Writes state_svc refused as invalid; kept in the spool folder's rejected file.",
)
SPOOL_PENDING = Gauge(
    "agent_spool_pending_events",
    "Writes in the spool not yet acknowledged by state_svc.",
    multiprocess_mode="livesum",
)
BACKEND_ERRORS = Counter(
    "agent_backend_errors_total", "Failed calls to state_svc or context_svc.", ["operation"]
)
CIRCUIT_OPEN = Gauge(
    "agent_circuit_open",
    "1 while the circuit breaker to a service is open.",
    ["target"],
    multiprocess_mode="livemax",
)
METADATA_INVALID = Counter(
    "agent_metadata_invalid_total",
    "Room or participant metadata that was not valid JSON of the expected shape (ignored).",
    ["kind"],
)
SESSION_ERRORS = Counter(
    "agent_session_errors_total",
    "Errors reported by the session, by source and recoverability.",
    ["source", "recoverable"],
)
SESSIONS_ACTIVE = Gauge(
    "agent_sessions_active", "Agent sessions running now.", multiprocess_mode="livesum"
)
SESSIONS = Counter("agent_sessions_total", "Agent sessions started, by kind.", ["kind"])
STT_LATENCY = Histogram(
    "agent_stt_latency_seconds",
    "From the end of the user's speech to its transcript, per user turn.",
    buckets=_PROVIDER,
)
LLM_TTFT = Histogram(
    "agent_llm_ttft_seconds",
    "LLM time to first token, per agent reply.",
    buckets=_PROVIDER,
)
TTS_TTFB = Histogram(
    "agent_tts_ttfb_seconds",
    "TTS time to first audio (after the first text was sent), per agent reply.",
    buckets=_PROVIDER,
)
EOU_DELAY = Histogram(
    "agent_end_of_utterance_delay_seconds",
    "From the end of the user's speech to the end-of-turn decision, per user turn.",
    buckets=_PROVIDER,
)

_REASONS = ("error", "circuit_open", "no_user")
_OPERATIONS = (
    "append_events",
    "create_conversation",
    "end_conversation",
    "save_snapshot",
    "upsert_user",
    "get_history",
    "get_snapshot",
    "enrich",
)
_SOURCES = ("llm", "stt", "tts", "other")


def initialise() -> None:
    """Create every labelled series at zero so dashboards and rate() see them from the start."""
    for reason in _REASONS:
        ENRICH_FAILURES.labels(reason)
    for operation in _OPERATIONS:
        BACKEND_ERRORS.labels(operation)
    for target in ("state", "context"):
        CIRCUIT_OPEN.labels(target).set(0)
    for kind in ("room", "participant"):
        METADATA_INVALID.labels(kind)
    for source in _SOURCES:
        for recoverable in ("true", "false"):
            SESSION_ERRORS.labels(source, recoverable)
    for kind in ("new", "resumed"):
        SESSIONS.labels(kind)
