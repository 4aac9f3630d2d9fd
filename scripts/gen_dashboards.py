"""Writes the chart's Grafana dashboards (deploy/helm/voiceagent/files/dashboards/*.json).

    .venv/bin/python scripts/gen_dashboards.py          # write
    .venv/bin/python scripts/gen_dashboards.py --check  # fail when a file is stale

The dashboards are code so that every panel follows the same rules: a `$datasource`
variable, `$__rate_interval` in every rate, one `$namespace` filter. tests/test_helm_promql.py
parses every expression and checks each metric against what the services export.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = (
    Path(__file__).resolve().parents[1] / "deploy" / "helm" / "voiceagent" / "files" / "dashboards"
)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
SERVER_ERRORS = (
    "Unknown|Internal|Unavailable|DataLoss|DeadlineExceeded|ResourceExhausted|Unimplemented"
)

JSON = dict[str, Any]


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 8
    extra: JSON = field(default_factory=dict)


def rate(metric: str, selector: str = "", by: str = "") -> str:
    labels = NS + (f", {selector}" if selector else "")
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{labels}}}[$__rate_interval]))"


def quantile(q: float, histogram: str, selector: str = "", by: str = "") -> str:
    grouping = ", ".join(x for x in (by, "le") if x)
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', selector, grouping)})"


def latency(
    histogram: str, selector: str = "", by: str = "", legend: str = ""
) -> list[tuple[str, str]]:
    prefix = f"{legend} " if legend else ""
    return [
        (quantile(q, histogram, selector, by), f"{prefix}p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> JSON:
    body: JSON = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }
    if panel.kind == "timeseries":
        body["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "lineWidth": 1}
    body.update(panel.extra)
    return body


def _variables(extra: list[JSON]) -> list[JSON]:
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {
                "query": "label_values(grpc_server_handled_total, namespace)",
                "refId": "namespace",
            },
            "definition": "label_values(grpc_server_handled_total, namespace)",
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "current": {},
            "hide": 0,
        },
        *extra,
    ]


def dashboard(
    uid: str,
    title: str,
    description: str,
    rows: list[tuple[str, list[Panel]]],
    variables: list[JSON] | None = None,
) -> JSON:
    panels: list[JSON] = []
    y = 0
    panel_id = 1
    for row_title, row_panels in rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x = 0
                y += 8
            panels.append(_panel(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
        y += 8
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["voiceagent"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": _variables(variables or [])},
        "panels": panels,
    }


def services() -> JSON:
    svc = 'grpc_service=~"$grpc_service"'
    server_errors = f'{svc}, grpc_code=~"{SERVER_ERRORS}"'
    unary = f'{svc}, grpc_type="unary"'
    services_query = (
        'label_values(grpc_server_handled_total{namespace=~"$namespace"}, grpc_service)'
    )
    method_var: JSON = {
        "name": "grpc_service",
        "label": "Service",
        "type": "query",
        "datasource": DATASOURCE,
        "query": {
            "query": services_query,
            "refId": "grpc_service",
        },
        "definition": services_query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "current": {},
        "hide": 0,
    }
    red = [
        Panel(
            "Requests by method",
            [
                (
                    rate("grpc_server_handled_total", svc, "grpc_service, grpc_method"),
                    "{{grpc_method}}",
                )
            ],
            "reqps",
            "Completed calls per second, per method (rate).",
        ),
        Panel(
            "Errors by method and code",
            [
                (
                    rate(
                        "grpc_server_handled_total",
                        f'{svc}, grpc_code!="OK"',
                        "grpc_method, grpc_code",
                    ),
                    "{{grpc_method}} {{grpc_code}}",
                )
            ],
            "reqps",
            "Calls per second that did not end OK (client errors such as InvalidArgument too).",
        ),
        Panel(
            "Server error ratio",
            [
                (
                    f"{rate('grpc_server_handled_total', server_errors, 'grpc_service')}"
                    f" / {rate('grpc_server_handled_total', svc, 'grpc_service')}",
                    "{{grpc_service}}",
                )
            ],
            "percentunit",
            "Share of calls answered with a server-side error code (the alert's ratio).",
        ),
        Panel(
            "Latency p50 / p95 / p99 by method (unary)",
            [
                (
                    quantile(q, "grpc_server_handling_seconds", unary, "grpc_method"),
                    f"{{{{grpc_method}}}} p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            "s",
            width=24,
        ),
    ]
    saturation = [
        Panel(
            "In-flight calls",
            [
                (
                    f"{_sum_counter('grpc_server_started_total', svc, 'grpc_service')}"
                    f" - {_sum_counter('grpc_server_handled_total', svc, 'grpc_service')}",
                    "{{grpc_service}}",
                )
            ],
            "short",
            "Started minus completed calls (Watch streams stay open).",
        ),
        Panel(
            "CPU per pod",
            [(rate("process_cpu_seconds_total", "", "pod"), "{{pod}}")],
            "percentunit",
            "CPU seconds per second of each service process.",
        ),
        Panel(
            "Resident memory per pod",
            [(f"sum by (pod) (process_resident_memory_bytes{{{NS}}})", "{{pod}}")],
            "bytes",
        ),
    ]
    return dashboard(
        "voiceagent-services",
        "Voice agent / Services (RED)",
        "state_svc and context_svc: rate, errors and duration per gRPC method, and saturation.",
        [("Rate, errors, duration", red), ("Saturation", saturation)],
        [method_var],
    )


def _sum_counter(metric: str, selector: str, by: str) -> str:
    return f"sum by ({by}) ({metric}{{{NS}, {selector}}})"


def agent() -> JSON:
    turns = [
        Panel("Turns", [(rate("agent_turns_total"), "turns/s")], "ops", "User turns completed."),
        Panel(
            "Active sessions",
            [(f"sum (agent_sessions_active{{{NS}}})", "sessions")],
            "short",
            "Voice sessions running in all workers.",
        ),
        Panel(
            "Enrichment wait",
            latency("agent_enrich_wait_seconds"),
            "s",
            "Time an LLM request waited for its enrichment; enrichment starts at the final "
            "transcript, so this is usually 0.",
        ),
        Panel("STT latency", latency("agent_stt_latency_seconds"), "s"),
        Panel("LLM time to first token", latency("agent_llm_ttft_seconds"), "s"),
        Panel("TTS time to first byte", latency("agent_tts_ttfb_seconds"), "s"),
    ]
    enrichment = [
        Panel(
            "Enrichment latency (agent side)",
            latency("agent_enrich_seconds"),
            "s",
            "Enrich calls as the agent sees them, bounded by the enrichment budget.",
        ),
        Panel(
            "Enrichment timeouts and failures",
            [
                (rate("agent_enrich_timeouts_total"), "timeouts"),
                (rate("agent_enrich_failures_total", "", "reason"), "failed: {{reason}}"),
            ],
            "ops",
            "Turns that went on without context (fail open).",
        ),
        Panel(
            "Turns without context",
            [
                (
                    f"({rate('agent_enrich_timeouts_total')}"
                    f" + {rate('agent_enrich_failures_total')})"
                    f" / {rate('agent_turns_total')}",
                    "share of turns",
                )
            ],
            "percentunit",
        ),
        Panel(
            "context_svc Enrich latency (server side)",
            latency("context_enrich_seconds"),
            "s",
        ),
        Panel(
            "Partial enrichments",
            [(rate("context_enrich_partial_total"), "lexical only")],
            "ops",
            "Answered without the dense ranking because the deadline was near.",
        ),
    ]
    persistence = [
        Panel(
            "Spool depth",
            [(f"sum by (pod) (agent_spool_pending_events{{{NS}}})", "{{pod}}")],
            "short",
            "Events written to the local spool and not yet acknowledged by state_svc.",
        ),
        Panel(
            "Events",
            [
                (rate("agent_events_queued_total"), "queued"),
                (rate("agent_events_sent_total"), "sent"),
                (rate("agent_events_spooled_total"), "spooled"),
                (rate("agent_events_replayed_total"), "replayed"),
            ],
            "ops",
        ),
        Panel(
            "Backend errors",
            [(rate("agent_backend_errors_total", "", "operation"), "{{operation}}")],
            "ops",
        ),
        Panel(
            "Open circuits",
            [(f"max by (target) (agent_circuit_open{{{NS}}})", "{{target}}")],
            "short",
            "1 while reads to the target are short-circuited.",
        ),
        Panel(
            "Session errors",
            [
                (
                    rate("agent_session_errors_total", "", "source, recoverable"),
                    "{{source}} recoverable={{recoverable}}",
                )
            ],
            "ops",
        ),
        Panel(
            "Invalid room or participant metadata",
            [(rate("agent_metadata_invalid_total", "", "kind"), "{{kind}}")],
            "ops",
        ),
    ]
    recovery = [
        Panel(
            "Recoveries by outcome",
            [(rate("recovery_redispatch_total", "", "outcome"), "{{outcome}}")],
            "ops",
            "Dispatches of the agent to a call whose job died: recovered (the new job joined), "
            "dispatch_failed and join_timeout (tried again), gave_up (the call was given up).",
        ),
        Panel(
            "Time without an agent p50 / p95",
            [
                (quantile(q, "recovery_agent_absent_seconds"), f"p{int(q * 100)}")
                for q in (0.5, 0.95)
            ],
            "s",
            "From the lost job's last sign of life until the new job joined the room.",
        ),
        Panel(
            "Lost jobs noticed, and why some needed nothing",
            [
                (rate("recovery_suspected_total", "", "source"), "noticed: {{source}}"),
                (rate("recovery_skipped_total", "", "reason"), "skipped: {{reason}}"),
            ],
            "ops",
            "How a loss was noticed (Attend stream, webhook, reconcile) and the checks that "
            "found no recovery needed (conversation ended, user gone, agent present, ...).",
        ),
        Panel(
            "Attended jobs",
            [(f"sum by (pod) (recovery_attended_jobs{{{NS}}})", "{{pod}}")],
            "short",
            "Agent jobs holding an Attend stream, per recovery_svc replica.",
            width=12,
        ),
        Panel(
            "Webhooks from livekit-server",
            [(rate("recovery_webhooks_total", "", "result"), "{{result}}")],
            "ops",
            "accepted, or refused: bad_signature, replayed, stale, malformed.",
            width=12,
        ),
    ]
    return dashboard(
        "voiceagent-agent",
        "Voice agent / Agent workers",
        "Turn latency, enrichment latency and timeouts, the event spool and backend health, "
        "and crash recovery (recovery_svc).",
        [
            ("Turns", turns),
            ("Enrichment", enrichment),
            ("Persistence", persistence),
            ("Crash recovery", recovery),
        ],
    )


def storage() -> JSON:
    store = [
        Panel(
            "Store operation latency p95",
            [
                (
                    quantile(0.95, "state_store_operation_seconds", "", "operation, backend"),
                    "{{operation}} ({{backend}})",
                )
            ],
            "s",
            width=12,
        ),
        Panel(
            "Store errors",
            [
                (
                    rate("state_store_errors_total", "", "operation, backend"),
                    "{{operation}} ({{backend}})",
                )
            ],
            "ops",
            width=12,
        ),
        Panel(
            "Events appended by type",
            [(rate("state_events_appended_total", "", "type"), "{{type}}")],
            "ops",
            width=12,
        ),
        Panel(
            "Duplicate events (idempotent retries)",
            [(rate("state_events_duplicate_total"), "duplicates")],
            "ops",
            width=12,
        ),
        Panel(
            "Retention and deletions",
            [
                (rate("state_retention_conversations_deleted_total"), "conversations expired"),
                (rate("state_user_deletions_total"), "users deleted"),
            ],
            "ops",
            width=12,
        ),
    ]
    feed = [
        Panel(
            "Feed lag (seconds)",
            [(f"max by (pod) (context_feed_lag_seconds{{{NS}}})", "{{pod}}")],
            "s",
            "Age of the oldest change in state_svc not yet applied to the memory index.",
        ),
        Panel(
            "Feed lag (changes)",
            [(f"max by (pod) (context_feed_lag_events{{{NS}}})", "{{pod}}")],
            "short",
        ),
        Panel(
            "Feed changes applied and errors",
            [
                (rate("context_feed_changes_applied_total", "", "change"), "{{change}}"),
                (rate("context_feed_errors_total"), "errors"),
            ],
            "ops",
        ),
        Panel(
            "Index entries",
            [(f"sum by (pod, source) (context_index_entries{{{NS}}})", "{{pod}} {{source}}")],
            "short",
        ),
        Panel(
            "Index vector memory",
            [(f"sum by (pod) (context_index_vector_bytes{{{NS}}})", "{{pod}}")],
            "bytes",
        ),
        Panel(
            "Embeddings",
            [
                (rate("context_embeddings_total", "", "path"), "{{path}}"),
                (rate("context_embedding_errors_total"), "errors"),
            ],
            "ops",
        ),
    ]
    return dashboard(
        "voiceagent-storage",
        "Voice agent / Store and feed",
        "state_svc's store and context_svc's index: operation latency, errors, feed lag.",
        [("state_svc store", store), ("context_svc feed and index", feed)],
    )


DASHBOARDS = {
    "voiceagent-services.json": services,
    "voiceagent-agent.json": agent,
    "voiceagent-storage.json": storage,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when a written file is stale")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(
            "stale dashboards (run scripts/gen_dashboards.py):", *stale, sep="\n  ", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
