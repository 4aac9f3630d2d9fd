"""The chart's environment, read by the services' own settings classes.

Helm reads every number in a values file as a float64, and `quote` prints 7776000 as
"7.776e+06", which an int setting refuses: state_svc crash-looped on a cluster while every
render and schema check passed. Here each container's environment is built the way the
kubelet builds it (Secret references resolved from the rendered Secrets, mounted key files
written to a temporary directory) and handed to the settings class the service constructs at
start-up. A variable the class does not read is as wrong as one it refuses: it is silently
ignored.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource

from tests.support.helm import (
    CHART,
    CI_VALUES,
    Manifest,
    PodTemplate,
    component_name,
    of_kind,
    render,
    workload,
)
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.recovery_svc.config import RecoverySettings
from voiceagent_backbone.state_svc.config import StateSettings

pytestmark = pytest.mark.tools

SETTINGS: dict[str, type[BaseSettings]] = {
    "state": StateSettings,
    "context": ContextSettings,
    "agent": AgentSettings,
    "recovery": RecoverySettings,
}

# Variables a container gets that no settings class reads, and what reads them instead.
READ_ELSEWHERE = {
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client's multiprocess mode (agent job processes)",
}
# Variables from other services' namespaces that must not leak in from the test process.
FOREIGN_PREFIXES = ("STATE_", "CONTEXT_", "AGENT_", "RECOVERY_", "LIVEKIT_", "OPENAI_")

# Stand-ins for Secrets the chart names but does not render (an existingSecret), by variable.
PLACEHOLDER_SECRETS = {
    "STATE_MONGODB_URI": "mongodb://mongo-0.mongo.db.svc.cluster.local:27017/?replicaSet=rs0",
    "LIVEKIT_URL": "wss://livekit.example.com",
}
# Any other secret: an API key, a LiveKit secret, or an HS256 key (at least 32 bytes).
PLACEHOLDER_SECRET = "placeholder-secret-0123456789abcdef0123456789abcdef"

# Settings fields that take a number from the values, by the values' path. Every number a
# container gets must be listed here (or come from extraEnv), so each one is compared.
NUMBERS_FROM_VALUES: dict[str, dict[str, str]] = {
    "state": {
        "port": "state.grpc.port",
        "metrics_port": "state.metrics.port",
        "grace_period_s": "state.gracePeriodSeconds",
        "shutdown_delay_s": "state.shutdownDelaySeconds",
        "max_connection_age_s": "state.grpc.maxConnectionAgeSeconds",
        "max_connection_age_grace_s": "state.grpc.maxConnectionAgeGraceSeconds",
        "trace_sample_ratio": "tracing.sampleRatio",
        "mongodb_timeout_ms": "mongodb.timeoutMs",
        "default_retention_s": "state.defaultRetentionSeconds",
    },
    "context": {
        "port": "context.grpc.port",
        "metrics_port": "context.metrics.port",
        "grace_period_s": "context.gracePeriodSeconds",
        "shutdown_delay_s": "context.shutdownDelaySeconds",
        "max_connection_age_s": "context.grpc.maxConnectionAgeSeconds",
        "max_connection_age_grace_s": "context.grpc.maxConnectionAgeGraceSeconds",
        "trace_sample_ratio": "tracing.sampleRatio",
        "embedding_threads": "context.embedding.threads",
    },
    "agent": {
        "history_window": "agent.historyWindow",
        "enrich_budget_ms": "agent.enrichBudgetMs",
        "load_threshold": "agent.loadThreshold",
        "drain_timeout_s": "agent.drainTimeoutSeconds",
        "health_port": "agent.health.port",
        "metrics_port": "agent.metrics.port",
        "trace_sample_ratio": "tracing.sampleRatio",
    },
    "recovery": {
        "port": "recovery.grpc.port",
        "metrics_port": "recovery.metrics.port",
        "webhook_port": "recovery.webhook.port",
        "grace_period_s": "recovery.gracePeriodSeconds",
        "shutdown_delay_s": "recovery.shutdownDelaySeconds",
        "trace_sample_ratio": "tracing.sampleRatio",
        "max_attempts": "recovery.maxAttempts",
        "retry_backoff_s": "recovery.retryBackoffSeconds",
        "reconcile_interval_s": "recovery.reconcileIntervalSeconds",
    },
}

# Large, fractional and tiny numbers in every value that reaches an environment variable
# (the ci/ files keep most numbers at their defaults, small enough to print plainly).
AWKWARD_NUMBERS = """
mongodb:
  timeoutMs: 1800000
