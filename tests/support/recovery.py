"""recovery_svc in tests: replicas as child processes, and finding an agent's job process."""

from __future__ import annotations

import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.support.livekit import LiveKitServer
from tests.support.processes import ChildProcess, free_port


@dataclass
class RecoveryReplica:
    process: ChildProcess
    port: int
    webhook_port: int
    metrics_port: int

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/livekit/webhook"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples that carry these labels."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in text.splitlines():
            sample = line.startswith(name + " ") or line.startswith(name + "{")
            if sample and all(w in line for w in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total


def recovery_ports() -> tuple[int, int, int]:
    """gRPC, webhook and metrics ports (the webhook's is needed before livekit-server
    starts, to configure its webhooks)."""
    return free_port(), free_port(), free_port()


def start_recovery(
    workdir: Path,
    name: str,
    ports: tuple[int, int, int],
    livekit: LiveKitServer,
    state_port: int,
    jwt_key: str,
    **extra: str,
) -> RecoveryReplica:
    port, webhook_port, metrics_port = ports
    env = {
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "RECOVERY_PORT": str(port),
        "RECOVERY_WEBHOOK_PORT": str(webhook_port),
        "RECOVERY_METRICS_PORT": str(metrics_port),
        "RECOVERY_REPLICA_ID": name,
        "RECOVERY_STATE_TARGET": f"127.0.0.1:{state_port}",
        "RECOVERY_AUTH_JWT_KEY": jwt_key,
        "RECOVERY_TENANT": "tenant-a",
        "RECOVERY_LOG_LEVEL": "INFO",
        **extra,
    }
    process = ChildProcess(
        [sys.executable, "-m", "voiceagent_backbone.recovery_svc"], workdir / f"{name}.log", env
    )
    process.wait_for_port(port, 30, name)
    process.wait_for_port(webhook_port, 30, f"{name} webhooks")
    return RecoveryReplica(process, port, webhook_port, metrics_port)


def job_processes(worker_pid: int, livekit: LiveKitServer) -> list[int]:
    """The worker's job processes that are in a room (connected to livekit-server's port;
    idle processes are not)."""
    port = int(livekit.url.rsplit(":", 1)[1])
    found = []
    for child in psutil.Process(worker_pid).children(recursive=True):
        try:
            if any(c.raddr and c.raddr.port == port for c in child.net_connections("tcp")):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found
