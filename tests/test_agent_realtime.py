"""The state layer with a realtime model, offline: livekit-plugins-openai's RealtimeModel talks
to the loopback fake of the OpenAI Realtime API (tests/support/fake_realtime.py) over a real
websocket, and state_svc is real. There is no room and no audio I/O: user turns are typed
into `session.generate_reply(user_input=...)`, which makes the plugin send
`conversation.item.create` and `response.create` as it does for text input in production.

What the project claims for realtime models (layer.py, handlers.py): their turns are persisted,
their unrecoverable errors are persisted, a resumed room restores its earlier turns into the
realtime session, and `enriched()` refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice.events import CloseEvent
from livekit.plugins import openai

from tests.support.agent import agent_settings, event_types, sample
from tests.support.fake_realtime import FakeRealtime, fake_realtime, item_text
from tests.support.state import StateHandle, running_state, state_settings
from voiceagent_backbone.agent_svc import Conversation, FileRoomMetadata, StateLayer, UserProfile
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.servicekit.ids import uuid7

pytestmark = pytest.mark.timeout(60)

API_KEY = "test-key"
INSTRUCTIONS = "You are a terse test agent."
QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


@pytest.fixture(scope="module")
async def state(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[StateHandle]:
    settings = state_settings("sqlite", tmp_path_factory.mktemp("realtime-state"), jwt_key, None)
    async with running_state(settings, jwt_key) as handle:
        yield handle


@pytest.fixture(scope="module")
def realtime_server() -> Iterator[FakeRealtime]:
    with fake_realtime(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def realtime(realtime_server: FakeRealtime) -> FakeRealtime:
    """The module's fake with nothing recorded yet: each test reads only its own events."""
    realtime_server.clear()
    return realtime_server


@dataclass
class RealtimeRun:
    session: AgentSession[Any]
    conversation: Conversation
    replies: asyncio.Queue[str]
    closed: asyncio.Future[CloseEvent]
    errors: list[Any] = field(default_factory=list)  # the session's "error" events
    unrecoverable: asyncio.Event = field(default_factory=asyncio.Event)

    async def turn(self, text: str, timeout_s: float = 10) -> str:
        """One typed user turn; the assistant's reply as committed to the chat context."""
        await asyncio.wait_for(self.session.generate_reply(user_input=text), timeout_s)
        return await asyncio.wait_for(self.replies.get(), timeout_s)


@contextlib.asynccontextmanager
async def realtime_session(
    settings: AgentSettings,
    room_file: Path,
    user: str,
    server: FakeRealtime,
    *,
    api_key: str = API_KEY,
) -> AsyncIterator[RealtimeRun]:
    """open_room + a realtime AgentSession started through the state layer (unwrapped: the
    realtime model is passed as it is), closed and flushed on exit."""
    conversation = await StateLayer(settings).open_room(
        FileRoomMetadata(room_file),
        room_name=room_file.stem,
        profile=UserProfile(user_id=user),
        participant_identity=f"identity-{user}",
    )
    model = openai.realtime.RealtimeModel(base_url=server.base_url, api_key=api_key)
    session: AgentSession[Any] = AgentSession(llm=model)
    loop = asyncio.get_running_loop()
    run = RealtimeRun(session, conversation, asyncio.Queue(), loop.create_future())

    def on_item(ev: Any) -> None:
        if isinstance(ev.item, llm.ChatMessage) and ev.item.role == "assistant":
            run.replies.put_nowait(ev.item.text_content or "")

    def on_close(ev: CloseEvent) -> None:
        if not run.closed.done():
            run.closed.set_result(ev)

    def on_error(ev: Any) -> None:
        run.errors.append(ev)
        if not ev.error.recoverable:
            run.unrecoverable.set()

    session.on("conversation_item_added", on_item)
    session.on("error", on_error)
    session.on("close", on_close)
    await conversation.start(session, Agent(instructions=INSTRUCTIONS))
    try:
        yield run
    finally:
        await session.aclose()
        await model.aclose()
        assert await conversation.backend.flush(10), "writes not stored"
        await conversation.aclose(1)