tracing:
  otlpEndpoint: http://otel-collector.observability:4317
  sampleRatio: 0.00001
state:
  grpc: {port: 60051, maxConnectionAgeSeconds: 2592000, maxConnectionAgeGraceSeconds: 1.5}
  metrics: {port: 19101}
  gracePeriodSeconds: 1000000
  shutdownDelaySeconds: 2.5
  defaultRetentionSeconds: 315360000
  extraEnv:
    STATE_MAX_SNAPSHOT_BYTES: 8388608
    STATE_FEED_POLL_INTERVAL_S: 0.125
    STATE_RETENTION_SWEEP_INTERVAL_S: 3000000
context:
  grpc: {port: 60052}
  metrics: {port: 19102}
  embedding: {threads: 16}
  extraEnv:
    CONTEXT_MAX_DOCUMENT_BYTES: 10485760
    CONTEXT_LEXICAL_WEIGHT: 0.25
agent:
  historyWindow: 500
  enrichBudgetMs: 2.5
  loadThreshold: 0.95
  drainTimeoutSeconds: 3600000
  health: {port: 18081}
  metrics: {port: 19103}
  extraEnv:
    AGENT_QUEUE_MAX_EVENTS: 1000000
    AGENT_BATCH_LINGER_MS: 0.5
    AGENT_SPOOL_FSYNC: true
recovery:
  grpc: {port: 60053}
  webhook: {port: 18090}
  metrics: {port: 19104}
  gracePeriodSeconds: 2.5
  shutdownDelaySeconds: 1000000
  maxAttempts: 50
  retryBackoffSeconds: 0.25
  reconcileIntervalSeconds: 3600000
  extraEnv:
    RECOVERY_JOIN_TIMEOUT_S: 7.5
    RECOVERY_MAX_RECOVERIES: 1000000
