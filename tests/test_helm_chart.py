"""The Helm chart: lint, schemas, and what the rendered manifests promise.

Every values file under the chart's ci/ folder is rendered and validated with kubeconform
against local schemas (no kind may go without one); the assertions read the manifests as a
cluster would: which pods a selector selects, which port a probe or a policy names.
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import helm
from tests.support.helm import (
    CHART,
    CI_VALUES,
    Manifest,
    PodTemplate,
    RenderError,
    component_name,
    named,
    of_kind,
    pod_templates,
    render,
    render_ci,
    selected_pods,
    selects,
    workload,
)

pytestmark = pytest.mark.tools

CI_IDS = [p.name for p in CI_VALUES]
COMPONENTS = ("state", "context", "agent", "recovery")
# What an autoscaler may scale (recovery_svc has a fixed replica count).
SCALED = ("state", "context", "agent")


@functools.cache
def ci_render(name: str) -> tuple[Manifest, ...]:
    return tuple(render_ci(name))


def test_ci_folder_covers_the_switches() -> None:
    names = {p.name for p in CI_VALUES}
    assert {
        "default-values.yaml",
        "production-values.yaml",
        "keda-values.yaml",
        "kind-values.yaml",
        "state-only-values.yaml",
    } <= names


# ------------------------------------------------------------------------ lint, schemas


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_helm_lint_strict(values: Path) -> None:
    result = helm.helm(
        "lint",
        "--strict",
        str(CHART),
        "--values",
        str(values),
        "--kube-version",
        helm.KUBE_VERSION,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_manifests_validate_against_schemas(values: Path) -> None:
    text = helm.render_text([values])
    documents = [d for d in yaml.safe_load_all(text) if d]
    report = helm.kubeconform(text)
    assert report.resources == len(documents) > 0
    assert (report.invalid, report.errors, report.skipped) == (0, 0, 0), report.messages
    assert report.valid == len(documents)


def test_kubeconform_fails_on_unknown_fields_and_unknown_kinds() -> None:
    """The validation above can fail: a typo is invalid, a kind without schema an error."""
    typo = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, imagePullPolicyy: Always}]
"""
    assert helm.kubeconform(typo).invalid == 1
    crd_typo = """
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  endpoints: [{port: metrics, intervall: 30s}]
"""
    assert helm.kubeconform(crd_typo).invalid == 1
    unknown = """
apiVersion: example.com/v1
kind: Widget
metadata: {name: x}
spec: {}
"""
    report = helm.kubeconform(unknown)
    assert report.errors == 1
    assert "could not find schema" in report.messages[0]


def test_every_kind_the_chart_can_render_has_a_schema() -> None:
    kinds = {m["kind"] for name in CI_IDS for m in ci_render(name)}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "ConfigMap",
        "Secret",
        "Pod",
    } <= kinds


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        ({"state.replicaCont": 2}, "additional properties 'replicaCont' not allowed"),
        ({"agent.loadThreshold": 1.5}, "/agent/loadThreshold"),
        ({"agent.autoscaling.engine": "both"}, "/agent/autoscaling/engine"),
        ({"auth.jwtKey": "too-short"}, "/auth/jwtKey"),
        ({"context.index.sizeLimit": "lots"}, "/context/index/sizeLimit"),
        ({"mongodb.uri": "postgres://db"}, "/mongodb/uri"),
        ({"livekit.url": "http://livekit"}, "/livekit/url"),
        ({"agent.drainTimeoutSeconds": 0}, "/agent/drainTimeoutSeconds"),
        ({"securityContext.runAsUser": 0}, "/securityContext/runAsUser"),
        ({"recovery.maxAttempts": 0}, "/recovery/maxAttempts"),
        ({"recovery.webhook.port": 70000}, "/recovery/webhook/port"),
    ],
)
def test_wrong_values_fail_at_install(set_values: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match="values don't meet the specifications") as failure:
        render([CHART / "ci" / "default-values.yaml"], set_values)
    assert message in str(failure.value)


