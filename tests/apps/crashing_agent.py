"""A LiveKit agent on the public state layer whose entrypoint raises: after `open`
(CRASH_AT=open, before any session exists) or after the session started (CRASH_AT=start).
`python -m tests.apps.crashing_agent start`; tests/test_agent_crash.py runs it."""

from __future__ import annotations

import os
from typing import Any

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

from voiceagent_backbone.agent_svc import StateLayer

AGENT_NAME = "crashing-agent"

state = StateLayer()
server = AgentServer(port=int(os.environ.get("HEALTH_PORT", "8081")), num_idle_processes=1)


@server.rtc_session(agent_name=AGENT_NAME, on_session_end=state.on_session_end)
async def entrypoint(ctx: JobContext) -> None:
    conversation = await state.open(ctx)
    if os.environ.get("CRASH_AT") == "open":
        raise RuntimeError("the entrypoint crashed after opening the conversation")
    session: AgentSession[Any] = AgentSession()
    await conversation.start(session, Agent(instructions="You crash."), room=ctx.room)
    raise RuntimeError("the entrypoint crashed after the session started")


if __name__ == "__main__":
    cli.run_app(server)
