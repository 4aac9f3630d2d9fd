"""Prometheus metrics with go-grpc-prometheus names, aborted calls under their real code."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from google.protobuf import duration_pb2, empty_pb2, wrappers_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TokenFactory
from tests.support.probe_service import SERVICE
from tests.support.rpc import bearer, probe_call
from voiceagent_backbone.servicekit.server import GrpcServer


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples from the service's real /metrics endpoint, keyed by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def handled(port: int, method: str, code: str, rpc_type: str = "unary") -> float:
    labels = (
        ("grpc_code", code),
        ("grpc_method", method),
        ("grpc_service", SERVICE),
        ("grpc_type", rpc_type),
    )
    return scrape(port).get(("grpc_server_handled_total", labels), 0.0)


async def counted(
    port: int, method: str, code: str, expected: float, rpc_type: str = "unary"
) -> float:
    """The count once it reaches `expected` (at most 5 s): the server counts a call as it
    finishes, which may be a moment after the client has its answer."""
    deadline = asyncio.get_running_loop().time() + 5
    while (value := handled(port, method, code, rpc_type)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    return value


async def test_abort_is_counted_under_its_real_code(
    probe: GrpcServer, probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    before = handled(probe.metrics_port, "Abort", "INVALID_ARGUMENT")
    call = probe_call(probe_channel, "Abort")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(empty_pb2.Empty(), metadata=bearer(make_token()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await counted(probe.metrics_port, "Abort", "INVALID_ARGUMENT", before + 1) == before + 1


async def test_domain_error_and_auth_failures_are_counted(
    probe: GrpcServer, probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    port = probe.metrics_port
    invalid_before = handled(port, "Validate", "INVALID_ARGUMENT")
    unauth_before = handled(port, "Validate", "UNAUTHENTICATED")
    ok_before = handled(port, "Validate", "OK")
    call = probe_call(probe_channel, "Validate", wrappers_pb2.StringValue)
    with pytest.raises(grpc.aio.AioRpcError):
        await call(wrappers_pb2.StringValue(value=""), metadata=bearer(make_token()))
    with pytest.raises(grpc.aio.AioRpcError):
        await call(wrappers_pb2.StringValue(value="x"))
    await call(wrappers_pb2.StringValue(value="x"), metadata=bearer(make_token()))
    assert await counted(port, "Validate", "INVALID_ARGUMENT", invalid_before + 1) == (
        invalid_before + 1
    )
    assert await counted(port, "Validate", "UNAUTHENTICATED", unauth_before + 1) == (
        unauth_before + 1
    )
    assert await counted(port, "Validate", "OK", ok_before + 1) == ok_before + 1


async def test_started_and_latency_histogram(
    probe: GrpcServer, probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    call = probe_call(probe_channel, "Whoami")
    labels = (("grpc_method", "Sleep"), ("grpc_service", SERVICE), ("grpc_type", "unary"))
    before = scrape(probe.metrics_port)
    sleep = probe_call(probe_channel, "Sleep")
    await sleep(duration_pb2.Duration(nanos=20_000_000), metadata=bearer(make_token()))
    after = scrape(probe.metrics_port)
    assert (
        after[("grpc_server_started_total", labels)]
        == before.get(("grpc_server_started_total", labels), 0) + 1
    )
    count_key = ("grpc_server_handling_seconds_count", labels)
    assert after[count_key] == before.get(count_key, 0) + 1
    sum_key = ("grpc_server_handling_seconds_sum", labels)
    assert after[sum_key] - before.get(sum_key, 0) >= 0.02
    del call


async def test_server_stream_counted(
    probe: GrpcServer, probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    before = handled(probe.metrics_port, "Count", "OK", "server_stream")
    stream = probe_channel.unary_stream(
        f"/{SERVICE}/Count",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=wrappers_pb2.Int32Value.FromString,
    )
    values = [
        m.value
        async for m in stream(wrappers_pb2.Int32Value(value=5), metadata=bearer(make_token()))
    ]
    assert values == [0, 1, 2, 3, 4]
    assert await counted(probe.metrics_port, "Count", "OK", before + 1, "server_stream") == (
        before + 1
    )


async def test_deadline_exceeded_is_counted(
    probe: GrpcServer, probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    before = handled(probe.metrics_port, "Sleep", "DEADLINE_EXCEEDED")
    sleep = probe_call(probe_channel, "Sleep")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await sleep(duration_pb2.Duration(seconds=5), metadata=bearer(make_token()), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server notices the deadline on its own schedule.
    assert await counted(probe.metrics_port, "Sleep", "DEADLINE_EXCEEDED", before + 1) == (
        before + 1
    )
