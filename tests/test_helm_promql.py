"""Dashboards, alerts and KEDA queries: real PromQL, over metrics the services really export.

Every expression the chart ships (PrometheusRule rules, Grafana panel targets and variable
queries, ScaledObject Prometheus triggers) is parsed with promql-parser. Each metric it names
must appear in a scrape of the running services, and each label it matches or groups by must
be one those series carry (or one Prometheus adds to every target). state_svc and
context_svc run as processes and get a short workload first; the agent worker's part runs
against livekit-server and checks the expressions that use `agent_*` metrics, and
recovery_svc's part (also against livekit-server) those that use `recovery_*` metrics.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import helm
from tests.support.helm import CHART, of_kind
from tests.support.livekit import LiveKitServer
from tests.support.processes import ROOT, ChildProcess, free_port, wait_until
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as spb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.context_svc import metrics as context_metrics
from voiceagent_backbone.recovery_svc import metrics as recovery_metrics
from voiceagent_backbone.servicekit import auth
from voiceagent_backbone.servicekit import metrics as servicekit_metrics
from voiceagent_backbone.servicekit.ids import uuid7
from voiceagent_backbone.state_svc import metrics as state_metrics

pytestmark = pytest.mark.tools

# Labels Prometheus (through the ServiceMonitors) puts on every scraped series.
TARGET_LABELS = frozenset(
    {"namespace", "pod", "job", "instance", "service", "container", "endpoint"}
)
# Grafana's built-in interval variables, replaced before parsing.
GRAFANA_INTERVALS = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")


# ------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expression:
    where: str
    promql: str


def _label_values_query(query: str) -> str:
    """Grafana's `label_values(selector, label)` as the selector it queries."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*", query)
    assert match, f"unsupported variable query {query!r}"
    return match.group(1)


def _dashboard_expressions(name: str, board: dict[str, Any]) -> list[Expression]:
    found: list[Expression] = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found.append(Expression(f"{name} ${variable['name']}", _label_values_query(text)))
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found.append(Expression(f"{name} '{panel['title']}' {target['refId']}", target["expr"]))
    return found


def dashboards(manifests: list[helm.Manifest]) -> dict[str, dict[str, Any]]:
    boards: dict[str, dict[str, Any]] = {}
    for config_map in of_kind(manifests, "ConfigMap"):
        if config_map["metadata"]["labels"].get("grafana_dashboard") != "1":
            continue
        for key, text in config_map["data"].items():
            boards[key] = json.loads(text)
    return boards


def chart_expressions() -> list[Expression]:
    production = helm.render_ci("production-values.yaml")
    found: list[Expression] = []
    for rule_set in of_kind(production, "PrometheusRule"):
        for group in rule_set["spec"]["groups"]:
            for rule in group["rules"]:
                found.append(Expression(f"alert {rule['alert']}", rule["expr"]))
    for name, board in dashboards(production).items():
        found += _dashboard_expressions(name, board)
    for scaled in of_kind(helm.render_ci("keda-values.yaml"), "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                found.append(
                    Expression(
                        f"ScaledObject {scaled['metadata']['name']}", trigger["metadata"]["query"]
                    )
                )
    return found


@pytest.fixture(scope="module")
def expressions() -> list[Expression]:
    return chart_expressions()


def parse(expression: Expression) -> promql_parser.Expr:
    text = GRAFANA_INTERVALS.sub("5m", expression.promql)
    try:
        return promql_parser.parse(text)
    except ValueError as error:
        raise AssertionError(f"{expression.where}: {error}\n{expression.promql}") from error


def _selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def _metric_name(selector: promql_parser.VectorSelector) -> str:
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    raise AssertionError(f"selector without a metric name: {selector}")


def metric_names(expr: promql_parser.Expr) -> set[str]:
    return {_metric_name(s) for s in _selectors(expr)}


