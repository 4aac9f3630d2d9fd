"""What scripts/run.sh checks before and while it starts the services, each failure said in
one line on the terminal:

    run_checks.py settings
        every setting of state_svc, context_svc and the chat (STATE_*, CONTEXT_*, AGENT_*
        from the environment) valid, and every port the services listen on free
    run_checks.py wait NAME:PORT:PID:LOG ...
        until each service answers its health check with SERVING; a service that exits
        first is named with the last line of its log (the services say a bad setting or a
        port in use in one line)
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

_SERVING_TIMEOUT_S = 180.0
_IN_USE = "in use"


def check_settings() -> list[str]:
    from voiceagent_backbone.agent_svc.config import AgentSettings
    from voiceagent_backbone.context_svc.config import ContextSettings
    from voiceagent_backbone.servicekit.cli import configuration_error, env_name
    from voiceagent_backbone.state_svc.config import StateSettings

    problems: list[str] = []
    listeners: list[tuple[str, str, int]] = []  # variable, host, port
    for name, kind in (
        ("state_svc", StateSettings),
        ("context_svc", ContextSettings),
        ("agent_svc chat", AgentSettings),
    ):
        try:
            settings = kind()
        except ValidationError as exc:
            problems.append(configuration_error(name, kind, exc))
            continue
        if isinstance(settings, AgentSettings):
            continue  # the chat listens on nothing
        for host_field, port_field in (("host", "port"), ("metrics_host", "metrics_port")):
            listeners.append(
                (
                    env_name(kind, port_field),
                    str(getattr(settings, host_field)),
                    int(getattr(settings, port_field)),
                )
            )
    seen: dict[int, str] = {}
    in_use: list[str] = []
    for variable, host, port in listeners:
        if port <= 0:  # any free port, or off
            continue
        if port in seen:
            problems.append(
                f"run: {variable}={port} is the same port as {seen[port]}; set one of them to "
                "another port"
            )
            continue
        seen[port] = variable
        why = _bind_failure(host, port)
        if why == _IN_USE:
            in_use.append(f"{variable}={port}")
        elif why:
            problems.append(f"run: {variable}={port}: cannot listen on {host}:{port}: {why}")
    if in_use:
        if len(in_use) == 1:
            fix = f"set {in_use[0].split('=')[0]} to a free port"
        else:
            fix = "set those variables to free ports"
        problems.append(
            f"run: already in use: {', '.join(in_use)} (another `make run`?); stop it, or {fix}"
        )
    return problems


def _bind_failure(host: str, port: int) -> str:
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"{exc.strerror} (not an address of this machine)"
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            # As the servers do: connections of an earlier run in TIME_WAIT do not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return _IN_USE
                return exc.strerror or str(exc)
    return ""


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    pid: int
    log: Path

    @classmethod
    def parse(cls, text: str) -> Service:
        name, port, pid, log = text.split(":", 3)
        return cls(name, int(port), int(pid), Path(log))

    def alive(self) -> bool:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:  # no /proc here: ask the kernel
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            return True
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def last_words(self) -> str:
        """The last line of the log, as said (a JSON log line by its message)."""
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line]
        except OSError:
            return "(no log)"
        if not lines:
            return "(nothing in its log)"
        last = lines[-1].strip()
        try:
            entry = json.loads(last)
        except ValueError:
            return last
        if isinstance(entry, dict) and "msg" in entry:
            exc = str(entry.get("exc") or "").strip().splitlines()
            return str(entry["msg"]) + (f": {exc[-1]}" if exc else "")
        return last


async def wait_serving(service: Service, deadline: float) -> str:
    """ "" once SERVING; else why not, in one line."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not service.alive():
                said = service.last_words().removeprefix(f"{service.name}: ")
                return f"run: {service.name} stopped while starting: {said} (log: {service.log})"
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return ""
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    return (
        f"run: {service.name} did not answer on port {service.port} within "
        f"{_SERVING_TIMEOUT_S:.0f} s; see {service.log}"
    )


async def wait_all(services: list[Service]) -> list[str]:
    deadline = time.monotonic() + _SERVING_TIMEOUT_S
    waits = [asyncio.ensure_future(wait_serving(s, deadline)) for s in services]
    for done in asyncio.as_completed(waits):
        problem = await done
        if problem:  # one failure is enough: the others are stopped by run.sh
            for wait in waits:
                wait.cancel()
            return [problem]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("settings")
    wait = commands.add_parser("wait")
    wait.add_argument("services", nargs="+", type=Service.parse)
    args = parser.parse_args()
    try:
        if args.command == "settings":
            problems = check_settings()
        else:
            problems = asyncio.run(wait_all(args.services))
    except KeyboardInterrupt:
        sys.exit(130)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
