"""Crash-safe end of session: an entrypoint that raises, before or after its session
started, leaves no conversation open and no write unsent. LiveKit runs the server-level
`on_session_end` (StateLayer.on_session_end) even when the job crashed."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from livekit import api

from tests.apps.crashing_agent import AGENT_NAME
from tests.support.caller import Caller, until
from tests.support.livekit import LiveKitServer
from tests.support.processes import ChildProcess, free_port, wait_until
from tests.support.state import StateHandle, running_state, state_settings
from voiceagent_backbone.api.state.v1 import state_pb2 as pb

pytestmark = pytest.mark.livekit


@pytest.fixture
async def state(tmp_path: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    async with running_state(state_settings("sqlite", tmp_path, jwt_key, None), jwt_key) as h:
        yield h


@pytest.mark.parametrize("crash_at", ["open", "start"])
async def test_a_crashed_job_ends_its_conversation_and_flushes(
    crash_at: str, tmp_path: Path, jwt_key: str, livekit: LiveKitServer, state: StateHandle
) -> None:
    room_name = f"crash-{crash_at}"
    spool = tmp_path / "spool"
    worker = ChildProcess(
        [sys.executable, "-m", "tests.apps.crashing_agent", "start"],
        tmp_path / "crashing-agent.log",
        env={
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret,
            "HEALTH_PORT": str(free_port()),
            "CRASH_AT": crash_at,
            "AGENT_STATE_TARGET": f"127.0.0.1:{state.port}",
            "AGENT_CONTEXT_TARGET": f"127.0.0.1:{free_port()}",
            "AGENT_AUTH_JWT_KEY": jwt_key,
            "AGENT_TENANT": "tenant-a",
            "AGENT_SPOOL_DIR": str(spool),
        },
    )
    lkapi = api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)
    caller = Caller()
    stub, md = state.stub(), state.metadata()
    try:
        wait_until(lambda: "registered worker" in worker.output(), 60, "worker registration")
        await lkapi.room.create_room(api.CreateRoomRequest(name=room_name))
        await caller.join(livekit, room_name)
        await lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room_name)
        )

        async def ended() -> pb.Conversation | None:
            listed = await stub.ListConversations(
                pb.ListConversationsRequest(user_id="user-e2e"), metadata=md
            )
            done = [
                c
                for c in listed.conversations
                if c.room_name == room_name and c.status == pb.CONVERSATION_STATUS_ENDED
            ]
            return done[0] if done else None

        conversation = await until(ended, "the crashed job's conversation ended", 60)
        assert conversation is not None
        assert "crashed" in worker.output(), "the entrypoint did not crash"
        assert conversation.end_reason
        events = list(
            (
                await stub.GetHistory(
                    pb.GetHistoryRequest(conversation_id=conversation.conversation_id),
                    metadata=md,
                )
            ).events
        )
        handoffs = [e.handoff.to_agent for e in events if e.type == pb.EVENT_TYPE_AGENT_HANDOFF]
        # After the session started, its first agent's start was written and flushed too.
        assert handoffs == (["default_agent"] if crash_at == "start" else [])
        snapshot = await stub.GetLatestSnapshot(
            pb.GetLatestSnapshotRequest(conversation_id=conversation.conversation_id),
            metadata=md,
        )
        assert snapshot.snapshot.current_agent == ("default_agent" if crash_at == "start" else "")
        wait_until(lambda: not list(spool.glob("spool-*.log")), 30, "the spool emptied")
    finally:
        await caller.leave()
        await lkapi.aclose()
        worker.stop(timeout_s=20)
