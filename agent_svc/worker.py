"""The LiveKit worker: an AgentServer with one explicitly dispatched rtc_session.

The server (registration, health, drain on SIGTERM, load reporting) runs in the main
process; every job runs `entrypoint` in a child process, which owns one BackendClient and
therefore one spool file.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit import rtc
from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, room_io

from agent_svc import metrics
from agent_svc.agent import StatefulAgent
from agent_svc.backend import BackendClient
from agent_svc.config import AgentSettings
from agent_svc.handlers import attach_handlers
from agent_svc.metadata import parse_participant_metadata
from agent_svc.observability import configure_agent_tracing
from agent_svc.session import LiveKitRoomMetadata, open_conversation
from servicekit.logging import configure_logging

log = logging.getLogger(__name__)


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process before any job: load what every job needs."""
    from livekit.plugins import silero

    settings = AgentSettings()
    configure_logging("agent_svc", settings.log_level)
    configure_agent_tracing(settings)
    metrics.initialise()
    proc.userdata["settings"] = settings
    proc.userdata["vad"] = silero.VAD.load()


def _profile_task(agent: StatefulAgent, participant: rtc.Participant) -> None:
    profile = parse_participant_metadata(participant.metadata, participant.identity)
    task = asyncio.create_task(agent.update_profile(profile))
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("profile update failed", exc_info=task.exception())


async def entrypoint(ctx: JobContext) -> None:
    settings: AgentSettings = ctx.proc.userdata.get("settings") or AgentSettings()
    backend = BackendClient(settings)
    await backend.start()

    async def flush_on_shutdown(reason: str) -> None:
        # Runs after the session closed: everything queued is sent, or left in the spool
        # for the next process in this pod.
        await backend.aclose(settings.flush_timeout_s)

    ctx.add_shutdown_callback(flush_on_shutdown)

    await ctx.connect()
    participant = await ctx.wait_for_participant()
    profile = parse_participant_metadata(participant.metadata, participant.identity)
    state = await open_conversation(
        settings=settings,
        backend=backend,
        room=LiveKitRoomMetadata(ctx.room.name, ctx.room.metadata, ctx.api),
        room_name=ctx.room.name,
        profile=profile,
        participant_identity=participant.identity,
    )

    from agent_svc.providers import openai_providers

    stt, llm, tts = openai_providers(settings)
    session: AgentSession[Any] = AgentSession(
        stt=stt,
        llm=llm,
        tts=tts,
        vad=ctx.proc.userdata["vad"],
        # Enrichment changes each reply's context, which would always invalidate a reply
        # generated before the turn ended: no preemptive generation.
        turn_handling={"preemptive_generation": {"enabled": False}},
    )
    attach_handlers(session, state)
    agent = StatefulAgent(state, settings)

    @ctx.room.on("participant_metadata_changed")
    def _on_metadata(p: rtc.Participant, old: str, new: str) -> None:
        if p.identity == participant.identity:
            _profile_task(agent, p)

    @ctx.room.on("participant_disconnected")
    def _on_left(p: rtc.RemoteParticipant) -> None:
        if p.identity == participant.identity:
            state.user_left = True
            state.end_reason = "participant_disconnected"

    metrics.SESSIONS_ACTIVE.inc()
    session.on("close", lambda _: metrics.SESSIONS_ACTIVE.dec())
    await session.start(
        agent=agent,
        room=ctx.room,
        room_options=room_io.RoomOptions(participant_identity=participant.identity),
    )


def build_server(settings: AgentSettings) -> AgentServer:
    metrics_port = settings.metrics_port if settings.metrics_port >= 0 else None
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
    )
    server.rtc_session(entrypoint, agent_name=settings.name)
    return server
