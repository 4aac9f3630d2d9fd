"""agent_svc in tests: settings, the worker as a child process, and reading what it stored."""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tests.support.livekit import LiveKitServer
from tests.support.processes import ChildProcess, free_port, wait_until
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.api.state.v1 import state_pb2 as pb

AGENT_NAME = "test-agent"


def agent_settings(
    tmp: Path, jwt_key: str, state_port: int, context_port: int = 0, **overrides: Any
) -> AgentSettings:
    common: dict[str, Any] = {
        "name": AGENT_NAME,
        "tenant": "tenant-a",
        "state_target": f"127.0.0.1:{state_port}",
        "context_target": f"127.0.0.1:{context_port or free_port()}",
        "auth_jwt_key": SecretStr(jwt_key),
        "spool_dir": tmp / "spool",
        "batch_linger_ms": 5.0,
        "send_retry_max_s": 0.3,
        "breaker_open_s": 1.0,
    }
    return AgentSettings(**{**common, **overrides})


@dataclass
class AgentWorker:
    process: ChildProcess
    health_url: str
    metrics_url: str
    spool_dir: Path

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as reply:
            text: str = reply.read().decode()
        return text

    def metric(self, name: str) -> float:
        """The sum of a metric's samples in the aggregated (multiprocess) scrape."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def worker_env(
    livekit: LiveKitServer,
    state_target: str,
    context_target: str,
    jwt_key: str,
    spool_dir: Path,
    health_port: int,
    metrics_port: int,
    openai_base_url: str = "http://127.0.0.1:9/v1",
    **extra: str,
) -> dict[str, str]:
    return {
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "OPENAI_API_KEY": "test-key",
        "AGENT_OPENAI_BASE_URL": openai_base_url,
        "AGENT_NAME": AGENT_NAME,
        "AGENT_TENANT": "tenant-a",
        "AGENT_STATE_TARGET": state_target,
        "AGENT_CONTEXT_TARGET": context_target,
        "AGENT_AUTH_JWT_KEY": jwt_key,
        "AGENT_SPOOL_DIR": str(spool_dir),
        "AGENT_HEALTH_PORT": str(health_port),
        "AGENT_METRICS_PORT": str(metrics_port),
        "AGENT_NUM_IDLE_PROCESSES": "1",
        "AGENT_DRAIN_TIMEOUT_S": "10",
        "AGENT_LOG_LEVEL": "INFO",
        "PROMETHEUS_MULTIPROC_DIR": str(spool_dir.parent / f"prometheus-{health_port}"),
        **extra,
    }


@contextlib.contextmanager
def running_agent_worker(
    workdir: Path,
    livekit: LiveKitServer,
    state_target: str,
    context_target: str,
    jwt_key: str,
    openai_base_url: str = "http://127.0.0.1:9/v1",
    spool_dir: Path | None = None,
    log_name: str = "agent-worker.log",
    extra_env: dict[str, str] | None = None,
) -> Iterator[AgentWorker]:
    """`python -m voiceagent_backbone.agent_svc start` against a LiveKit server, until it is
    registered."""
    health_port, metrics_port = free_port(), free_port()
    spool = spool_dir or workdir / "spool"
    env = worker_env(
        livekit,
        state_target,
        context_target,
        jwt_key,
        spool,
        health_port,
        metrics_port,
        openai_base_url,
        **(extra_env or {}),
    )
    process = ChildProcess(
        [sys.executable, "-m", "voiceagent_backbone.agent_svc", "start"],
        workdir / log_name,
        env=env,
    )
    worker = AgentWorker(
        process,
        f"http://127.0.0.1:{health_port}/",
        f"http://127.0.0.1:{metrics_port}/metrics",
        spool,
    )
    try:

        def registered() -> bool:
            if not process.alive():
                raise RuntimeError(f"agent worker exited:\n{process.output()[-4000:]}")
            return "registered worker" in process.output()

        wait_until(registered, 60, "agent worker registration")
        yield worker
    finally:
        process.stop(timeout_s=20)


def kill_process_group(process: ChildProcess) -> None:
    """SIGKILL the worker and its job processes (they share its session)."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.proc.wait(timeout=10)


def event_types(events: list[pb.Event]) -> list[str]:
    return [pb.EventType.Name(e.type) for e in events]


def sample(name: str, **labels: str) -> float:
    """A metric's current value in this process's registry (0 when not yet created)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0