def _groupings(expr: promql_parser.Expr) -> list[tuple[list[str], set[str]]]:
    """(grouping labels, metrics aggregated) for every `by (...)` aggregation."""
    found: list[tuple[list[str], set[str]]] = []

    def visit(node: Any) -> None:
        if (
            isinstance(node, promql_parser.AggregateExpr)
            and node.modifier is not None
            and node.modifier.type == promql_parser.AggModifierType.By
        ):
            found.append((list(node.modifier.labels), metric_names(node.expr)))

    promql_parser.walk(expr, visit)
    return found


# ------------------------------------------------------------------------------ scrapes


@dataclass
class Exported:
    """What one or more /metrics scrapes expose: series names and their label names."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    # Series with no sample yet (a labelled metric never used): their declared labels.
    declared: dict[str, set[str]] = field(default_factory=dict)

    def add_scrape(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            names = {
                "counter": [f"{family.name}_total"],
                "histogram": [
                    f"{family.name}_bucket",
                    f"{family.name}_sum",
                    f"{family.name}_count",
                ],
                "summary": [family.name, f"{family.name}_sum", f"{family.name}_count"],
            }.get(family.type, [family.name])
            for name in names:
                self.labels.setdefault(name, set())
            for sample in family.samples:
                self.labels.setdefault(sample.name, set()).update(sample.labels)

    def label_names(self, metric: str) -> set[str]:
        return self.labels.get(metric, set()) | self.declared.get(metric, set())

    def problems(self, expression: Expression) -> list[str]:
        """What in the expression these scrapes do not export."""
        expr = parse(expression)
        problems: list[str] = []
        for selector in _selectors(expr):
            name = _metric_name(selector)
            if name not in self.labels:
                problems.append(f"metric {name} is not exported")
                continue
            for matcher in selector.matchers.matchers:
                label = matcher.name
                if label != "__name__" and label not in TARGET_LABELS | self.label_names(name):
                    problems.append(f"{name} has no label {label}")
        for labels, metrics in _groupings(expr):
            known = set(TARGET_LABELS)
            for name in metrics:
                known |= self.label_names(name)
            problems += [
                f"by ({label}): none of {sorted(metrics)} has it"
                for label in labels
                if label not in known
            ]
        return problems


def _declared_service_labels(
    modules: tuple[Any, ...] = (servicekit_metrics, state_metrics, context_metrics),
) -> dict[str, set[str]]:
    """Label names declared on the services' own collectors (for unsampled series)."""
    declared: dict[str, set[str]] = {}
    for module in modules:
        for value in vars(module).values():
            names = getattr(value, "_labelnames", None)
            if names is None or not hasattr(value, "_name"):
                continue
            kind = getattr(value, "_type", "")
            base: str = value._name
            series = {
                "counter": [f"{base}_total"],
                "histogram": [f"{base}_bucket", f"{base}_sum", f"{base}_count"],
            }.get(kind, [base])
            for name in series:
                declared[name] = set(names)
    return declared


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text: str = reply.read().decode()
    return text


@dataclass
class Services:
    state_target: str
    context_target: str
    state_metrics_url: str
    context_metrics_url: str
    jwt_key: str
    exported: Exported


def _start(
    module: str, prefix: str, env: dict[str, str], log: Path
) -> tuple[ChildProcess, int, int]:
    port, metrics_port = free_port(), free_port()
    process = ChildProcess(
        [sys.executable, "-m", f"voiceagent_backbone.{module}"],
        log,
        {
            f"{prefix}_PORT": str(port),
            f"{prefix}_METRICS_PORT": str(metrics_port),
            f"{prefix}_GRACE_PERIOD_S": "1",
            **env,
        },
    )
    process.wait_for_port(port, timeout_s=90, what=module)
    process.wait_for_port(metrics_port, timeout_s=10, what=f"{module} metrics")
    return process, port, metrics_port


def _metadata(jwt_key: str, scopes: str) -> tuple[tuple[str, str], ...]:
    token = auth.mint_token(jwt_key, tenant="tenant-a", scopes=scopes.split())
    return (("authorization", f"Bearer {token}"),)


