"""livekit-server v1.13.5 in dev mode on loopback, for tests."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import child_process, free_port, tool_path

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"


@dataclass(frozen=True)
class LiveKitServer:
    url: str  # ws://127.0.0.1:PORT
    http_url: str  # http://127.0.0.1:PORT (server API)
    api_key: str
    api_secret: str


def _config(port: int, tcp_port: int, udp_start: int, webhook_urls: list[str]) -> str:
    # Everything on loopback: no external IP discovery, no TURN, a small UDP range.
    webhook = (
        f"webhook:\n  api_key: {DEV_API_KEY}\n  urls: {json.dumps(webhook_urls)}\n"
        if webhook_urls
        else ""
    )
    return (
        webhook
        + f"""
port: {port}
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: {tcp_port}
  port_range_start: {udp_start}
  port_range_end: {udp_start + 40}
  use_external_ip: false
  node_ip: 127.0.0.1
turn:
  enabled: false
logging:
  level: info
"""
    )


@contextlib.contextmanager
def livekit_server(workdir: Path, webhook_urls: Sequence[str] = ()) -> Iterator[LiveKitServer]:
    binary = tool_path("livekit-server")
    port, tcp_port, udp_start = free_port(), free_port(), free_port()
    args: list[str | os.PathLike[str]] = [
        binary,
        "--dev",
        "--bind",
        "127.0.0.1",
        "--node-ip",
        "127.0.0.1",
        "--config-body",
        _config(port, tcp_port, min(udp_start, 65000), list(webhook_urls)),
    ]
    with child_process(args, workdir / "livekit-server.log") as proc:
        proc.wait_for_port(port, timeout_s=30, what="livekit-server")
        yield LiveKitServer(
            url=f"ws://127.0.0.1:{port}",
            http_url=f"http://127.0.0.1:{port}",
            api_key=DEV_API_KEY,
            api_secret=DEV_API_SECRET,
        )