async def _history(state: StateHandle, conversation_id: str) -> list[pb.Event]:
    reply = await state.stub().GetHistory(
        pb.GetHistoryRequest(conversation_id=conversation_id), metadata=state.metadata()
    )
    return list(reply.events)


async def _stored_conversation(state: StateHandle, conversation_id: str) -> pb.Conversation:
    reply = await state.stub().GetConversation(
        pb.GetConversationRequest(conversation_id=conversation_id), metadata=state.metadata()
    )
    conversation: pb.Conversation = reply.conversation
    return conversation


def _texts(events: list[pb.Event], type_: int) -> list[str]:
    return [e.text for e in events if e.type == type_]


def _created_items(server: FakeRealtime, connection: int | None = None) -> list[dict[str, Any]]:
    """The items the client sent with conversation.item.create, in order."""
    events = server.events("conversation.item.create", connection=connection)
    return [ev["item"] for ev in events]


# -- a. turns ------------------------------------------------------------------------------


async def test_realtime_user_and_assistant_messages_are_persisted(
    tmp_path: Path, jwt_key: str, state: StateHandle, realtime: FakeRealtime
) -> None:
    settings = agent_settings(tmp_path, jwt_key, state.port)
    user = f"user-{uuid7()[-6:]}"
    async with realtime_session(settings, tmp_path / "room-a.json", user, realtime) as run:
        assert await run.turn("What is the capital of France?") == (
            "I heard: What is the capital of France?"
        )
        assert await run.turn("And of Spain?") == "I heard: And of Spain?"
        conversation_id = run.conversation.conversation_id

    # The plugin spoke the protocol we expect: instructions in a session.update, each user
    # text as a conversation.item.create, each reply asked for with a response.create.
    updates = realtime.events("session.update")
    assert any(u["session"].get("instructions") == INSTRUCTIONS for u in updates), updates
    sent_users = [i for i in _created_items(realtime) if i.get("role") == "user"]
    assert [item_text(i) for i in sent_users] == ["What is the capital of France?", "And of Spain?"]
    assert len(realtime.events("response.create")) == 2
    assert realtime.protocol_errors == []
    assert realtime.events("error", direction="server") == []

    history = await _history(state, conversation_id)
    assert _texts(history, pb.EVENT_TYPE_USER_MESSAGE) == [
        "What is the capital of France?",
        "And of Spain?",
    ]
    assert _texts(history, pb.EVENT_TYPE_AGENT_MESSAGE) == [
        "I heard: What is the capital of France?",
        "I heard: And of Spain?",
    ]
    # The persisted messages are the very items of the realtime conversation: the user's
    # carry the ids the client created them with, the agent's the ids the server generated.
    stored_ids = {
        e.text: e.payload.fields["item_id"].string_value
        for e in history
        if e.type in (pb.EVENT_TYPE_USER_MESSAGE, pb.EVENT_TYPE_AGENT_MESSAGE)
    }
    server_items = {item_text(i): i["id"] for i in realtime.conversation()}
    assert stored_ids == server_items
    types = event_types(history)
    assert "EVENT_TYPE_ERROR" not in types, types
    assert (await _stored_conversation(state, conversation_id)).status == (
        pb.CONVERSATION_STATUS_ENDED
    )


# -- b. errors -----------------------------------------------------------------------------


async def test_recoverable_realtime_error_is_reported_and_the_session_goes_on(
    tmp_path: Path, jwt_key: str, state: StateHandle, realtime: FakeRealtime
) -> None:
    """A server_error answering response.create: the plugin reports it recoverable (it only
    treats quota, billing and key errors as fatal), the handler counts it, the turn gets no
    reply and the next turn works."""
    settings = agent_settings(tmp_path, jwt_key, state.port)
    user = f"user-{uuid7()[-6:]}"
    counted = sample("agent_session_errors_total", source="llm", recoverable="true")
    async with realtime_session(settings, tmp_path / "room-b1.json", user, realtime) as run:
        realtime.fail_next_response("The server had an error while processing your request.")
        await asyncio.wait_for(run.session.generate_reply(user_input="Are you there?"), 10)
        assert run.replies.empty()
        assert await run.turn("Still there?") == "I heard: Still there?"
        assert not run.closed.done()

    [failed, _answered] = realtime.events("response.create")
    [error] = realtime.events("error", direction="server")
    assert error["error"]["event_id"] == failed["event_id"]
    assert [bool(e.error.recoverable) for e in run.errors] == [True]
    assert sample("agent_session_errors_total", source="llm", recoverable="true") == counted + 1