def _workload(state_port: int, context_port: int, jwt_key: str) -> None:
    """A few calls of every kind the dashboards chart: success, duplicates, errors."""
    state_md = _metadata(jwt_key, "state.read state.write")
    context_md = _metadata(jwt_key, "context.read context.write")
    with grpc.insecure_channel(f"127.0.0.1:{state_port}") as channel:
        stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
        conversation = stub.CreateConversation(
            spb.CreateConversationRequest(room_name="room-1", user_ids=["ada"]),
            metadata=state_md,
            timeout=10,
        ).conversation
        events = [
            spb.Event(
                event_id=uuid7(),
                type=spb.EVENT_TYPE_USER_MESSAGE,
                role=spb.ROLE_USER,
                text="I park my bike at the station every morning.",
            ),
            spb.Event(
                event_id=uuid7(),
                type=spb.EVENT_TYPE_AGENT_MESSAGE,
                role=spb.ROLE_AGENT,
                text="Good to know, I will remember the station.",
            ),
        ]
        request = spb.AppendEventsRequest(
            conversation_id=conversation.conversation_id, events=events
        )
        stub.AppendEvents(request, metadata=state_md, timeout=10)
        stub.AppendEvents(request, metadata=state_md, timeout=10)  # duplicates
        stub.GetHistory(
            spb.GetHistoryRequest(conversation_id=conversation.conversation_id, last_n=10),
            metadata=state_md,
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as bad:
            stub.AppendEvents(
                spb.AppendEventsRequest(conversation_id="not-a-uuid", events=[spb.Event()]),
                metadata=state_md,
                timeout=10,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(f"127.0.0.1:{context_port}") as channel:
        cstub = context_pb2_grpc.ContextServiceStub(channel)  # type: ignore[no-untyped-call]
        cstub.IngestDocument(
            cpb.IngestDocumentRequest(
                document=cpb.Document(
                    document_id="faq", title="FAQ", text="Bikes park free at the station."
                )
            ),
            metadata=context_md,
            timeout=30,
        )
        cstub.UpsertFacts(
            cpb.UpsertFactsRequest(
                user_id="ada", facts=[cpb.Fact(fact_id="f1", text="Ada cycles.")]
            ),
            metadata=context_md,
            timeout=10,
        )
        cstub.Enrich(
            cpb.EnrichRequest(user_id="ada", text="Where do I park my bike?"),
            metadata=context_md,
            timeout=30,
        )


def _fed(metrics_url: str) -> bool:
    for family in text_string_to_metric_families(scrape(metrics_url)):
        if family.name == "context_feed_changes_applied":
            return any(s.value > 0 for s in family.samples if s.name.endswith("_total"))
    return False


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """state_svc and context_svc as `python -m` runs them, after a short workload."""
    workdir = tmp_path_factory.mktemp("promql")
    jwt_key = uuid.uuid4().hex + uuid.uuid4().hex
    state, state_port, state_metrics_port = _start(
        "state_svc",
        "STATE",
        {"STATE_AUTH_JWT_KEY": jwt_key, "STATE_SQLITE_PATH": str(workdir / "state.sqlite3")},
        workdir / "state_svc.log",
    )
    try:
        context, context_port, context_metrics_port = _start(
            "context_svc",
            "CONTEXT",
            {
                "CONTEXT_AUTH_JWT_KEY": jwt_key,
                "CONTEXT_STATE_TARGET": f"127.0.0.1:{state_port}",
                "CONTEXT_INDEX_PATH": str(workdir / "context.sqlite3"),
            },
            workdir / "context_svc.log",
        )
        try:
            _workload(state_port, context_port, jwt_key)
            context_url = f"http://127.0.0.1:{context_metrics_port}/metrics"
            wait_until(lambda: _fed(context_url), 60, "context_svc applying the feed")
            state_url = f"http://127.0.0.1:{state_metrics_port}/metrics"
            exported = Exported(declared=_declared_service_labels())
            exported.add_scrape(scrape(state_url))
            exported.add_scrape(scrape(context_url))
            yield Services(
                f"127.0.0.1:{state_port}",
                f"127.0.0.1:{context_port}",
                state_url,
                context_url,
                jwt_key,
                exported,
            )
        finally:
            context.stop()
    finally:
        state.stop()


def _uses_agent_metrics(expression: Expression) -> bool:
    return any(name.startswith("agent_") for name in metric_names(parse(expression)))


def _uses_recovery_metrics(expression: Expression) -> bool:
    return any(name.startswith("recovery_") for name in metric_names(parse(expression)))


# -------------------------------------------------------------------------------- tests


def test_every_expression_parses(expressions: list[Expression]) -> None:
    wheres = [e.where for e in expressions]
    assert len(wheres) == len(set(wheres))
    for expression in expressions:
        assert metric_names(parse(expression)), expression.where
    kinds = {e.where.split(" ")[0] for e in expressions}
    assert {"alert", "ScaledObject", "voiceagent-services.json"} <= kinds
    assert len([e for e in expressions if e.where.startswith("alert")]) >= 10
    assert len(expressions) >= 60


def test_the_parser_rejects_broken_promql() -> None:
    with pytest.raises(AssertionError, match="rate"):
        parse(Expression("broken", "sum(rate(grpc_server_handled_total[5m])"))
    with pytest.raises(AssertionError):
        parse(Expression("broken", "histogram_quantile(0.9, rate(x_bucket[$__rate_intervall]))"))


def test_dashboards_follow_the_grafana_conventions() -> None:
    production = helm.render_ci("production-values.yaml")
    boards = dashboards(production)
    assert set(boards) == {p.name for p in (CHART / "files" / "dashboards").glob("*.json")}
    config_maps = [c for c in of_kind(production, "ConfigMap") if c["data"].keys() & boards.keys()]
    for config_map in config_maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "Voice agents"
    uids = [board["uid"] for board in boards.values()]
    assert len(uids) == len(set(uids))
    for name, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                ranges = re.findall(r"\[([^\]]*)\]", target["expr"])
                assert set(ranges) <= {"$__rate_interval"}, (name, panel["title"], ranges)
                assert 'namespace=~"$namespace"' in target["expr"], (name, panel["title"])


def test_dashboard_files_are_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_metric_check_catches_typos(services: Services) -> None:
    exported = services.exported
    assert (
        exported.problems(
            Expression("ok", "sum by (grpc_code) (rate(grpc_server_handled_total[5m]))")
        )
        == []
    )
    assert exported.problems(Expression("typo", "rate(grpc_server_handeled_total[5m])")) == [
        "metric grpc_server_handeled_total is not exported"
    ]
    assert exported.problems(
        Expression("label", 'rate(grpc_server_handled_total{grpc_cod="OK"}[5m])')
    ) == ["grpc_server_handled_total has no label grpc_cod"]
    assert exported.problems(
        Expression("by", "sum by (methd) (rate(state_events_appended_total[5m]))")
    ) == ["by (methd): none of ['state_events_appended_total'] has it"]
    # A histogram is queried through its _bucket/_sum/_count series, never by its base name.
    assert exported.problems(Expression("hist", "grpc_server_handling_seconds")) == [
        "metric grpc_server_handling_seconds is not exported"
    ]


def _helm_test_command(component: str, target: str) -> list[str]:
    """The `helm test` hook's command for a component, aimed at a local address."""
    pods = of_kind(helm.render_ci("default-values.yaml"), "Pod")
    pod = next(p for p in pods if p["metadata"]["name"] == helm.component_name(f"test-{component}"))
    command: list[str] = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    return [sys.executable, "-c", command[2], target, *command[4:]]


@pytest.mark.parametrize("component", ["state", "context"])
def test_helm_test_hooks_pass_against_the_running_services(
    services: Services, component: str
) -> None:
    target = services.state_target if component == "state" else services.context_target
    ok = subprocess.run(
        _helm_test_command(component, target), capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count(": SERVING") == 2  # overall and the named service
    refused = subprocess.run(
        _helm_test_command(component, f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0


def test_state_and_context_export_every_metric_the_chart_queries(
    services: Services, expressions: list[Expression]
) -> None:
    checked = [e for e in expressions if not (_uses_agent_metrics(e) or _uses_recovery_metrics(e))]
    assert len(checked) >= 30
    problems = [f"{e.where}: {p}" for e in checked for p in services.exported.problems(e)]
    assert problems == [], "\n".join(problems)
    # The workload produced real samples for the RED panels' series.
    assert {"grpc_code", "grpc_method", "grpc_service", "grpc_type"} <= services.exported.labels[
        "grpc_server_handled_total"
    ]


@pytest.mark.livekit
def test_agent_worker_exports_every_metric_the_chart_queries(
    services: Services,
    expressions: list[Expression],
    livekit: LiveKitServer,
    tmp_path: Path,
) -> None:
    from tests.support.agent import running_agent_worker

    checked = [e for e in expressions if _uses_agent_metrics(e)]
    assert len(checked) >= 20
    with running_agent_worker(
        tmp_path, livekit, services.state_target, services.context_target, services.jwt_key
    ) as worker:
        text = scrape(worker.metrics_url)
        hook = subprocess.run(
            _helm_test_command("agent", worker.health_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert hook.returncode == 0, hook.stdout + hook.stderr
    exported = Exported(labels=dict(services.exported.labels), declared=services.exported.declared)
    agent_only = Exported()
    agent_only.add_scrape(text)
    for name, labels in agent_only.labels.items():
        exported.labels.setdefault(name, set()).update(labels)
    problems = [f"{e.where}: {p}" for e in checked for p in exported.problems(e)]
    assert problems == [], "\n".join(problems)
    # Labelled agent series are pre-initialised, so their labels are seen in the scrape.
    for name in ("agent_enrich_failures_total", "agent_backend_errors_total", "agent_circuit_open"):
        assert agent_only.labels[name] - {"pid"}, f"{name} has no labelled sample"


@pytest.mark.livekit
def test_recovery_exports_every_metric_the_chart_queries(
    services: Services,
    expressions: list[Expression],
    livekit: LiveKitServer,
    tmp_path: Path,
) -> None:
    """recovery_svc as the chart runs it (against state_svc and livekit-server): the
    Crash recovery panels and alerts query what it exports, and the `helm test` hook
    finds it serving."""
    from tests.support.recovery import recovery_ports, start_recovery

    checked = [e for e in expressions if _uses_recovery_metrics(e)]
    wheres = {e.where for e in checked}
    assert {"alert VoiceagentRecoveryGaveUp", "alert VoiceagentRecoverySlow"} <= wheres
    assert any("'Recoveries by outcome'" in w for w in wheres), wheres
    assert any("'Time without an agent p50 / p95'" in w for w in wheres), wheres
    state_port = int(services.state_target.rsplit(":", 1)[1])
    replica = start_recovery(
        tmp_path, "recovery", recovery_ports(), livekit, state_port, services.jwt_key
    )
    try:
        text = scrape(f"http://127.0.0.1:{replica.metrics_port}/metrics")
        target = f"127.0.0.1:{replica.port}"
        hook = subprocess.run(
            _helm_test_command("recovery", target), capture_output=True, text=True, timeout=60
        )
        assert hook.returncode == 0, hook.stdout + hook.stderr
        assert hook.stdout.count(": SERVING") == 2  # overall and RecoveryService
    finally:
        replica.process.stop()
    exported = Exported(declared=_declared_service_labels((servicekit_metrics, recovery_metrics)))
    exported.add_scrape(text)
    problems = [f"{e.where}: {p}" for e in checked for p in exported.problems(e)]
    assert problems == [], "\n".join(problems)
    # A misspelt outcome label would be caught too.
    assert exported.problems(
        Expression("typo", 'rate(recovery_redispatch_total{outcom="gave_up"}[5m])')
    ) == ["recovery_redispatch_total has no label outcom"]
