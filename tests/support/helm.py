"""Rendering the chart with helm and validating manifests with kubeconform, offline."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import kube_schemas
from tests.support.processes import ROOT, tool_path

CHART = ROOT / "deploy" / "helm" / "voiceagent"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSION = kube_schemas.KUBERNETES_VERSION
RELEASE = "va"
NAMESPACE = "voice"

Manifest = dict[str, Any]
# kubeconform's file name template for custom resources (deploy/schemas/crd/).
CRD_TEMPLATE = "/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"


class RenderError(Exception):
    """helm refused to render (a schema violation or a `fail` in a template)."""


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_path("helm")), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
        # helm writes nothing outside these folders, and reads no user config.
        env={
            "HELM_CACHE_HOME": str(ROOT / ".tools" / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(ROOT / ".tools" / "helm" / "config"),
            "HELM_DATA_HOME": str(ROOT / ".tools" / "helm" / "data"),
            "PATH": "/usr/bin:/bin",
        },
    )


def _value_args(values_files: Iterable[Path], set_values: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for file in values_files:
        args += ["--values", str(file)]
    for key, value in set_values.items():
        if isinstance(value, str):
            args += ["--set-string", f"{key}={value}"]
        else:
            args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def render_text(
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, Any] | None = None,
    show_only: str | None = None,
) -> str:
    args = [
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *_value_args(values_files, set_values or {}),
    ]
    if show_only:
        args += ["--show-only", show_only]
    result = helm(*args, check=False)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


def render(
    values_files: Iterable[Path] = (),
    set_values: Mapping[str, Any] | None = None,
) -> list[Manifest]:
    text = render_text(values_files, set_values)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_ci(name: str, set_values: Mapping[str, Any] | None = None) -> list[Manifest]:
    return render([CHART / "ci" / name], set_values)


@dataclass(frozen=True)
class Validation:
    resources: int
    valid: int
    invalid: int
    errors: int
    skipped: int
    messages: list[str]


def kubeconform(manifests_text: str) -> Validation:
    """kubeconform -strict with local schemas only; a kind without a schema is an error."""
    core = kube_schemas.core_schema_dir()
    result = subprocess.run(
        [
            str(tool_path("kubeconform")),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            KUBE_VERSION,
            "-schema-location",
            f"{core}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            "-schema-location",
            str(kube_schemas.CRD_DIR) + CRD_TEMPLATE,
            "-",
        ],
        input=manifests_text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    messages = [
        f"{r.get('kind')} {r.get('name')}: {r.get('status')} {r.get('msg')}"
        for r in report.get("resources", [])
        if r.get("status") != "statusValid"
    ]
    return Validation(
        resources=int(
            summary["valid"] + summary["invalid"] + summary["errors"] + summary["skipped"]
        ),
        valid=int(summary["valid"]),
        invalid=int(summary["invalid"]),
        errors=int(summary["errors"]),
        skipped=int(summary["skipped"]),
        messages=messages,
    )


# ------------------------------------------------------------------ reading manifests


def of_kind(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: Sequence[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def component_name(component: str) -> str:
    return f"{RELEASE}-voiceagent-{component}"


@dataclass(frozen=True)
class PodTemplate:
    """The pods a workload (or a bare test Pod) runs."""

    kind: str
    name: str
    labels: dict[str, str]
    spec: dict[str, Any]

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    def containers(self) -> list[dict[str, Any]]:
        return list(self.spec.get("containers", [])) + list(self.spec.get("initContainers", []))

    def container_ports(self) -> dict[str, int]:
        """name → containerPort over every container (unnamed ports under their number)."""
        ports: dict[str, int] = {}
        for container in self.containers():
            for port in container.get("ports", []):
                ports[port.get("name", str(port["containerPort"]))] = int(port["containerPort"])
        return ports

    def env(self, container: str) -> dict[str, Any]:
        for c in self.spec["containers"]:
            if c["name"] == container:
                return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
        raise KeyError(container)

    def volume(self, name: str) -> dict[str, Any]:
        for volume in self.spec.get("volumes", []):
            if volume["name"] == name:
                return dict(volume)
        raise KeyError(name)

    def mount_source(self, container: str, path: str) -> dict[str, Any]:
        """The volume mounted at `path` in `container`."""
        for c in self.spec["containers"]:
            if c["name"] != container:
                continue
            for mount in c.get("volumeMounts", []):
                if mount["mountPath"] == path:
                    return self.volume(mount["name"])
        raise KeyError(f"{container}: nothing mounted at {path}")


def pod_templates(manifests: Sequence[Manifest]) -> list[PodTemplate]:
    pods: list[PodTemplate] = []
    for m in manifests:
        if m["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            template = m["spec"]["template"]
            pods.append(
                PodTemplate(
                    m["kind"],
                    m["metadata"]["name"],
                    dict(template["metadata"].get("labels", {})),
                    template["spec"],
                )
            )
        elif m["kind"] == "Pod":
            pods.append(
                PodTemplate("Pod", m["metadata"]["name"], dict(m["metadata"]["labels"]), m["spec"])
            )
    return pods


def workload(manifests: Sequence[Manifest], component: str) -> PodTemplate:
    found = [p for p in pod_templates(manifests) if p.kind != "Pod" and p.component == component]
    assert len(found) == 1, f"expected one workload for {component}, found {found}"
    return found[0]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels / matchExpressions, or a plain map) against labels."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        match_labels: Mapping[str, str] = selector.get("matchLabels") or {}
        expressions: list[dict[str, Any]] = selector.get("matchExpressions") or []
    else:
        match_labels, expressions = selector, []
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selected_pods(manifests: Sequence[Manifest], selector: Mapping[str, Any]) -> list[PodTemplate]:
    return [p for p in pod_templates(manifests) if selects(selector, p.labels)]
