"""Tracing for job processes: one tracer provider for the framework's spans and ours."""

from __future__ import annotations

from livekit.agents.telemetry import set_tracer_provider
from opentelemetry import trace

from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.servicekit import tracing


def configure_agent_tracing(settings: AgentSettings) -> None:
    """The framework's spans (session, turns, LLM, TTS) and the gRPC client spans of the
    BackendClient go through one provider, so an Enrich call made in a turn is a child span
    of that turn, and state_svc and context_svc continue the same trace.

    Conversation content (transcripts, prompts) leaves the process in span attributes only
    with AGENT_TRACE_ALLOW_PII=true."""
    tracing.configure_tracing("agent_svc", settings.otlp_endpoint, settings.trace_sample_ratio)
    set_tracer_provider(trace.get_tracer_provider(), allow_pii=settings.trace_allow_pii)
