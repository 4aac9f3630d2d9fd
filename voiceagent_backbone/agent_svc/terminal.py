"""`python -m voiceagent_backbone.agent_svc chat`: talk to the real agent in a terminal, by typing.

The same Assistant and state layer as the voice worker; typed lines enter through
`TypedTurnSTT`, so each one takes the spoken-turn path (final transcript, enrichment, end of
turn). There is no LiveKit room: the room layer is a JSON file under .run/, so
running the chat again in the same "room" resumes the same conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.types import NOT_GIVEN

from voiceagent_backbone.agent_svc.agent import Assistant
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.layer import StateLayer
from voiceagent_backbone.agent_svc.metadata import UserProfile
from voiceagent_backbone.agent_svc.providers import OFFLINE_LABEL, OfflineResponder, TypedTurnSTT
from voiceagent_backbone.agent_svc.session import FileRoomMetadata
from voiceagent_backbone.servicekit.logging import configure_logging

log = logging.getLogger(__name__)
_REPLY_TIMEOUT_S = 60.0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m voiceagent_backbone.agent_svc chat",
        description="Chat with the agent in this terminal.",
    )
    parser.add_argument("--room", default="terminal", help="room name (one conversation per room)")
    parser.add_argument("--user", default=os.environ.get("USER") or "demo-user", help="user id")
    parser.add_argument("--name", default="", help="display name used in greetings")
    parser.add_argument("--language", default="en", help="preferred language code")
    parser.add_argument("--rooms-dir", type=Path, default=Path(".run/chat-rooms"))
    args = parser.parse_args(argv)
    if not args.room.strip() or "/" in args.room:
        parser.error("--room must be a non-empty name without '/'")
    if not args.user.strip():
        parser.error("--user must not be empty")
    return args


def typed_session(
    model: llm.LLM[Any], endpointing_s: float = 0.0
) -> tuple[AgentSession[Any], TypedTurnSTT]:
    """A session without audio whose user turns are typed lines (`TypedTurnSTT.type_line`)
    on LiveKit's own turn handling: preemptive generation (on by default) from the final
    transcript, the end of turn `endpointing_s` after it, then on_user_turn_completed."""
    typed = TypedTurnSTT()
    session: AgentSession[Any] = AgentSession(
        stt=typed,
        llm=model,
        vad=None,
        turn_handling={
            "turn_detection": "stt",
            "endpointing": {"min_delay": endpointing_s, "max_delay": endpointing_s + 0.5},
            "interruption": {"enabled": False},
        },
    )
    return session, typed


def _print(text: str) -> None:
    print(text, flush=True)


async def chat(settings: AgentSettings, args: argparse.Namespace) -> str:
    profile = UserProfile(
        user_id=args.user, display_name=args.name, preferences={"language": args.language}
    )
    conversation = await StateLayer(settings).open_room(
        FileRoomMetadata(args.rooms_dir / f"{args.room}.json"),
        room_name=args.room,
        profile=profile,
        participant_identity=args.user,
    )
    key = settings.openai_key()
    if key:
        from livekit.plugins import openai

        model: llm.LLM[Any] = openai.LLM(
            model=settings.llm_model,
            api_key=key,
            base_url=settings.openai_base_url or NOT_GIVEN,
        )
        _print(f"(using OpenAI model {settings.llm_model})")
    else:
        model = OfflineResponder()
        _print(
            f"{OFFLINE_LABEL} OPENAI_API_KEY is not set: replies come from a local offline "
            "responder that repeats you and quotes what enrichment remembered."
        )
    session, typed = typed_session(conversation.enriched(model))
    replied = asyncio.Event()

    def show(ev: Any) -> None:
        item = ev.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant":
            _print(f"agent> {item.text_content}")
            replied.set()

    session.on("conversation_item_added", show)
    await conversation.start(session, Assistant(conversation, settings.default_language))
    await _wait(replied)  # the greeting
    _print("Type a message and press Enter; /quit (or Ctrl-D) ends the conversation.")
    while True:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except EOFError:
            _print("")
            break
        line = line.strip()
        if line in ("/quit", "/exit"):
            break
        if not line:
            continue
        replied.clear()
        typed.type_line(line)
        await _wait(replied)
    conversation.state.end_reason = "user_initiated"
    await session.aclose()
    flushed = await conversation.aclose(settings.flush_timeout_s)
    if not flushed:
        _print("(state_svc did not take every write in time; they wait in the spool)")
    return conversation.conversation_id


async def _wait(event: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(event.wait(), _REPLY_TIMEOUT_S)
    except TimeoutError:
        _print("(no reply in time; see the logs)")


def main(argv: list[str]) -> None:
    args = _parse(argv)
    try:
        settings = AgentSettings()
    except ValueError as exc:
        sys.exit(f"agent_svc chat: invalid configuration: {exc}")
    configure_logging("agent_svc", os.environ.get("AGENT_CHAT_LOG_LEVEL", "WARNING"))
    conversation_id = asyncio.run(chat(settings, args))
    token = "$TOKEN"
    target = shlex.quote(settings.state_target)
    _print(
        f"\nConversation {conversation_id} is stored in state_svc. Look at it with grpcurl:\n\n"
        f'  grpcurl -plaintext -H "authorization: Bearer {token}" '
        f'-d \'{{"conversation_id": "{conversation_id}"}}\' '
        f"{target} voiceagent.state.v1.StateService/GetHistory\n"
        f'  grpcurl -plaintext -H "authorization: Bearer {token}" '
        f'-d \'{{"conversation_id": "{conversation_id}"}}\' '
        f"{target} voiceagent.state.v1.StateService/GetLatestSnapshot\n\n"
        "Run it again with the same --room to resume this conversation."
    )