async def _fatal_error_run(
    tmp_path: Path, jwt_key: str, state: StateHandle, realtime: FakeRealtime, how: str
) -> tuple[list[pb.Event], pb.Conversation]:
    """A session the realtime server ends: "quota" answers a response.create with an
    insufficient_quota error event, "key" refuses the connection's bearer key (an
    invalid_api_key error event, then close code 3000). Returns what state_svc stored."""
    settings = agent_settings(tmp_path, jwt_key, state.port)
    user = f"user-{uuid7()[-6:]}"
    key = API_KEY if how == "quota" else "sk-wrong"
    async with realtime_session(
        settings, tmp_path / f"room-{how}.json", user, realtime, api_key=key
    ) as run:
        if how == "quota":
            realtime.fail_next_response(
                QUOTA_MESSAGE, type_="insufficient_quota", code="insufficient_quota"
            )
            run.session.generate_reply(user_input="Hello?")
        await asyncio.wait_for(run.unrecoverable.wait(), 10)
        # AgentSession closes itself on that error, but its close fails inside livekit-agents
        # (the realtime session's aclose re-raises the error that ended it): no "close"
        # event comes of it, and the aclose() on leaving this block finds nothing to close.
        conversation_id = run.conversation.conversation_id
    assert [bool(e.error.recoverable) for e in run.errors] == [False]
    [error] = realtime.events("error", direction="server")
    code = "insufficient_quota" if how == "quota" else "invalid_api_key"
    assert error["error"]["code"] == code
    history = await _history(state, conversation_id)
    return history, await _stored_conversation(state, conversation_id)


@pytest.mark.parametrize("how", ["quota", "key"])
async def test_unrecoverable_realtime_error_is_persisted(
    tmp_path: Path, jwt_key: str, state: StateHandle, realtime: FakeRealtime, how: str
) -> None:
    history, _ = await _fatal_error_run(tmp_path, jwt_key, state, realtime, how)
    errors = [e for e in history if e.type == pb.EVENT_TYPE_ERROR]
    assert errors, event_types(history)
    stored = errors[0]  # what on_error stored (a "session closed on error" may follow)
    assert stored.error.source == "llm"
    assert stored.error.recoverable is False
    assert "Realtime API" in stored.error.message
    assert "APIError" in stored.error.stack_trace
    if how == "key":
        assert [c.authorized for c in realtime.connections] == [False]


async def test_realtime_session_ended_by_the_server_ends_its_conversation(
    tmp_path: Path, jwt_key: str, state: StateHandle, realtime: FakeRealtime
) -> None:
    _, conversation = await _fatal_error_run(tmp_path, jwt_key, state, realtime, "key")
    assert conversation.status == pb.CONVERSATION_STATUS_ENDED


async def test_persisted_realtime_error_says_what_the_server_said(
    tmp_path: Path, jwt_key: str, state: StateHandle, realtime: FakeRealtime
) -> None:
    history, _ = await _fatal_error_run(tmp_path, jwt_key, state, realtime, "quota")
    stored = next(e for e in history if e.type == pb.EVENT_TYPE_ERROR)
    assert "insufficient_quota" in stored.error.message
    assert QUOTA_MESSAGE in stored.error.message


# -- c. resume -----------------------------------------------------------------------------


@dataclass
class Resumed:
    conversation_id: str
    resumed_id: str
    resumed: bool
    earlier: list[tuple[str, str]]  # (role, text) of the first session's turns
    restored_items: list[dict[str, Any]]  # items the client created before the new turn
    restored_chain: list[tuple[str, str]]  # (previous_item_id, item id) of those creates
    server_conversation: list[dict[str, Any]]  # the second websocket's conversation
    server_errors: list[dict[str, Any]]
    reply: str


