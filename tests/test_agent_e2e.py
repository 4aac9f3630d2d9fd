"""End to end with a real LiveKit server: the worker registers, is dispatched explicitly, a
participant speaks (espeak-ng speech over WebRTC), Silero VAD finds the turn, STT, LLM and
TTS answer (the OpenAI fake on loopback), and the participant hears the agent. The
participant's metadata changes, then SIGTERM drains the worker: farewell, final snapshot,
conversation ended, every write flushed. (Resuming after SIGKILL is tested with the example
agent, tests/test_example_agent.py, and with a pod deleted on the cluster.)"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit import api

from tests.support.agent import AGENT_NAME, running_agent_worker
from tests.support.caller import Caller, until
from tests.support.context import ContextHandle, context_settings, running_context
from tests.support.fake_openai import fake_openai
from tests.support.livekit import LiveKitServer
from tests.support.speech import silence_frames, speech_frames
from tests.support.state import StateHandle, running_state, state_settings
from voiceagent_backbone.api.state.v1 import state_pb2 as pb

pytestmark = pytest.mark.livekit

SPOKEN = "My favourite colour is blue."


@pytest.fixture
async def state(tmp_path: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    async with running_state(state_settings("sqlite", tmp_path, jwt_key, None), jwt_key) as h:
        yield h


@pytest.fixture
async def ctx(tmp_path: Path, jwt_key: str, state: StateHandle) -> AsyncIterator[ContextHandle]:
    async with running_context(context_settings(tmp_path, jwt_key, state.port), jwt_key) as h:
        yield h


async def test_voice_conversation_end_to_end_then_drained_by_sigterm(
    tmp_path: Path,
    jwt_key: str,
    livekit: LiveKitServer,
    state: StateHandle,
    ctx: ContextHandle,
) -> None:
    room_name = "e2e-room"
    speech = speech_frames(SPOKEN, tmp_path, trailing_silence_s=1.5)
    lkapi = api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)
    caller = Caller()
    stub, md = state.stub(), state.metadata()

    async def room_metadata() -> dict[str, object]:
        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room_name]))
        raw = rooms.rooms[0].metadata if rooms.rooms else ""
        return json.loads(raw) if raw else {}

    async def history(conversation_id: str) -> list[pb.Event]:
        reply = await stub.GetHistory(
            pb.GetHistoryRequest(conversation_id=conversation_id), metadata=md
        )
        return list(reply.events)

    with fake_openai(transcriber=[SPOKEN]) as openai_server:
        try:
            await lkapi.room.create_room(
                api.CreateRoomRequest(name=room_name, metadata=json.dumps({"app": "e2e"}))
            )
            await caller.join(livekit, room_name)
            with running_agent_worker(
                tmp_path,
                livekit,
                f"127.0.0.1:{state.port}",
                f"127.0.0.1:{ctx.port}",
                jwt_key,
                openai_server.base_url,
            ) as worker:
                await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room_name)
                )

                async def conversation_id() -> str:
                    meta = await room_metadata()
                    return str(meta.get("conversation_id", ""))

                cid = str(await until(conversation_id, "the conversation id in room metadata"))
                assert (await room_metadata())["app"] == "e2e", "other metadata keys must be kept"

                async def greeted() -> bool:
                    return caller.heard_frames > 10

                await until(greeted, "the agent's greeting audio")
                heard_before = caller.heard_frames
                await caller.speak(speech)
                await caller.speak(silence_frames(0.5))

                async def stored_turn() -> bool:
                    types = [e.type for e in await history(cid)]
                    return (
                        pb.EVENT_TYPE_TRANSCRIPTION in types
                        and pb.EVENT_TYPE_USER_MESSAGE in types
                        and types.count(pb.EVENT_TYPE_AGENT_MESSAGE) >= 2
                        and types.count(pb.EVENT_TYPE_TTS_SPEECH) >= 2
                    )

                await until(stored_turn, "the turn stored in state_svc", 90)

                async def heard_reply() -> bool:
                    return caller.heard_frames > heard_before + 10

                await until(heard_reply, "the agent's reply audio")
                events = await history(cid)
                transcription = next(e for e in events if e.type == pb.EVENT_TYPE_TRANSCRIPTION)
                assert transcription.text == SPOKEN
                assert transcription.transcription.final
                user = next(e for e in events if e.type == pb.EVENT_TYPE_USER_MESSAGE)
                assert user.text == SPOKEN
                replies = [e.text for e in events if e.type == pb.EVENT_TYPE_AGENT_MESSAGE]
                assert replies[0] == "Hello, Eve! How can I help you today?"
                assert f"I heard: {SPOKEN}" in replies
                uploads = openai_server.transcription_durations
                assert uploads, "STT got no upload"
                assert (uploads[0] or 0) > 1.0, "STT got no real speech segment"
                assert worker.metric("agent_turns_total") >= 1
                assert worker.metric("agent_events_sent_total") >= 5
                # The turn's latencies come from the messages' own metrics, not from
                # livekit's deprecated metrics_collected (a warning in every session).
                assert worker.metric("agent_llm_ttft_seconds_count") >= 1
                assert worker.metric("agent_end_of_utterance_delay_seconds_count") >= 1
                log_text = worker.process.log_path.read_text(errors="replace")
                assert "metrics_collected is deprecated" not in log_text

                # The participant's metadata changes mid-call: the profile follows.
                await caller.room.local_participant.set_metadata(
                    json.dumps({"user_id": "user-e2e", "display_name": "Eva", "language": "en"})
                )

                async def renamed() -> bool:
                    user = await stub.GetUser(pb.GetUserRequest(user_id="user-e2e"), metadata=md)
                    return bool(user.user.display_name == "Eva")

                await until(renamed, "the profile updated from participant metadata")

                # SIGTERM: the worker drains its job; the agent's on_exit says goodbye to the
                # caller who is still there, the session's close saves the snapshot and ends
                # the conversation, and every write is flushed before the process exits.
                worker.process.signal(signal.SIGTERM)
                await asyncio.to_thread(worker.process.wait, 30)
                texts = [e.text for e in await history(cid)]
                assert "Goodbye, Eva, talk to you soon." in texts
                conversation = (
                    await stub.GetConversation(
                        pb.GetConversationRequest(conversation_id=cid), metadata=md
                    )
                ).conversation
                assert conversation.status == pb.CONVERSATION_STATUS_ENDED
                snapshot = (
                    await stub.GetLatestSnapshot(
                        pb.GetLatestSnapshotRequest(conversation_id=cid), metadata=md
                    )
                ).snapshot
                assert SPOKEN in [item.text for item in snapshot.history]
                assert not list(worker.spool_dir.glob("spool-*.log")), "writes left unsent"
                events = await history(cid)
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                assert len({e.event_id for e in events}) == len(events)
        finally:
            await caller.leave()
            await lkapi.aclose()
