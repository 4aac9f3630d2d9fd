"""Bring your own agent: a LiveKit agent of its own (instructions, a tool, a greeting, its
providers) that keeps its conversations in voiceagent-backbone.

Only the lines marked `# state` are about state; the rest is a plain LiveKit agent.

    pip install "voiceagent-backbone[agent]"
    export LIVEKIT_URL=ws://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... OPENAI_API_KEY=...
    export AGENT_STATE_TARGET=state-svc:50051 AGENT_CONTEXT_TARGET=context-svc:50052
    export AGENT_AUTH_JWT_KEY_FILE=/var/run/secrets/voiceagent/jwt-key
    python agent.py start

Dispatch it explicitly to a room (agent name "shop-assistant"). Every turn, tool call and
handoff is stored in state_svc; dispatched again into the same room, it resumes the
conversation with its history, and each reply gets what context_svc remembers of the user.
"""

from __future__ import annotations

import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.agents.llm import function_tool
from livekit.plugins import openai, silero

from voiceagent_backbone.agent_svc import StateLayer  # state

ORDERS = {"42": "shipped on Monday", "7": "waiting for payment"}


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


state = StateLayer()  # state: AGENT_* settings (where state_svc and context_svc are)
server = AgentServer(setup_fnc=prewarm, port=int(os.environ.get("HEALTH_PORT", "8081")))


class ShopAssistant(Agent):
    def __init__(self, returning: bool) -> None:
        super().__init__(
            instructions=(
                "You are Ada, the order assistant of Example Shop. Answer in one or two short "
                "sentences. Use the order_status tool for any question about an order."
            )
        )
        self._returning = returning

    async def on_enter(self) -> None:
        if self._returning:
            self.session.say("Welcome back to Example Shop! Where were we?")
        else:
            self.session.say("Hi, this is Ada from Example Shop. How can I help?")

    @function_tool
    async def order_status(self, order_id: str) -> str:
        """Look up where an order is.

        Args:
            order_id: The order number the customer gave.
        """
        return ORDERS.get(order_id.strip(), "not found")


@server.rtc_session(agent_name="shop-assistant", on_session_end=state.on_session_end)  # state
async def entrypoint(ctx: JobContext) -> None:
    conversation = await state.open(ctx)  # state: resume or create; who the user is
    session: AgentSession[None] = AgentSession(
        stt=openai.STT(model="gpt-4o-mini-transcribe", use_realtime=False),
        llm=conversation.enriched(openai.LLM(model="gpt-4.1-mini")),  # state: context per turn
        tts=openai.TTS(model="gpt-4o-mini-tts", voice="ash", response_format="pcm"),
        vad=ctx.proc.userdata["vad"],
    )
    agent = ShopAssistant(returning=conversation.resumed)
    await conversation.start(session, agent, room=ctx.room)  # state: restore, persist, start


if __name__ == "__main__":
    cli.run_app(server)
