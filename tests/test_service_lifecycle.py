"""Services as processes: grpcurl discovery, health, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TokenFactory
from tests.support.processes import ChildProcess, free_port, tool_path
from tests.support.rpc import bearer, probe_call

GRACE_S = 3.0
# Exit comes at most this long after the grace period (interpreter teardown on a busy machine).
EXIT_SLACK_S = 3.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def start_service(
    module: str,
    prefix: str,
    jwt_key: str,
    log_dir: Path,
    grace_s: float = GRACE_S,
    extra_env: dict[str, str] | None = None,
) -> tuple[ChildProcess, int]:
    port = free_port()
    env = {
        f"{prefix}_PORT": str(port),
        f"{prefix}_METRICS_PORT": "0",
        f"{prefix}_AUTH_JWT_KEY": jwt_key,
        f"{prefix}_GRACE_PERIOD_S": str(grace_s),
        **(extra_env or {}),
    }
    proc = ChildProcess([sys.executable, "-m", module], log_dir / f"{module}.log", env)
    proc.wait_for_port(port, timeout_s=30, what=module)
    return proc, port


@pytest.fixture
def probe_process(jwt_key: str, log_dir: Path) -> Iterator[tuple[ChildProcess, int]]:
    proc, port = start_service("tests.support.probe_service", "PROBE", jwt_key, log_dir)
    try:
        yield proc, port
    finally:
        proc.stop()


async def _watch_health(channel: grpc.aio.Channel, seen: list[int]) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
            seen.append(reply.status)
    except grpc.aio.AioRpcError:
        pass  # the stream ends when the server goes away


async def _wait_for(predicate: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("condition not met")


async def test_sigterm_not_serving_in_flight_call_completes_exit_within_grace(
    probe_process: tuple[ChildProcess, int], make_token: TokenFactory
) -> None:
    proc, port = probe_process
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        seen: list[int] = []
        watcher = asyncio.create_task(_watch_health(channel, seen))
        await _wait_for(lambda: seen == [SERVING], 5)

        sleep = probe_call(channel, "Sleep")
        in_flight = asyncio.ensure_future(
            sleep(
                duration_pb2.Duration(seconds=1, nanos=500_000_000), metadata=bearer(make_token())
            )
        )
        await asyncio.sleep(0.3)  # the call is now running on the server
        started = time.monotonic()
        proc.signal(signal.SIGTERM)

        await _wait_for(lambda: NOT_SERVING in seen, 5)
        await in_flight  # completes OK, not cancelled
        code = await asyncio.to_thread(proc.wait, GRACE_S + 5)
        elapsed = time.monotonic() - started
        watcher.cancel()
    assert code == 0, proc.output()[-2000:]
    assert elapsed <= GRACE_S + EXIT_SLACK_S, f"took {elapsed:.2f}s to exit"
    assert '"msg": "stopped"' in proc.output()


async def test_sigterm_cancels_calls_that_outlive_the_grace_period(
    jwt_key: str, log_dir: Path, make_token: TokenFactory
) -> None:
    proc, port = start_service("tests.support.probe_service", "PROBE", jwt_key, log_dir, 1.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            sleep = probe_call(channel, "Sleep")
            stuck = asyncio.ensure_future(
                sleep(duration_pb2.Duration(seconds=60), metadata=bearer(make_token()))
            )
            await asyncio.sleep(0.3)
            started = time.monotonic()
            proc.signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 10)
            elapsed = time.monotonic() - started
            with pytest.raises(grpc.aio.AioRpcError):
                await stuck
        assert code == 0
        assert elapsed <= 1.0 + EXIT_SLACK_S, f"took {elapsed:.2f}s to exit"
    finally:
        proc.stop()


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [str(tool_path("grpcurl")), "-plaintext", "-max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.tools
@pytest.mark.parametrize(
    ("module", "prefix", "service"),
    [
        ("voiceagent_backbone.state_svc", "STATE", "voiceagent.state.v1.StateService"),
        ("voiceagent_backbone.context_svc", "CONTEXT", "voiceagent.context.v1.ContextService"),
    ],
)
async def test_service_answers_grpcurl_and_shuts_down_gracefully(
    module: str, prefix: str, service: str, jwt_key: str, log_dir: Path
) -> None:
    tool_path("grpcurl")
    # No state_svc here: a context_svc following a feed is ready only once it caught up
    # (tests/test_context_replicas.py), so this one follows none.
    extra = {"CONTEXT_FOLLOW_FEED": "false"} if prefix == "CONTEXT" else None
    proc, port = start_service(module, prefix, jwt_key, log_dir, extra_env=extra)
    try:
        address = f"127.0.0.1:{port}"
        listed = grpcurl(address, "list").split()
        assert service in listed
        assert "grpc.health.v1.Health" in listed
        # Reflection serves full descriptors: grpcurl needs no .proto files.
        assert "rpc " in grpcurl(address, "describe", service)
        health = json.loads(
            grpcurl("-d", '{"service": ""}', address, "grpc.health.v1.Health/Check")
        )
        assert health == {"status": "SERVING"}
        health = json.loads(
            grpcurl("-d", json.dumps({"service": service}), address, "grpc.health.v1.Health/Check")
        )
        assert health == {"status": "SERVING"}

        async with grpc.aio.insecure_channel(address) as channel:
            seen: list[int] = []
            watcher = asyncio.create_task(_watch_health(channel, seen))
            await _wait_for(lambda: seen == [SERVING], 5)
            started = time.monotonic()
            proc.signal(signal.SIGTERM)
            await _wait_for(lambda: NOT_SERVING in seen, 5)
            code = await asyncio.to_thread(proc.wait, GRACE_S + 5)
            elapsed = time.monotonic() - started
            watcher.cancel()
        assert code == 0, proc.output()[-2000:]
        assert elapsed <= GRACE_S + EXIT_SLACK_S
    finally:
        proc.stop()


def test_service_refuses_to_start_without_a_key(log_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voiceagent_backbone.state_svc"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "STATE_PORT": str(free_port()), "STATE_METRICS_PORT": "-1"},
    )
    assert result.returncode != 0
    assert "no key to verify tokens with" in result.stderr
    assert "STATE_AUTH_JWKS_URL" in result.stderr