"""


# ------------------------------------------------------------------------------ values


def merged_values(values_files: Iterable[Path]) -> dict[str, Any]:
    """values.yaml with the files on top, merged as Helm merges them (maps key by key)."""
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for file in values_files:
        _merge_into(merged, yaml.safe_load(file.read_text()) or {})
    return merged


def _merge_into(base: dict[str, Any], overlay: Mapping[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = value


def value_at(values: Mapping[str, Any], path: str) -> Any:
    return functools.reduce(lambda node, key: node[key], path.split("."), values)


# ------------------------------------------------------------------ the kubelet's view


def secret_data(manifests: Sequence[Manifest], name: str, key: str) -> str | None:
    """A key of a Secret the chart renders; None when the chart does not render it."""
    for secret in of_kind(manifests, "Secret"):
        if secret["metadata"]["name"] == name:
            encoded = secret.get("data", {}).get(key)
            assert encoded is not None, f"Secret {name} has no key {key}"
            return base64.b64decode(encoded).decode()
    return None


def mounted_file(
    manifests: Sequence[Manifest], pod: PodTemplate, container: Mapping[str, Any], path: str
) -> str:
    """What a container reads at `path`: a file of a Secret volume mounted in it, or of a
    projected volume (a service-account token, the cluster's CA), which only the kubelet
    fills in: a placeholder stands for those."""
    file = PurePosixPath(path)
    for mount in container.get("volumeMounts", []):
        mount_path = PurePosixPath(mount["mountPath"])
        if not file.is_relative_to(mount_path):
            continue
        volume = pod.volume(mount["name"])
        relative = str(file.relative_to(mount_path))
        if "projected" in volume:
            return projected_file(volume, relative)
        assert "secret" in volume, f"{path} is on volume {mount['name']}, not a Secret"
        items = volume["secret"].get("items")
        keys = [i["key"] for i in items if i["path"] == relative] if items else [relative]
        assert keys, f"Secret volume {mount['name']} has no file {relative}"
        found = secret_data(manifests, volume["secret"]["secretName"], keys[0])
        return PLACEHOLDER_SECRET if found is None else found
    raise AssertionError(f"container {container['name']}: nothing is mounted at {path}")


def projected_file(volume: Mapping[str, Any], relative: str) -> str:
    for source in volume["projected"]["sources"]:
        token = source.get("serviceAccountToken")
        if token is not None and token["path"] == relative:
            return "placeholder.service-account.token"
        items = source.get("configMap", {}).get("items", [])
        if any(i["path"] == relative for i in items):
            assert source["configMap"]["name"] == "kube-root-ca.crt"
            return "-----BEGIN CERTIFICATE-----placeholder-----END CERTIFICATE-----"
    raise AssertionError(f"projected volume {volume['name']} has no file {relative}")


def container_environment(
    manifests: Sequence[Manifest], pod: PodTemplate, container: Mapping[str, Any], files: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """The container's environment, and the content of each `*_FILE` it names (by variable).

    Files are written under `files` (mirroring the container's paths) and the variables
    point there, since the service reads them when it starts.
    """
    assert "envFrom" not in container, "envFrom: teach this test to resolve it"
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        name = entry["name"]
        assert name not in env, f"{name} is set twice"
        if "value" in entry:
            assert isinstance(entry["value"], str), f"{name}: {entry['value']!r} is no string"
            env[name] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        found = secret_data(manifests, ref["name"], ref["key"])
        env[name] = PLACEHOLDER_SECRETS.get(name, PLACEHOLDER_SECRET) if found is None else found
    file_contents: dict[str, str] = {}
    for name in [n for n in env if n.endswith("_FILE")]:
        content = mounted_file(manifests, pod, container, env[name])
        local = files / env[name].lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(content)
        env[name] = str(local)
        file_contents[name] = content
    return env, file_contents


# --------------------------------------------------------------------- the settings


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ holding `env`, and none of the services' variables of this process."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith(FOREIGN_PREFIXES):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        yield


def unread_variables(settings_cls: type[BaseSettings], names: Iterable[str]) -> list[str]:
    """The variables among `names` that the settings class does not read.

    Each gets a distinct marker value and pydantic-settings' own environment source looks
    every field up, so prefixes, aliases and case follow the library, not a copy of it.
    """
    markers = {name: f"marker-{index}" for index, name in enumerate(names)}
    with environment(markers):
        source = EnvSettingsSource(settings_cls)
        read = {source.get_field_value(f, n)[0] for n, f in settings_cls.model_fields.items()}
    return [name for name, marker in markers.items() if marker not in read]


def is_number(field: FieldInfo) -> bool:
    kinds = set(typing.get_args(field.annotation)) or {field.annotation}
    kinds.discard(types.NoneType)
    return bool(kinds) and kinds <= {int, float}


def check_component(
    manifests: Sequence[Manifest],
    values: Mapping[str, Any],
    component: str,
    files: Path,
) -> list[BaseSettings]:
    """Every container of the component's workload starts with its rendered environment."""
    settings_cls = SETTINGS[component]
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    numbers = NUMBERS_FROM_VALUES[component]
    extra_env: dict[str, Any] = values[component]["extraEnv"]
    pod = workload(manifests, component)
    built: list[BaseSettings] = []
    for container in pod.containers():
        where = f"{component_name(component)}/{container['name']}"
        env, file_contents = container_environment(manifests, pod, container, files / where)

        unread = unread_variables(settings_cls, [n for n in env if n not in READ_ELSEWHERE])
        assert not unread, f"{where}: {settings_cls.__name__} ignores {unread}"

        with environment(env):
            try:
                settings = settings_cls(_env_file=None)
            except ValidationError as error:
                message = f"{where} would not start; its environment is refused:\n{error}"
                raise AssertionError(message) from None

        for name, content in file_contents.items():
            read_back = getattr(settings, name.removeprefix(prefix).lower()).read_text()
            assert read_back == content, f"{where}: {name} does not hold the mounted key"

        for name in env:
            field_name = name.removeprefix(prefix).lower()
            field = settings_cls.model_fields.get(field_name)
            if not name.startswith(prefix) or field is None or not is_number(field):
                continue
            if name in extra_env:
                continue  # compared below, when given as a number
            assert field_name in numbers, (
                f"{where}: {name} is a number; add its values path to NUMBERS_FROM_VALUES"
            )
            expected = value_at(values, numbers[field_name])
            parsed = getattr(settings, field_name)
            assert parsed == expected, (
                f"{where}: {numbers[field_name]}={expected!r} rendered as {name}={env[name]!r}"
                f" is read as {parsed!r}"
            )
        for name, expected in extra_env.items():
            if isinstance(expected, (bool, int, float)):
                parsed = getattr(settings, name.removeprefix(prefix).lower())
                assert parsed == expected, (
                    f"{where}: extraEnv {name}={expected!r} rendered as {env[name]!r}"
                    f" is read as {parsed!r}"
                )
        built.append(settings)
    return built


# ---------------------------------------------------------------------------- tests


@functools.cache
def ci_render(values: Path) -> tuple[Manifest, ...]:
    return tuple(render([values]))


def installed(values: Mapping[str, Any], component: str) -> bool:
    """recovery_svc comes with the agent only (it recovers the chart's agent)."""
    enabled = bool(values[component]["enabled"])
    return enabled and (component != "recovery" or bool(values["agent"]["enabled"]))


# Every component each ci values file enables (state-only-values.yaml: state alone).
CASES = [
    (values, component)
    for values in CI_VALUES
    for component in SETTINGS
    if installed(merged_values([values]), component)
]
CASE_IDS = [f"{values.name}-{component}" for values, component in CASES]


@pytest.mark.parametrize(("values", "component"), CASES, ids=CASE_IDS)
def test_every_container_starts_with_its_rendered_environment(
    values: Path, component: str, tmp_path: Path
) -> None:
    built = check_component(ci_render(values), merged_values([values]), component, tmp_path)
    assert built


def test_default_retention_reaches_state_svc_exactly(tmp_path: Path) -> None:
    values = CHART / "ci" / "default-values.yaml"
    merged = merged_values([values])
    assert merged["state"]["defaultRetentionSeconds"] == 7776000  # 90 days, values.yaml
    env = workload(ci_render(values), "state").env("state")
    assert env["STATE_DEFAULT_RETENTION_S"] == "7776000"
    (settings,) = check_component(ci_render(values), merged, "state", tmp_path)
    assert isinstance(settings, StateSettings)
    assert settings.default_retention_s == 7776000


def test_large_and_fractional_numbers_survive_rendering(tmp_path: Path) -> None:
    awkward = tmp_path / "awkward-values.yaml"
    awkward.write_text(AWKWARD_NUMBERS)
    files = [CHART / "ci" / "default-values.yaml", awkward]
    manifests, merged = render(files), merged_values(files)
    for component in SETTINGS:
        check_component(manifests, merged, component, tmp_path / "files")
    state_env = workload(manifests, "state").env("state")
    assert state_env["STATE_DEFAULT_RETENTION_S"] == "315360000"
    assert state_env["STATE_MAX_SNAPSHOT_BYTES"] == "8388608"


def test_a_misspelt_variable_is_caught(tmp_path: Path) -> None:
    """The check above can fail: pydantic-settings ignores an unknown STATE_ variable."""
    values = CHART / "ci" / "default-values.yaml"
    typo = {"state.extraEnv": {"STATE_DEFAULT_RETENTION_SECONDS": "60"}}
    manifests = render([values], typo)
    merged = merged_values([values])
    with pytest.raises(AssertionError, match="STATE_DEFAULT_RETENTION_SECONDS"):
        check_component(manifests, merged, "state", tmp_path)
