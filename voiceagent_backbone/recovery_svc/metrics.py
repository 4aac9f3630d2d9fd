"""recovery_svc's metrics, beside servicekit's RPC metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTENDED_JOBS = Gauge(
    "recovery_attended_jobs", "Agent jobs holding an Attend stream to this replica."
)
SUSPECTED = Counter(
    "recovery_suspected_total",
    "Agent jobs suspected lost, by how the loss was noticed.",
    ("source",),
)
SKIPPED = Counter(
    "recovery_skipped_total",
    "Suspected losses that needed no recovery, by reason.",
    ("reason",),
)
REDISPATCH = Counter(
    "recovery_redispatch_total",
    "Recovery attempts by outcome: recovered (the new job joined), dispatch_failed, "
    "join_timeout (retried while attempts remain), gave_up.",
    ("outcome",),
)
AGENT_ABSENT_SECONDS = Histogram(
    "recovery_agent_absent_seconds",
    "Time a call was without an agent: from the lost job's last sign of life until the "
    "new job joined the room.",
    buckets=(0.5, 1, 1.5, 2, 3, 4, 6, 8, 10, 15, 20, 30, 60, 120),
)
WEBHOOKS = Counter(
    "recovery_webhooks_total",
    "Webhooks received from livekit-server, by result (accepted, bad_signature, replayed, "
    "stale, malformed).",
    ("result",),
)
