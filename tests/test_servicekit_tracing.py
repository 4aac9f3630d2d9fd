"""OpenTelemetry: the client span and the server span of one call share a trace."""

from __future__ import annotations

from google.protobuf import empty_pb2, struct_pb2
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from tests.conftest import SPANS, TokenFactory
from tests.support.probe_service import SERVICE
from tests.support.rpc import probe_call
from voiceagent_backbone.servicekit.client import create_channel
from voiceagent_backbone.servicekit.server import GrpcServer


async def test_client_and_server_spans_share_the_trace(
    probe: GrpcServer, make_token: TokenFactory
) -> None:
    SPANS.clear()
    token = make_token()
    async with create_channel(f"127.0.0.1:{probe.port}", token=lambda: token) as channel:
        call = probe_call(channel, "Whoami", struct_pb2.Struct)
        with trace.get_tracer("test").start_as_current_span("agent-turn") as parent:
            reply = await call(empty_pb2.Empty())
    assert reply["tenant"] == "tenant-a"
    spans = SPANS.get_finished_spans()
    method = f"/{SERVICE}/Whoami"
    client = [s for s in spans if s.kind == SpanKind.CLIENT and s.name == method]
    server = [s for s in spans if s.kind == SpanKind.SERVER and s.name == method]
    assert len(client) == 1
    assert len(server) == 1
    trace_id = parent.get_span_context().trace_id
    assert client[0].context is not None
    assert server[0].context is not None
    assert client[0].context.trace_id == trace_id
    assert server[0].context.trace_id == trace_id
    # The server span is the child of the client span: context crossed the wire.
    assert server[0].parent is not None
    assert server[0].parent.span_id == client[0].context.span_id
    assert server[0].parent.is_remote
