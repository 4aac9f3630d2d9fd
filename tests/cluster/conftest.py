"""The local cluster for every test in this folder: started once, the chart installed with
`helm install --wait` and checked with `helm test`, stopped at the end. One JSON line sums
up the run: `{"e2e": "cluster", ...}` with the phase timings and each scenario's outcome."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.cluster import (
    BRIDGE_IP,
    Cluster,
    install_chart,
    local_cluster,
    require_cluster_prerequisites,
)
from tests.support.fake_openai import FakeOpenAI, fake_openai

# The agent's OpenAI endpoint in the end-to-end values (openai.baseUrl).
OPENAI_PORT = 18001

SUMMARY: dict[str, Any] = {
    "e2e": "cluster",
    "phases_s": {},
    "helm_test": "not run",
    "scenarios": {},
}


@dataclass
class ClusterRun:
    cluster: Cluster
    openai: FakeOpenAI


# Package scope: the cluster is stopped as soon as this folder's tests are done.
@pytest.fixture(scope="package")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRun]:
    require_cluster_prerequisites()
    log = tmp_path_factory.mktemp("cluster") / "cluster.log"
    started = time.monotonic()
    # A stopped run (SIGTERM from a CI timeout, say) still stops the cluster: pytest tears
    # fixtures down after a KeyboardInterrupt, not after a plain SIGTERM.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with local_cluster(log) as cluster:
            SUMMARY["phases_s"] = cluster.phases_s
            with fake_openai(host=BRIDGE_IP, port=OPENAI_PORT) as openai:
                try:
                    install_chart(cluster, log)
                finally:
                    SUMMARY["helm_test"] = "passed" if "helm_test" in cluster.phases_s else "failed"
                yield ClusterRun(cluster, openai)
    finally:
        signal.signal(signal.SIGTERM, previous)
        SUMMARY["total_s"] = round(time.monotonic() - started, 1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.startswith("tests/cluster/"):
        return
    name = report.nodeid.rsplit("::", 1)[-1]
    if report.when == "call" or report.outcome != "passed":
        SUMMARY["scenarios"].setdefault(name, report.outcome)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUMMARY["scenarios"]:
        terminalreporter.write_line(json.dumps(SUMMARY))
