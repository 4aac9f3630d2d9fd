"""The LiveKit worker: an AgentServer with one explicitly dispatched rtc_session.

The server (registration, health, drain on SIGTERM, load reporting) runs in the main
process; every job runs `entrypoint` in a child process, which owns one BackendClient and
therefore one spool file. It is a thin user of the public state layer (layer.py), the same
as your own agent would be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.agent_svc.agent import Assistant
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.layer import StateLayer
from voiceagent_backbone.agent_svc.observability import configure_agent_tracing
from voiceagent_backbone.agent_svc.providers import openai_providers
from voiceagent_backbone.servicekit.logging import configure_logging

log = logging.getLogger(__name__)
LAYER = StateLayer()


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before any job: load what every job needs."""
    # Imported here, in the idle process, not by the first job: the OpenAI plugin and the
    # SDK types it loads take over a second, which a call (and a call being recovered)
    # would otherwise wait for before its first word.
    from livekit.plugins import openai, silero  # noqa: F401

    settings = LAYER.settings
    configure_logging("agent_svc", settings.log_level)
    configure_agent_tracing(settings)
    metrics.initialise()
    proc.userdata["vad"] = silero.VAD.load()


async def entrypoint(ctx: JobContext) -> None:
    settings = LAYER.settings
    conversation = await LAYER.open(ctx)
    stt, model, tts = openai_providers(settings)
    session: AgentSession[Any] = AgentSession(
        stt=stt,
        # Preemptive generation stays on (LiveKit's default): enrichment is added to the
        # LLM request, not to the chat context, so it never invalidates it.
        llm=conversation.enriched(model),
        tts=tts,
        vad=ctx.proc.userdata["vad"],
    )
    agent = Assistant(conversation, settings.default_language)
    await conversation.start(session, agent, room=ctx.room)


def job_count_load(max_jobs: int) -> Callable[[AgentServer], float]:
    def load(server: AgentServer) -> float:
        return min(1.0, len(server.active_jobs) / max_jobs)

    return load


def build_server(settings: AgentSettings) -> AgentServer:
    metrics_port = settings.metrics_port if settings.metrics_port >= 0 else None
    extra: dict[str, Any] = {}
    if settings.max_jobs is not None:
        extra["load_fnc"] = job_count_load(settings.max_jobs)
    server = AgentServer(
        ws_url=settings.livekit_url or None,
        api_key=settings.livekit_api_key or None,
        api_secret=settings.livekit_api_secret.get_secret_value() or None,
        host=settings.health_host,
        port=settings.health_port,
        load_threshold=settings.load_threshold,
        drain_timeout=settings.drain_timeout_s,
        setup_fnc=prewarm,
        prometheus_port=metrics_port,
        num_idle_processes=(
            settings.num_idle_processes
            if settings.num_idle_processes is not None
            else AgentServer._default_num_idle_processes  # the framework's dev/prod default
        ),
        **extra,
    )
    server.rtc_session(entrypoint, agent_name=settings.name, on_session_end=LAYER.on_session_end)
    return server