@pytest.mark.parametrize(
    ("values", "set_values", "message"),
    [
        ("default-values.yaml", {"mongodb.dev.enabled": False}, "state_svc needs a database"),
        ("default-values.yaml", {"livekit.apiKey": ""}, "the agent needs LiveKit credentials"),
        ("default-values.yaml", {"livekit.url": ""}, "the agent needs the LiveKit server's URL"),
        (
            "default-values.yaml",
            {"agent.autoscaling.targetCPUUtilizationPercentage": 70},
            "must be below agent.loadThreshold",
        ),
        (
            "default-values.yaml",
            {"context.embedding.backend": "openai", "openai.apiKey": "", "agent.enabled": False},
            r"context_svc \(context.embedding.backend=openai\) needs an OpenAI API key",
        ),
        (
            "default-values.yaml",
            {"state.enabled": False, "context.enabled": False},
            "the agent stores every conversation through state_svc",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_message(
    values: str, set_values: dict[str, Any], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render([CHART / "ci" / values], set_values)


def _problems(failure: RenderError) -> list[str]:
    """The listed problems of the chart's one failure, each on its own `  - ` line."""
    return [line[4:] for line in str(failure).splitlines() if line.startswith("  - ")]


def test_every_missing_value_is_listed_in_one_failure() -> None:
    """A new user's first `helm install` with nothing set names every value it needs, and
    how to give it, at once (it used to name one per run)."""
    with pytest.raises(RenderError) as failure:
        render()
    problems = _problems(failure.value)
    assert f"{len(problems)} problem(s) to fix" in str(failure.value)
    assert [p.split(":")[0] for p in problems] == [
        "mongodb",
        "livekit.url",
        "livekit.existingSecret",
        "openai.existingSecret",
    ]
    for problem, how in zip(
        problems,
        [
            "--set mongodb.existingSecret=",
            "--set livekit.url=wss://",
            "--set livekit.existingSecret=",
            "--set openai.existingSecret=",
        ],
        strict=True,
    ):
        assert how in problem
        assert f"kubectl -n {helm.NAMESPACE} create secret" in problem or "livekit.url" in problem
    # Inconsistent values are listed with the missing ones, not found one run later.
    with pytest.raises(RenderError) as failure:
        render(
            set_values={
                "agent.autoscaling.targetCPUUtilizationPercentage": 90,
                "context.persistence": {"type": "pvc"},
                "livekit.url": "wss://livekit.example.com",
            }
        )
    keys = [p.split(" ")[0].rstrip(":") for p in _problems(failure.value)]
    assert keys == [
        "context.persistence",
        "mongodb",
        "livekit.existingSecret",
        "agent.autoscaling.targetCPUUtilizationPercentage",
        "openai.existingSecret",
    ]


@pytest.mark.parametrize(
    ("set_values", "secret"),
    [
        ({"openai.apiKey": "sk-given"}, f"{helm.RELEASE}-voiceagent-openai"),
        ({"openai.apiKey": "", "openai.existingSecret": "team-openai"}, "team-openai"),
    ],
    ids=["apiKey", "existingSecret"],
)
def test_the_agent_needs_its_openai_key(set_values: dict[str, Any], secret: str) -> None:
    """Without a key the agent pod rendered and crash-looped; now the install says so."""
    with pytest.raises(RenderError) as failure:
        render_ci("default-values.yaml", {"openai.apiKey": ""})
    (problem,) = _problems(failure.value)
    assert problem.startswith("openai.existingSecret: the agent (speech-to-text, LLM, text-to-")
    assert "--set openai.existingSecret=voiceagent-openai; or --set openai.apiKey=" in problem
    # Given as a value (the chart keeps it in a Secret) or as an existing Secret.
    manifests = render_ci("default-values.yaml", set_values)
    env = workload(manifests, "agent").env("agent")
    assert env["OPENAI_API_KEY"] == {"secretKeyRef": {"name": secret, "key": "api-key"}}
    if "openai.existingSecret" not in set_values:
        named(manifests, "Secret", secret)
    # No agent, no key needed (context_svc embeds with the local model by default).
    manifests = render_ci("default-values.yaml", {"openai.apiKey": "", "agent.enabled": False})
    assert "agent" not in {p.component for p in pod_templates(manifests)}


def test_helm_template_needs_no_kube_version_and_old_clusters_are_refused() -> None:
    """docs/chart.md's `helm template` works as written (a helm built without version stamps
    assumes Kubernetes 1.20 offline); a real cluster older than 1.30 is refused by name."""
    values = str(CHART / "ci" / "default-values.yaml")
    result = helm.helm("template", helm.RELEASE, str(CHART), "--values", values, check=False)
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
    old = ("--kube-version", "1.29.4")
    result = helm.helm("template", helm.RELEASE, str(CHART), "--values", values, *old, check=False)
    assert result.returncode != 0
    assert _problems(RenderError(result.stderr)) == [
        "Kubernetes v1.29.4: the chart needs 1.30 or newer (the agent's preStop hook is a "
        "sleep action)"
    ]


# ---------------------------------------------------------------------------- security


@pytest.mark.parametrize("values", CI_IDS)
def test_every_pod_is_restricted(values: str) -> None:
    pods = pod_templates(ci_render(values))
    assert pods
    for pod in pods:
        where = f"{values}: {pod.kind} {pod.name}"
        sc = pod.spec["securityContext"]
        assert sc["runAsNonRoot"] is True, where
        assert sc["runAsUser"] != 0, where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod.spec["automountServiceAccountToken"] is False, where
        assert not pod.spec.get("hostNetwork"), where
        assert not pod.spec.get("hostPID"), where
        for container in pod.containers():
            csc = container["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, where
            assert csc["readOnlyRootFilesystem"] is True, where
            assert csc["runAsNonRoot"] is True, where
            assert csc["privileged"] is False, where
            assert csc["capabilities"] == {"drop": ["ALL"]}, where
            assert csc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["resources"]["requests"], where
            assert "memory" in container["resources"]["limits"], where
            # Read-only root: /tmp is a writable emptyDir everywhere.
            assert "emptyDir" in pod.mount_source(container["name"], "/tmp"), where


def test_secrets_are_mounted_or_referenced_never_inlined() -> None:
    manifests = ci_render("production-values.yaml")
    state_env = workload(manifests, "state").env("state")
    assert state_env["STATE_MONGODB_URI"] == {
        "secretKeyRef": {"name": "voiceagent-mongodb", "key": "uri"}
    }
    agent_env = workload(manifests, "agent").env("agent")
    assert agent_env["LIVEKIT_API_SECRET"]["secretKeyRef"]["name"] == "voiceagent-livekit"
    assert agent_env["OPENAI_API_KEY"]["secretKeyRef"]["name"] == "voiceagent-openai"
    # Existing Secrets are used as they are: the chart creates none of its own.
    assert of_kind(manifests, "Secret") == []


def test_service_account_credentials_hold_no_key() -> None:
    """The default: the agent, context_svc and recovery_svc present their own projected
    tokens; the services verify them with the cluster's key set and grant each its tenant
    and scopes."""
    manifests = ci_render("production-values.yaml")
    accounts = {a["metadata"]["name"] for a in of_kind(manifests, "ServiceAccount")}
    grants: dict[str, Any] = {}
    for component in COMPONENTS:
        pod = workload(manifests, component)
        env = pod.env(component)
        assert not any("JWT_KEY" in k for k in env), component
        sources = pod.mount_source(component, "/var/run/secrets/voiceagent")["projected"]
        paths = {s.get("serviceAccountToken", {}).get("path") for s in sources["sources"]}
        prefix = component.upper() + "_"
        if component != "agent":
            assert env[f"{prefix}AUTH_JWKS_URL"].endswith("/openid/v1/jwks")
            assert env[f"{prefix}AUTH_JWT_AUDIENCE"] == "voiceagent"
            assert env[f"{prefix}AUTH_JWT_ISSUER"] == "https://kubernetes.default.svc.cluster.local"
            assert "kube-token" in paths
            grants[component] = json.loads(env[f"{prefix}AUTH_GRANTS"])
        if component != "state":
            # Its own identity: a ServiceAccount of its own, a token for the services.
            account = pod.spec["serviceAccountName"]
            assert account == component_name(component)
            assert account in accounts
            token = next(
                s
                for s in sources["sources"]
                if s.get("serviceAccountToken", {}).get("path") == "token"
            )
            assert token["serviceAccountToken"]["audience"] == "voiceagent"
    agent_env = workload(manifests, "agent").env("agent")
    assert agent_env["AGENT_AUTH_TOKEN_FILE"] == "/var/run/secrets/voiceagent/token"
    subject = f"system:serviceaccount:{helm.NAMESPACE}:{{}}"
    expected = {
        subject.format(component_name("agent")): {
            "tenant": "default",
            "scopes": ["state.read", "state.write", "context.read"],
        },
        subject.format(component_name("context")): {
            "tenant": "context_svc",
            "scopes": ["state.read", "state.feed", "state.index", "state.knowledge"],
        },
        # recovery_svc reads conversations and claims its steps in the agent's tenant.
        subject.format(component_name("recovery")): {
            "tenant": "default",
            "scopes": ["state.read", "state.write"],
        },
        "system:serviceaccount:voice:operator": {"tenant": "acme", "scopes": ["state.read"]},
    }
    assert grants["state"] == grants["context"] == expected
    # recovery_svc admits only the agent's jobs, for the agent's tenant, with the scope of
    # the state they write.
    assert grants["recovery"] == {
        subject.format(component_name("agent")): {"tenant": "default", "scopes": ["state.write"]}
    }
    recovery_env = workload(manifests, "recovery").env("recovery")
    assert recovery_env["RECOVERY_STATE_TOKEN_FILE"] == "/var/run/secrets/voiceagent/token"
    assert recovery_env["RECOVERY_TENANT"] == "default"


def test_shared_key_mode_mounts_the_key_everywhere() -> None:
    manifests = render(
        [CHART / "ci" / "production-values.yaml"],
        {
            "auth.mode": "sharedKey",
            "auth.existingSecret": "voiceagent-jwt",
            "auth.existingSecretKey": "key",
        },
    )
    for component in COMPONENTS:
        pod = workload(manifests, component)
        env = pod.env(component)
        key_file = next(v for k, v in env.items() if k.endswith("AUTH_JWT_KEY_FILE"))
        assert key_file == "/var/run/secrets/voiceagent/jwt-key"
        mount = pod.mount_source(component, "/var/run/secrets/voiceagent")
        assert mount["secret"]["secretName"] == "voiceagent-jwt"  # the existing Secret
        assert mount["secret"]["items"] == [{"key": "key", "path": "jwt-key"}]
        assert not any(k.endswith("AUTH_JWT_KEY") for k in env)


def test_generated_jwt_key_is_long_and_shared() -> None:
    manifests = render([CHART / "ci" / "default-values.yaml"], {"auth.mode": "sharedKey"})
    secret = named(manifests, "Secret", f"{helm.RELEASE}-voiceagent-jwt")
    assert len(secret["data"]["jwt-key"]) >= 64  # base64 of 64 random characters
    for component in COMPONENTS:
        mount = workload(manifests, component).mount_source(
            component, "/var/run/secrets/voiceagent"
        )
        assert mount["secret"]["secretName"] == secret["metadata"]["name"]


# ------------------------------------------------------------------- services and probes


@pytest.mark.parametrize(
    ("component", "prefix"),
    [("state", "STATE_"), ("context", "CONTEXT_"), ("recovery", "RECOVERY_")],
)
def test_grpc_services_listen_on_all_interfaces_with_native_grpc_probes(
    component: str, prefix: str
) -> None:
    pod = workload(ci_render("default-values.yaml"), component)
    env = pod.env(component)
    ports = pod.container_ports()
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert env[f"{prefix}METRICS_HOST"] == "0.0.0.0"
    assert int(env[f"{prefix}PORT"]) == ports["grpc"]
    assert int(env[f"{prefix}METRICS_PORT"]) == ports["metrics"]
    container = pod.spec["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        grpc_probe = dict(container[probe]["grpc"])
        if probe == "readinessProbe":  # context_svc's asks for its own service (see below)
            grpc_probe.pop("service", None)
        assert grpc_probe == {"port": ports["grpc"]}, probe
    # Shutdown: the pod's grace period covers the drain delay and the in-flight grace.
    grace = float(env[f"{prefix}GRACE_PERIOD_S"]) + float(env[f"{prefix}SHUTDOWN_DELAY_S"])
    assert pod.spec["terminationGracePeriodSeconds"] > grace


def test_agent_has_http_probes_on_its_health_port() -> None:
    pod = workload(ci_render("default-values.yaml"), "agent")
    env = pod.env("agent")
    ports = pod.container_ports()
    assert ports["health"] == int(env["AGENT_HEALTH_PORT"]) == 8081
    assert ports["metrics"] == int(env["AGENT_METRICS_PORT"]) == 9103
    # The worker serves health and metrics on this one address.
    assert env["AGENT_HEALTH_HOST"] == "0.0.0.0"
    container = pod.spec["containers"][0]
    assert container["args"] == ["start"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/", "port": "health"}, probe


@pytest.mark.parametrize(
    ("values", "set_values", "drain"),
    [
        ("default-values.yaml", {}, 300),
        ("production-values.yaml", {}, 600),
        ("default-values.yaml", {"agent.drainTimeoutSeconds": 1234}, 1234),
    ],
)
def test_agent_grace_period_covers_the_drain(
    values: str, set_values: dict[str, Any], drain: int
) -> None:
    pod = workload(render([CHART / "ci" / values], set_values), "agent")
    env = pod.env("agent")
    assert int(env["AGENT_DRAIN_TIMEOUT_S"]) == drain
    container = pod.spec["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod.spec["terminationGracePeriodSeconds"]
    # SIGTERM comes after the preStop sleep; the drain then needs its full timeout, and
    # the final flush a margin on top.
    assert grace >= pre_stop + drain + 5
    assert pre_stop < 30


def test_agent_spool_and_metrics_dirs_are_writable_pod_volumes() -> None:
    pod = workload(ci_render("default-values.yaml"), "agent")
    env = pod.env("agent")
    spool = pod.mount_source("agent", env["AGENT_SPOOL_DIR"])
    # emptyDir: survives container restarts within the pod, so the next process replays.
    assert "emptyDir" in spool
    assert spool["emptyDir"]["sizeLimit"]
    assert "emptyDir" in pod.mount_source("agent", env["PROMETHEUS_MULTIPROC_DIR"])
    assert env["AGENT_STATE_TARGET"].startswith("dns:///")


def test_agent_settings_follow_the_values() -> None:
    pod = workload(ci_render("production-values.yaml"), "agent")
    env = pod.env("agent")
    assert env["AGENT_LOAD_THRESHOLD"] == "0.75"
    assert env["LIVEKIT_URL"] == "wss://livekit.example.com"
    assert env["AGENT_NAME"] == "voiceagent"
    assert env["AGENT_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["AGENT_ENRICH_BUDGET_MS"] == "200"


def test_livekit_url_may_come_from_the_existing_secret() -> None:
    manifests = render_ci("production-values.yaml", {"livekit.url": "", "livekit.urlKey": "ws-url"})
    env = workload(manifests, "agent").env("agent")
    assert env["LIVEKIT_URL"] == {"secretKeyRef": {"name": "voiceagent-livekit", "key": "ws-url"}}


def test_images_follow_registry_tag_and_digest() -> None:
    manifests = ci_render("production-values.yaml")
    state = workload(manifests, "state").spec["containers"][0]
    assert state["image"] == (
        "registry.example.com/voice/voiceagent-state@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    agent = workload(manifests, "agent").spec["containers"][0]
    assert agent["image"] == "registry.example.com/voice/voiceagent-agent:0.1.0"
    default = workload(ci_render("default-values.yaml"), "context").spec["containers"][0]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert default["image"] == f"voiceagent-context:{chart['appVersion']}"


# ----------------------------------------------------------- selectors select real pods


@pytest.mark.parametrize("values", CI_IDS)
def test_workload_selectors_match_their_own_pods_only(values: str) -> None:
    manifests = ci_render(values)
    for m in manifests:
        if m["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        selector = m["spec"]["selector"]
        assert selects(selector, m["spec"]["template"]["metadata"]["labels"])
        others = [
            p.name for p in selected_pods(manifests, selector) if p.name != m["metadata"]["name"]
        ]
        assert others == [], f"{m['metadata']['name']} selector also selects {others}"


@pytest.mark.parametrize("values", CI_IDS)
def test_services_select_one_workload_and_its_ports(values: str) -> None:
    manifests = ci_render(values)
    for svc in of_kind(manifests, "Service"):
        pods = [p for p in selected_pods(manifests, svc["spec"]["selector"]) if p.kind != "Pod"]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {pods}"
        ports = pods[0].container_ports()
        for port in svc["spec"]["ports"]:
            target = port["targetPort"]
            assert (target in ports) if isinstance(target, str) else (target in ports.values())


def test_clients_use_the_headless_services_with_round_robin() -> None:
    manifests = ci_render("default-values.yaml")
    targets = {
        "state": workload(manifests, "agent").env("agent")["AGENT_STATE_TARGET"],
        "context": workload(manifests, "agent").env("agent")["AGENT_CONTEXT_TARGET"],
        "recovery": workload(manifests, "agent").env("agent")["AGENT_RECOVERY_TARGET"],
    }
    for client in ("context", "recovery"):
        env = workload(manifests, client).env(client)
        assert env[f"{client.upper()}_STATE_TARGET"] == targets["state"]
    for component, target in targets.items():
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        name = host.split(".")[0]
        assert host == f"{name}.{helm.NAMESPACE}.svc.cluster.local"
        svc = named(manifests, "Service", name)
        assert svc["spec"]["clusterIP"] == "None"
        pods = selected_pods(manifests, svc["spec"]["selector"])
        assert [p.component for p in pods] == [component]
        assert int(port) == pods[0].container_ports()["grpc"]
        env = pods[0].env(component)
        if component == "recovery":
            # Attend streams live as long as a call: a connection closed by age would look
            # like a job dying. recovery_svc keeps its own "never".
            assert "RECOVERY_MAX_CONNECTION_AGE_S" not in env
            continue
        # Servers recycle connections so that clients re-resolve and reach new replicas.
        assert float(env[f"{component.upper()}_MAX_CONNECTION_AGE_S"]) > 0


@pytest.mark.parametrize("values", CI_IDS)
def test_pdbs_and_autoscalers_target_real_workloads(values: str) -> None:
    manifests = ci_render(values)
    for pdb in of_kind(manifests, "PodDisruptionBudget"):
        pods = [p for p in selected_pods(manifests, pdb["spec"]["selector"]) if p.kind != "Pod"]
        assert len(pods) == 1, pdb["metadata"]["name"]
    deployments = {d["metadata"]["name"]: d for d in of_kind(manifests, "Deployment")}
    for scaler in of_kind(manifests, "HorizontalPodAutoscaler") + of_kind(
        manifests, "ScaledObject"
    ):
        ref = scaler["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        assert ref["name"] in deployments
        # The autoscaler owns the replica count.
        assert "replicas" not in deployments[ref["name"]]["spec"]


@pytest.mark.parametrize("values", CI_IDS)
def test_service_monitors_scrape_the_metrics_port(values: str) -> None:
    manifests = ci_render(values)
    monitors = of_kind(manifests, "ServiceMonitor")
    if values in {"production-values.yaml", "keda-values.yaml"}:
        assert {m["metadata"]["name"] for m in monitors} == {component_name(c) for c in COMPONENTS}
    for monitor in monitors:
        services = [
            s
            for s in of_kind(manifests, "Service")
            if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
        ]
        # One Service per component (the headless one carries no metrics port).
        assert len(services) == 1, monitor["metadata"]["name"]
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
        assert "metrics" in {p["name"] for p in services[0]["spec"]["ports"]}
    if values == "production-values.yaml":
        for monitor in monitors:
            assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# ------------------------------------------------------------------------- autoscaling


def test_agent_hpa_sits_below_the_load_threshold_and_scales_down_slowly() -> None:
    for values in ("default-values.yaml", "production-values.yaml"):
        manifests = ci_render(values)
        hpa = named(manifests, "HorizontalPodAutoscaler", component_name("agent"))
        threshold = float(workload(manifests, "agent").env("agent")["AGENT_LOAD_THRESHOLD"])
        cpu = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Resource")
        assert cpu["resource"]["name"] == "cpu"
        assert cpu["resource"]["target"]["averageUtilization"] < threshold * 100
        down = hpa["spec"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 600
        assert all(p["periodSeconds"] >= 60 for p in down["policies"])


def test_state_and_context_hpa_on_cpu_with_an_optional_pods_metric() -> None:
    manifests = ci_render("production-values.yaml")
    state = named(manifests, "HorizontalPodAutoscaler", component_name("state"))
    assert [m["type"] for m in state["spec"]["metrics"]] == ["Resource", "Pods"]
    assert state["spec"]["metrics"][1]["pods"]["metric"]["name"] == (
        "grpc_server_started_per_second"
    )
    context = named(manifests, "HorizontalPodAutoscaler", component_name("context"))
    assert [m["type"] for m in context["spec"]["metrics"]] == ["Resource"]


def test_keda_replaces_the_hpas_never_both() -> None:
    manifests = ci_render("keda-values.yaml")
    assert of_kind(manifests, "HorizontalPodAutoscaler") == []
    scaled = {s["metadata"]["name"]: s for s in of_kind(manifests, "ScaledObject")}
    assert set(scaled) == {component_name(c) for c in SCALED}
    agent = scaled[component_name("agent")]
    assert [t["type"] for t in agent["spec"]["triggers"]] == ["cpu", "prometheus"]
    assert agent["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    query = agent["spec"]["triggers"][1]["metadata"]["query"]
    assert f'namespace="{helm.NAMESPACE}"' in query  # the query is templated
    for values in CI_IDS:
        rendered = ci_render(values)
        scaled_names = {
            s["spec"]["scaleTargetRef"]["name"] for s in of_kind(rendered, "ScaledObject")
        }
        hpa_names = {
            h["spec"]["scaleTargetRef"]["name"]
            for h in of_kind(rendered, "HorizontalPodAutoscaler")
        }
        assert scaled_names.isdisjoint(hpa_names), values


# ------------------------------------------------------------------------ storage


@pytest.mark.parametrize("values", [v for v in CI_IDS if v != "state-only-values.yaml"])
def test_context_index_is_a_cache_on_an_emptydir(values: str) -> None:
    """context_svc rebuilds its index from state_svc: no claim, no StatefulSet, rolling
    updates like every other Deployment."""
    manifests = ci_render(values)
    assert of_kind(manifests, "PersistentVolumeClaim") == []
    deployment = named(manifests, "Deployment", component_name("context"))
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert [p.kind for p in pod_templates(manifests) if p.component == "context"] == ["Deployment"]
    pod = workload(manifests, "context")
    index_dir = str(Path(pod.env("context")["CONTEXT_INDEX_PATH"]).parent)
    assert pod.mount_source("context", index_dir)["emptyDir"] == {"sizeLimit": "2Gi"}
    # The only claim left in the chart is the development MongoDB's.
    for statefulset in of_kind(manifests, "StatefulSet"):
        assert statefulset["metadata"]["name"] == component_name("mongodb")


def test_context_scales_like_state_with_an_hpa_and_a_pdb() -> None:
    manifests = ci_render("default-values.yaml")
    hpa = named(manifests, "HorizontalPodAutoscaler", component_name("context"))
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": component_name("context"),
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (cpu,) = hpa["spec"]["metrics"]
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert "replicas" not in named(manifests, "Deployment", component_name("context"))["spec"]
    pdb = named(manifests, "PodDisruptionBudget", component_name("context"))
    assert pdb["spec"]["maxUnavailable"] == 1
    # Without autoscaling: a fixed count, as for state_svc.
    fixed = render_ci(
        "default-values.yaml", {"context.autoscaling.enabled": False, "context.replicaCount": 3}
    )
    hpas = {h["metadata"]["name"] for h in of_kind(fixed, "HorizontalPodAutoscaler")}
    assert hpas == {component_name("agent")}
    assert named(fixed, "Deployment", component_name("context"))["spec"]["replicas"] == 3


def test_context_is_ready_once_caught_up_and_alive_meanwhile() -> None:
    """context_svc's own gRPC service answers NOT_SERVING until its memory caught up with
    the feed (a new replica gets no traffic meanwhile); "" answers SERVING from the start,
    so liveness and startup never restart a replica that is catching up."""
    deployment = named(ci_render("default-values.yaml"), "Deployment", component_name("context"))
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "context"
    ]
    readiness = container["readinessProbe"]["grpc"]
    assert readiness["service"] == "voiceagent.context.v1.ContextService"
    assert "service" not in container["livenessProbe"]["grpc"]
    assert "service" not in container["startupProbe"]["grpc"]


@pytest.mark.parametrize(
    "set_values",
    [
        {"context.persistence": {"type": "pvc"}},
        {"context.persistence": {"type": "emptyDir", "emptyDirSizeLimit": "4Gi"}},
        {"context.persistence": {"existingClaim": "context-index"}},
    ],
    ids=["pvc", "emptyDir", "existingClaim"],
)
def test_the_removed_persistence_values_say_what_to_do(set_values: dict[str, Any]) -> None:
    with pytest.raises(RenderError) as failure:
        render_ci("default-values.yaml", set_values)
    (problem,) = _problems(failure.value)
    assert problem.startswith("context.persistence was removed: ")
    assert "Delete context.persistence from your values" in problem
    assert "its emptyDirSizeLimit is now context.index.sizeLimit" in problem
    claim = component_name("context")
    assert f"kubectl -n {helm.NAMESPACE} delete pvc {claim}" in problem


def test_a_generated_key_gives_every_workload_the_same_secrets_checksum() -> None:
    # Found on a real cluster: each workload's checksum came from its own random key, so
    # the first `helm upgrade` after an install restarted every pod.
    manifests = ci_render("kind-values.yaml")
    checksums = {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
        for m in manifests
        if m["kind"] == "Deployment"
    }
    assert len(checksums) == 4
    assert len(set(checksums.values())) == 1, checksums


def test_dev_mongodb_is_what_state_connects_to() -> None:
    manifests = ci_render("kind-values.yaml")
    mongo = named(manifests, "StatefulSet", component_name("mongodb"))
    container = mongo["spec"]["template"]["spec"]["containers"][0]
    # The end-to-end values run FerretDB behind `mongod` (Docker Hub is out of reach there).
    assert container["image"] == "voiceagent-mongo-standin:e2e"
    assert container["command"] == ["mongod"]
    secret = named(manifests, "Secret", f"{helm.RELEASE}-voiceagent-mongodb")
    uri = base64.b64decode(secret["data"]["uri"]).decode()
    host = uri.removeprefix("mongodb://").split("/")[0]
    pod_host, _ = host.split(":")
    pod_name, service = pod_host.split(".")[:2]
    assert pod_name == f"{mongo['metadata']['name']}-0"
    assert service == mongo["spec"]["serviceName"]
    svc = named(manifests, "Service", service)
    assert svc["spec"]["clusterIP"] == "None"
    assert [p.kind for p in selected_pods(manifests, svc["spec"]["selector"])] == ["StatefulSet"]


# ------------------------------------------------------------------- network policies


def _policy(manifests: list[Manifest] | tuple[Manifest, ...], component: str) -> Manifest:
    return named(manifests, "NetworkPolicy", component_name(component))


def _peer_components(manifests: tuple[Manifest, ...], peers: list[dict[str, Any]]) -> set[str]:
    """Components (in this release) whose pods a `from`/`to` list selects by pod labels."""
    found: set[str] = set()
    for peer in peers:
        if "podSelector" in peer and "namespaceSelector" not in peer:
            pods = selected_pods(manifests, peer["podSelector"])
            assert pods, f"peer {peer} selects no pod of the release"
            found |= {p.component for p in pods}
    return found


def _port_exists(pod: PodTemplate, port: int | str) -> bool:
    ports = pod.container_ports()
    return port in ports if isinstance(port, str) else port in ports.values()


@pytest.mark.parametrize(
    "values", ["default-values.yaml", "production-values.yaml", "kind-values.yaml"]
)
def test_network_policies_select_the_real_pods_and_ports(values: str) -> None:
    manifests = ci_render(values)
    policies = of_kind(manifests, "NetworkPolicy")
    assert policies
    for policy in policies:
        pods = [
            p for p in selected_pods(manifests, policy["spec"]["podSelector"]) if p.kind != "Pod"
        ]
        assert len(pods) == 1, policy["metadata"]["name"]
        target = pods[0]
        for rule in policy["spec"].get("ingress", []):
            _peer_components(manifests, rule["from"])  # every pod peer selects real pods
            for port in rule["ports"]:
                assert _port_exists(target, port["port"]), (policy["metadata"]["name"], port)
        for rule in policy["spec"].get("egress", []):
            for peer_pod in (
                p
                for peer in rule.get("to", [])
                if "podSelector" in peer and "namespaceSelector" not in peer
                for p in selected_pods(manifests, peer["podSelector"])
            ):
                for port in rule["ports"]:
                    assert _port_exists(peer_pod, port["port"]), (policy["metadata"]["name"], port)


def test_who_may_reach_whom() -> None:
    manifests = ci_render("kind-values.yaml")

    def ingress_from(component: str, port_name: str) -> tuple[set[str], list[dict[str, Any]]]:
        rules = [
            r
            for r in _policy(manifests, component)["spec"]["ingress"]
            if any(p["port"] == port_name for p in r["ports"])
        ]
        peers = [peer for r in rules for peer in r["from"]]
        return _peer_components(manifests, peers), peers

    # state: only the agent, context_svc, recovery_svc and the chart's helm-test pods.
    assert ingress_from("state", "grpc")[0] == {"agent", "context", "recovery", "test"}
    # context: only the agent (and helm test).
    assert ingress_from("context", "grpc")[0] == {"agent", "test"}
    # recovery: Attend streams only from the agent's jobs (and helm test); webhooks only
    # from livekit-server's namespace (networkPolicy.livekitWebhook in the e2e values).
    assert ingress_from("recovery", "grpc")[0] == {"agent", "test"}
    assert ingress_from("recovery", "webhook") == (
        set(),
        [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "livekit"}}}],
    )
    # MongoDB: only state_svc.
    assert ingress_from("mongodb", "mongodb")[0] == {"state"}
    # Metrics ports: only from the monitoring namespace.
    for component in COMPONENTS:
        components, peers = ingress_from(component, "metrics")
        assert components == set()
        assert peers == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ]
    # The helm-test pods carry the label the policies admit.
    tests = [p for p in pod_templates(manifests) if p.kind == "Pod"]
    assert tests
    assert all(p.component == "test" for p in tests)


def test_egress_reaches_mongodb_livekit_and_llm_only() -> None:
    manifests = ci_render("production-values.yaml")

    def egress_ports(component: str) -> set[tuple[int, str]]:
        ports: set[tuple[int, str]] = set()
        for rule in _policy(manifests, component)["spec"]["egress"]:
            ports |= {(int(p["port"]), p.get("protocol", "TCP")) for p in rule["ports"]}
        return ports

    dns = {(53, "UDP"), (53, "TCP")}
    # The API server (443 and its endpoint port 6443): the key set of service-account tokens.
    api = {(443, "TCP"), (6443, "TCP")}
    assert egress_ports("state") == dns | api | {(27017, "TCP"), (4317, "TCP")}
    # context: state's feed, the embeddings API (backend openai here), OTLP.
    assert egress_ports("context") == dns | api | {(50051, "TCP"), (4317, "TCP")}
    agent = egress_ports("agent")
    assert {(50051, "TCP"), (50052, "TCP"), (50053, "TCP"), (443, "TCP"), (7881, "TCP")} <= agent
    assert (50000, "UDP") in agent  # WebRTC media to LiveKit
    # recovery: state_svc, livekit-server's API (the TCP ports of the LiveKit rule: no
    # media), OTLP.
    livekit_tcp = {(443, "TCP"), (7880, "TCP"), (7881, "TCP")}
    assert egress_ports("recovery") == dns | api | livekit_tcp | {(50051, "TCP"), (4317, "TCP")}
    # The minilm backend embeds in-process: no route out for context.
    default = ci_render("default-values.yaml")
    context_rules = _policy(default, "context")["spec"]["egress"]
    assert {int(p["port"]) for r in context_rules for p in r["ports"]} == {53, 50051, 443, 6443}
    shared = render([CHART / "ci" / "default-values.yaml"], {"auth.mode": "sharedKey"})
    context_rules = _policy(shared, "context")["spec"]["egress"]
    assert {int(p["port"]) for r in context_rules for p in r["ports"]} == {53, 50051}


# ------------------------------------------------------------------------- helm test


def test_helm_test_pods_health_check_every_service() -> None:
    manifests = ci_render("default-values.yaml")
    tests = {p["metadata"]["name"]: p for p in of_kind(manifests, "Pod")}
    assert set(tests) == {component_name(f"test-{c}") for c in COMPONENTS}
    for component in COMPONENTS:
        pod = tests[component_name(f"test-{component}")]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
        command = pod["spec"]["containers"][0]["command"]
        target = command[3]
        host_port = target.removeprefix("http://").rstrip("/")
        host, port = host_port.rsplit(":", 1)
        svc = named(manifests, "Service", host.split(".")[0])
        assert [p.component for p in selected_pods(manifests, svc["spec"]["selector"])] == [
            component
        ]
        assert int(port) in {p["port"] for p in svc["spec"]["ports"]}
        if component == "agent":
            assert "urllib.request" in command[2]
        else:
            assert "grpc_health.v1" in command[2]
            assert command[4:] == ["", f"voiceagent.{component}.v1.{component.title()}Service"]


def test_state_only_install_has_no_dangling_references() -> None:
    manifests = ci_render("state-only-values.yaml")
    assert {p.component for p in pod_templates(manifests)} == {"state", "test"}
    assert of_kind(manifests, "NetworkPolicy") == []
    # recovery.enabled is true by default, but there is no agent to recover.
    grants = json.loads(workload(manifests, "state").env("state")["STATE_AUTH_GRANTS"])
    assert not any(subject.endswith("-recovery") for subject in grants)


# ------------------------------------------------------------------------ recovery


def test_recovery_runs_the_agent_image_as_its_own_service() -> None:
    manifests = ci_render("production-values.yaml")
    recovery = workload(manifests, "recovery")
    agent = workload(manifests, "agent")
    container = recovery.spec["containers"][0]
    assert container["image"] == agent.spec["containers"][0]["image"]
    assert container["command"] == ["python", "-m", "voiceagent_backbone.recovery_svc"]
    assert "args" not in container
    deployment = named(manifests, "Deployment", component_name("recovery"))
    assert deployment["spec"]["replicas"] == 2
    env = recovery.env("recovery")
    # The webhook listener on every interface, on the Service's webhook port.
    assert env["RECOVERY_WEBHOOK_HOST"] == "0.0.0.0"
    assert int(env["RECOVERY_WEBHOOK_PORT"]) == recovery.container_ports()["webhook"] == 8090
    service = named(manifests, "Service", component_name("recovery"))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": 50053,
        "webhook": 8090,
        "metrics": 9104,
    }
    # The agent's LiveKit credentials, and only the chart's agent is recovered.
    agent_env = agent.env("agent")
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert env[name] == agent_env[name], name
    assert json.loads(env["RECOVERY_AGENT_NAMES"]) == [agent_env["AGENT_NAME"]]
    assert env["RECOVERY_TENANT"] == agent_env["AGENT_TENANT"]
    pdb = named(manifests, "PodDisruptionBudget", component_name("recovery"))
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    "set_values", [{"recovery.enabled": False}, {"agent.enabled": False}], ids=str
)
def test_without_recovery_nothing_points_at_it(set_values: dict[str, Any]) -> None:
    manifests = render([CHART / "ci" / "production-values.yaml"], set_values)
    prefix = component_name("recovery")
    assert not [m for m in manifests if m["metadata"]["name"].startswith(prefix)]
    assert "recovery" not in {p.component for p in pod_templates(manifests)}
    if "agent.enabled" not in set_values:
        assert "AGENT_RECOVERY_TARGET" not in workload(manifests, "agent").env("agent")
    grants = json.loads(workload(manifests, "state").env("state")["STATE_AUTH_GRANTS"])
    assert component_name("recovery") not in json.dumps(grants)
    accounts = {a["metadata"]["name"] for a in of_kind(manifests, "ServiceAccount")}
    assert component_name("recovery") not in accounts


def test_recovery_webhook_source_is_configurable() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "lk"}}}]
    manifests = render(
        [CHART / "ci" / "default-values.yaml"], {"networkPolicy.livekitWebhook.from": peers}
    )
    rules = _policy(manifests, "recovery")["spec"]["ingress"]
    webhook = [r for r in rules if [p["port"] for p in r["ports"]] == ["webhook"]]
    assert [r["from"] for r in webhook] == [peers]
    with pytest.raises(RenderError, match="livekitWebhook"):
        render([CHART / "ci" / "default-values.yaml"], {"networkPolicy.livekitWebhook.from": []})


# ------------------------------------------------------------------------------ NOTES


def render_notes(tmp_path: Path, set_values: dict[str, Any], values: str) -> str:
    """templates/NOTES.txt as `helm install` prints it. `helm template` renders NOTES but
    never prints them, so a copy of the chart carries them in a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = chart / "templates" / "NOTES.txt"
    body = notes.read_text()
    notes.unlink()
    (chart / "templates" / "notes-under-test.yaml").write_text(
        '{{- define "notes-under-test" }}' + body + "{{ end -}}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\n"
        'data:\n  text: {{ include "notes-under-test" . | toJson }}\n'
    )
    result = helm.helm(
        "template", helm.RELEASE, str(chart), "--namespace", helm.NAMESPACE,
        "--kube-version", helm.KUBE_VERSION, "--values", str(CHART / "ci" / values),
        "--show-only", "templates/notes-under-test.yaml",
        *(a for k, v in set_values.items() for a in ("--set-json", f"{k}={json.dumps(v)}")),
    )  # fmt: skip
    text: str = yaml.safe_load(result.stdout)["data"]["text"]
    return text


SECRETS = {
    "auth.jwtKey": "jwt-key-that-must-not-show-0123456789",
    "livekit.apiSecret": "livekit-secret-that-must-not-show",
    "openai.apiKey": "sk-openai-key-that-must-not-show",
}


@pytest.mark.parametrize(
    ("values", "set_values", "token_command"),
    [
        (
            "default-values.yaml",
            {},
            f"kubectl -n {helm.NAMESPACE} create token {component_name('agent')} "
            "--audience voiceagent",
        ),
        (
            "kind-values.yaml",
            {},
            f"kubectl -n {helm.NAMESPACE} create token e2e-operator --audience voiceagent",
        ),
        (
            "state-only-values.yaml",
            {},
            f"kubectl -n {helm.NAMESPACE} create token operator --audience voiceagent",
        ),
        (
            "default-values.yaml",
            {"auth.mode": "sharedKey"},
            f"kubectl -n {helm.NAMESPACE} exec deploy/{component_name('state')} -c state -- "
            "python -m voiceagent_backbone.servicekit.token --key-file "
            "/var/run/secrets/voiceagent/jwt-key --tenant default",
        ),
    ],
    ids=["agent-account", "granted-account", "no-agent", "sharedKey"],
)
def test_notes_need_only_kubectl_and_grpcurl(
    tmp_path: Path, values: str, set_values: dict[str, Any], token_command: str
) -> None:
    """Every command NOTES give runs with kubectl, grpcurl (and the helm just used); the
    token recipe used to need a Python checkout (`.venv/bin/python`, `make setup`). NOTES
    print no secret."""
    notes = render_notes(tmp_path, {**SECRETS, **set_values}, values)
    commands = [line.strip() for line in notes.splitlines() if line.startswith("  ")]
    commands = [c for c in commands if c.split(" ")[0] in {"kubectl", "grpcurl", "helm", "export"}]
    assert commands, notes
    for command in commands:
        program = command.removeprefix("export TOKEN=$(").split(" ")[0]
        assert program in {"kubectl", "grpcurl", "helm"}, command
    # Python only ever runs inside a pod of the release, through kubectl exec.
    for line in notes.splitlines():
        if "python" in line:
            assert line.strip().startswith(f"export TOKEN=$(kubectl -n {helm.NAMESPACE} exec ")
            assert " -- python -m voiceagent_backbone." in line
    assert ".venv" not in notes
    assert "make setup" not in notes
    assert "checkout" not in notes
    token = next(c for c in commands if c.startswith("export TOKEN="))
    assert token.startswith(f"export TOKEN=$({token_command}")
    assert (
        'grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d \'{"user_id": "ada"}\' '
        "127.0.0.1:50051 voiceagent.state.v1.StateService/ListConversations"
    ) in commands
    for secret in SECRETS.values():
        assert secret not in notes
        assert base64.b64encode(secret.encode()).decode() not in notes


def test_notes_name_context_replicas_not_a_volume(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, {}, "default-values.yaml")
    (line,) = [x for x in notes.splitlines() if x.startswith("context_svc:")]
    assert line == (
        f"context_svc: {component_name('context')}:50052 (2 to 6 replicas, hpa; each rebuilds"
        " its index from state_svc)"
    )