@pytest.fixture(scope="module")
async def resumed_room(
    tmp_path_factory: pytest.TempPathFactory,
    jwt_key: str,
    state: StateHandle,
    realtime_server: FakeRealtime,
) -> Resumed:
    """Two realtime sessions in the same room file: two turns, then a resume and one turn."""
    realtime = realtime_server
    realtime.clear()
    tmp = tmp_path_factory.mktemp("realtime-resume")
    settings = agent_settings(tmp, jwt_key, state.port)
    room = tmp / "room-c.json"
    user = f"user-{uuid7()[-6:]}"
    earlier = [
        ("user", "My sister Maria lives in Porto."),
        ("assistant", "I heard: My sister Maria lives in Porto."),
        ("user", "She is a pianist."),
        ("assistant", "I heard: She is a pianist."),
    ]
    async with realtime_session(settings, room, user, realtime) as run:
        await run.turn(earlier[0][1])
        await run.turn(earlier[2][1])
        conversation_id = run.conversation.conversation_id
    first = len(realtime.connections)
    async with realtime_session(settings, room, user, realtime) as run:
        resumed, resumed_id = run.conversation.resumed, run.conversation.conversation_id
        # The restored turns went out while the session started: start() returns once the
        # plugin has had each of them acknowledged or refused.
        reply = await run.turn("Where does my sister live?")
        creates = realtime.events("conversation.item.create", connection=first)
        server_conversation = realtime.conversation(first)
        server_errors = realtime.events("error", direction="server", connection=first)
    before = list(
        itertools.takewhile(lambda c: item_text(c["item"]) != "Where does my sister live?", creates)
    )
    return Resumed(
        conversation_id,
        resumed_id,
        resumed,
        earlier,
        [c["item"] for c in before],
        [(str(c.get("previous_item_id")), str(c["item"]["id"])) for c in before],
        server_conversation,
        server_errors,
        reply,
    )


async def test_resume_sends_the_earlier_turns_to_the_realtime_session(
    resumed_room: Resumed,
) -> None:
    """On resume the layer puts the earlier turns into the agent's chat context; at start the
    plugin replays that context to the server as conversation.item.create events, chained
    (the first after "root", each next after the one before), ahead of the new turn."""
    assert resumed_room.resumed is True
    assert resumed_room.resumed_id == resumed_room.conversation_id
    restored = resumed_room.restored_items
    sent = [(i["role"], item_text(i)) for i in restored]
    assert list(dict.fromkeys(sent)) == resumed_room.earlier
    assert [p for p, _ in resumed_room.restored_chain] == ["root"] + [
        i for _, i in resumed_room.restored_chain[:-1]
    ]
    assert resumed_room.reply == "I heard: Where does my sister live?"


async def test_resumed_turns_reach_the_realtime_model_once(resumed_room: Resumed) -> None:
    assert resumed_room.server_errors == []
    texts = [(i["role"], item_text(i)) for i in resumed_room.server_conversation]
    assert texts[: len(resumed_room.earlier)] == resumed_room.earlier
    assert texts[len(resumed_room.earlier)] == ("user", "Where does my sister live?")


# -- d. enriched ---------------------------------------------------------------------------


async def test_enriched_refuses_a_realtime_model(
    tmp_path: Path, jwt_key: str, state: StateHandle, realtime: FakeRealtime
) -> None:
    settings = agent_settings(tmp_path, jwt_key, state.port)
    conversation = await StateLayer(settings).open_room(
        FileRoomMetadata(tmp_path / "room-d.json"),
        room_name="room-d",
        profile=UserProfile(user_id=f"user-{uuid7()[-6:]}"),
    )
    try:
        model = openai.realtime.RealtimeModel(base_url=realtime.base_url, api_key=API_KEY)
        with pytest.raises(TypeError, match="realtime model"):
            conversation.enriched(model)  # type: ignore[arg-type]
        # The refusal is about realtime models, not every model: a plain LLM is wrapped.
        plain = openai.LLM(model="gpt-4.1-mini", base_url=realtime.base_url, api_key=API_KEY)
        assert conversation.enriched(plain) is not plain
        assert realtime.connections == []  # refusing it did not open a session
    finally:
        await conversation.aclose(1)
