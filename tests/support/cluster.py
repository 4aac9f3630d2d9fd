"""The local single-node Kubernetes of deploy/local-cluster, driven from tests: start it,
install the chart, talk to what runs in it, stop it."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import IN_CI, ROOT, TOOLS_BIN, run_command

SCRIPTS = ROOT / "deploy" / "local-cluster"
VALUES = ROOT / "deploy" / "helm" / "voiceagent" / "ci" / "kind-values.yaml"
RUN_DIR = Path(os.environ.get("VOICEAGENT_CLUSTER_RUN", "/var/lib/voiceagent-cluster/run"))
KUBECONFIG = RUN_DIR / "pki" / "admin.kubeconfig"
# The bridge address (deploy/local-cluster/lib.sh): the host as the pods see it.
BRIDGE_IP = "10.213.0.1"
RELEASE = "va"
NAMESPACE = "voice"
FULLNAME = f"{RELEASE}-voiceagent"


def require_cluster_prerequisites() -> None:
    """Skips (fails under CI=true) where the cluster cannot start: not root, no apt or Go."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for command in ("apt-get", "go", "ip", "gcc"):
        if shutil.which(command) is None:
            missing.append(command)
    if not missing:
        return
    reason = f"the local Kubernetes cluster needs {', '.join(missing)}"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@dataclass
class Cluster:
    """A running cluster with the chart installed; timings of how it got there."""

    phases_s: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(KUBECONFIG), "KUBECTL": str(TOOLS_BIN / "kubectl")}

    def kubectl(self, *args: str, timeout_s: float = 120) -> str:
        return run_command([TOOLS_BIN / "kubectl", *args], self.env, timeout_s)

    def kubectl_error(self, *args: str) -> str:
        """Runs a kubectl command that must fail; its error message."""
        result = subprocess.run(
            [str(TOOLS_BIN / "kubectl"), *args], env=self.env, capture_output=True, text=True
        )
        assert result.returncode != 0, f"kubectl {' '.join(args)} succeeded"
        return result.stderr

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def helm(self, *args: str, timeout_s: float = 900) -> str:
        return run_command([TOOLS_BIN / "helm", *args], self.env, timeout_s)

    def service_address(self, name: str, port: int, namespace: str = NAMESPACE) -> str:
        """The Service's cluster address: reachable from this host through kube-proxy."""
        ip = self.kubectl(
            "get", "service", name, "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
        )
        return f"{ip}:{port}"

    def secret_value(self, name: str, key: str) -> str:
        data = self.kubectl_json("get", "secret", name, "-n", NAMESPACE)["data"]
        return base64.b64decode(data[key]).decode()

    def pods(self, selector: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kubectl_json(
            "get", "pods", "-n", namespace, "-l", selector
        )["items"]
        return items

    def save_pod_logs(self, folder: Path) -> None:
        """Every container's log (and the previous one's, after a restart) into FOLDER."""
        folder.mkdir(parents=True, exist_ok=True)
        for pod in self.kubectl_json("get", "pods", "--all-namespaces")["items"]:
            namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
            for previous in ("false", "true"):
                with contextlib.suppress(AssertionError):  # no previous container
                    text = self.kubectl(
                        "logs", "-n", namespace, name, "--all-containers", f"--previous={previous}"
                    )  # fmt: skip
                    suffix = ".previous" if previous == "true" else ""
                    if text:
                        (folder / f"{namespace}.{name}{suffix}.log").write_text(text)

    def wait_ready(self, selector: str, count: int, timeout_s: float = 180) -> list[str]:
        """Waits until exactly COUNT pods match, all Ready and none terminating; their names."""
        deadline = time.monotonic() + timeout_s
        while True:
            pods = self.pods(selector)
            ready = [
                p["metadata"]["name"]
                for p in pods
                if "deletionTimestamp" not in p["metadata"]
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions", [])
                )
            ]
            if len(ready) == count == len(pods):
                return ready
            if time.monotonic() > deadline:
                raise AssertionError(f"{selector}: {len(ready)}/{len(pods)} ready, {count} wanted")
            time.sleep(1)


def _run_phases(
    args: list[str], env: dict[str, str], log: Path, timeout_s: float
) -> dict[str, float]:
    """Runs a script that prints `phase seconds` lines; its stderr goes to LOG."""
    with log.open("ab") as stderr:
        result = subprocess.run(
            args, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=timeout_s
        )
    phases = {}
    for line in result.stdout.splitlines():
        name, _, seconds = line.partition(" ")
        with contextlib.suppress(ValueError):
            phases[name] = float(seconds)
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(args[1]).name} failed after phases {phases} (exit {result.returncode}); "
            f"see {log} and {RUN_DIR}/*.log"
        )
    return phases


@contextlib.contextmanager
def local_cluster(log: Path) -> Iterator[Cluster]:
    """The cluster up (deploy/local-cluster/up.sh), then always down (down.sh), after the
    logs of every pod are saved beside LOG. VOICEAGENT_CLUSTER_KEEP=1 leaves it running."""
    cluster = Cluster()
    try:
        cluster.phases_s.update(
            _run_phases(["bash", str(SCRIPTS / "up.sh")], cluster.env, log, timeout_s=2400)
        )
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.save_pod_logs(log.parent / "pods")
        if os.environ.get("VOICEAGENT_CLUSTER_KEEP") != "1":
            subprocess.run(["bash", str(SCRIPTS / "down.sh")], check=False, timeout=300)


def install_chart(cluster: Cluster, log: Path) -> None:
    """deploy/e2e/install.sh with the end-to-end values: CRDs, LiveKit, helm install, helm test."""
    cluster.phases_s.update(
        _run_phases(
            ["bash", str(ROOT / "deploy" / "e2e" / "install.sh"), str(VALUES)],
            cluster.env,
            log,
            timeout_s=1200,
        )
    )
