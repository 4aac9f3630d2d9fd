"""OpenTelemetry tracing: one tracer provider per process, W3C context over gRPC metadata."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import (
    any_of,
    full_method_name,
    negate,
    service_prefix,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

log = logging.getLogger(__name__)


def configure_tracing(
    service_name: str, otlp_endpoint: str | None, sample_ratio: float = 1.0
) -> None:
    """Install a tracer provider unless the process already has one (tests, the agent).

    Spans are always created, so trace context propagates across calls; they are exported
    only when an OTLP endpoint is set.
    """
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        log.info("exporting traces over OTLP", extra={"otlp_endpoint": otlp_endpoint})
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis=5000)


def server_interceptor(untraced: Sequence[str] = ()) -> grpc.aio.ServerInterceptor[Any, Any]:
    """Server spans that continue the caller's trace; health checks and the `untraced`
    methods ("/pkg.Service/Method") are not traced."""
    skipped = any_of(service_prefix("grpc.health.v1"), *(full_method_name(m) for m in untraced))
    interceptor: grpc.aio.ServerInterceptor[Any, Any] = aio_server_interceptor(  # type: ignore[no-untyped-call]
        filter_=negate(skipped)
    )
    return interceptor


def client_interceptors() -> Sequence[Any]:
    """Client spans that inject the current trace context into outgoing metadata."""
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]
