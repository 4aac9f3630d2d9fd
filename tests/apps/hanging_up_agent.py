"""A LiveKit agent on the public state layer that ends the call itself a moment after it
started, while the user is still in the room: the normal end of a call.
`python -m tests.apps.hanging_up_agent start`; tests/test_recovery.py runs it."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

from voiceagent_backbone.agent_svc import StateLayer

AGENT_NAME = "hanging-up-agent"

state = StateLayer()
server = AgentServer(port=int(os.environ.get("HEALTH_PORT", "8081")), num_idle_processes=1)


@server.rtc_session(agent_name=AGENT_NAME, on_session_end=state.on_session_end)
async def entrypoint(ctx: JobContext) -> None:
    conversation = await state.open(ctx)
    session: AgentSession[Any] = AgentSession()
    await conversation.start(session, Agent(instructions="You hang up."), room=ctx.room)
    await asyncio.sleep(float(os.environ.get("HANG_UP_AFTER_S", "2")))
    ctx.shutdown(reason="call_completed")


if __name__ == "__main__":
    cli.run_app(server)
