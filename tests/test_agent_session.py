"""The agent's hooks and handlers in a real AgentSession, offline: typed STT events drive the
spoken-turn path (so on_user_turn_completed runs), the LLM is livekit-plugins-openai against
the loopback fake, and state_svc and context_svc are real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession, AgentTask, function_tool, llm
from livekit.plugins import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.agent import agent_settings, event_types, sample
from tests.support.context import (
    ContextHandle,
    context_settings,
    eventually,
    indexed,
    running_context,
    say,
)
from tests.support.fake_openai import (
    FakeOpenAI,
    Reply,
    ToolCall,
    default_responder,
    fake_openai,
    message_text,
)
from tests.support.state import StateHandle, new_conversation, running_state, state_settings
from tests.support.turns import framework_log
from voiceagent_backbone.agent_svc import Conversation, FileRoomMetadata, StateLayer, UserProfile
from voiceagent_backbone.agent_svc.agent import Assistant
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.conversation import ConversationState
from voiceagent_backbone.agent_svc.observability import configure_agent_tracing
from voiceagent_backbone.agent_svc.providers import TypedTurnSTT
from voiceagent_backbone.agent_svc.terminal import typed_session
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.servicekit.ids import uuid7

CONTEXT_HEADER = "Context that may help"


@pytest.fixture(scope="module")
async def state(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[StateHandle]:
    settings = state_settings("sqlite", tmp_path_factory.mktemp("agent-state"), jwt_key, None)
    async with running_state(settings, jwt_key) as handle:
        yield handle


@pytest.fixture(scope="module")
async def ctx(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str, state: StateHandle
) -> AsyncIterator[ContextHandle]:
    settings = context_settings(tmp_path_factory.mktemp("agent-ctx"), jwt_key, state.port)
    async with running_context(settings, jwt_key) as handle:
        yield handle


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeOpenAI]:
    with fake_openai() as server:
        yield server


@dataclass
class RunningSession:
    session: AgentSession[Any]
    agent: Agent
    conversation: Conversation
    state: ConversationState
    typed: TypedTurnSTT
    replies: asyncio.Queue[str]

    async def reply(self, timeout_s: float = 20) -> str:
        return await asyncio.wait_for(self.replies.get(), timeout_s)

    async def turn(self, text: str, final_after_s: float = 0.0) -> str:
        self.typed.type_line(text, final_after_s)
        return await self.reply()


@contextlib.asynccontextmanager
async def agent_session(
    settings: AgentSettings,
    room_file: Path,
    profile: UserProfile,
    llm_base_url: str,
    agent: Callable[[Conversation], Agent] | None = None,
    endpointing_s: float = 0.0,
) -> AsyncIterator[RunningSession]:
    """A typed-turn session on the state layer: the project's Assistant, or `agent(...)`."""
    conversation = await StateLayer(settings).open_room(
        FileRoomMetadata(room_file),
        room_name=room_file.stem,
        profile=profile,
        participant_identity=f"identity-{profile.user_id}",
    )
    session, typed = typed_session(
        conversation.enriched(
            openai.LLM(model="gpt-4.1-mini", base_url=llm_base_url, api_key="test-key")
        ),
        endpointing_s,
    )
    replies: asyncio.Queue[str] = asyncio.Queue()

    def on_item(ev: Any) -> None:
        if isinstance(ev.item, llm.ChatMessage) and ev.item.role == "assistant":
            replies.put_nowait(ev.item.text_content or "")

    session.on("conversation_item_added", on_item)
    started = agent(conversation) if agent else Assistant(conversation, settings.default_language)
    await conversation.start(session, started)
    try:
        yield RunningSession(session, started, conversation, conversation.state, typed, replies)
    finally:
        await session.aclose()
        assert await conversation.backend.flush(10), "writes not stored"
        await conversation.aclose(1)


def _chat_requests(server: FakeOpenAI) -> list[list[dict[str, Any]]]:
    return [r.json["messages"] for r in server.requests_to("/chat/completions")]


def _context_messages(messages: list[dict[str, Any]]) -> list[str]:
    return [
        message_text(m)
        for m in messages
        if m.get("role") in ("system", "developer") and message_text(m).startswith(CONTEXT_HEADER)
    ]


async def test_turns_are_enriched_persisted_and_resumed(
    tmp_path: Path, jwt_key: str, state: StateHandle, ctx: ContextHandle, llm_server: FakeOpenAI
) -> None:
    user = f"user-{uuid7()[-6:]}"
    earlier = await new_conversation(state, user_ids=(user,))
    before = ctx.domain.turns_by_tenant.get("tenant-a", 0)
    await say(
        state,
        earlier.conversation_id,
        [("user", "My sister Maria lives in Porto."), ("agent", "How lovely!")],
    )
    await indexed(ctx, "tenant-a", before + 2)
    settings = agent_settings(tmp_path, jwt_key, state.port, ctx.port, enrich_budget_ms=2000)
    room = tmp_path / "room-1.json"
    profile = UserProfile(user_id=user, display_name="Ana", preferences={"language": "en"})
    llm_server.clear()

    async with agent_session(settings, room, profile, llm_server.base_url) as run:
        assert run.state.resumed is False
        assert await run.reply() == "Hello, Ana! How can I help you today?"
        assert await run.turn("Where does my sister live?") == "I heard: Where does my sister live?"
        first = _chat_requests(llm_server)[-1]
        injected = _context_messages(first)
        assert len(injected) == 1, first
        assert "Porto" in injected[0], first
        await run.turn("Thanks a lot.")
        second = _chat_requests(llm_server)[-1]
        # Context is injected for one reply only: the second request has only its own.
        assert len(_context_messages(second)) <= 1
        assert any(message_text(m) == "Where does my sister live?" for m in second)
        conversation_id = run.state.conversation_id
        assert run.state.history.last("user") is not None

    stub, md = state.stub(), state.metadata()
    history = (
        await stub.GetHistory(pb.GetHistoryRequest(conversation_id=conversation_id), metadata=md)
    ).events
    types = event_types(list(history))
    assert types.count("EVENT_TYPE_TRANSCRIPTION") == 2
    assert types.count("EVENT_TYPE_USER_MESSAGE") == 2
    # The greeting, two replies and the farewell.
    assert types.count("EVENT_TYPE_AGENT_MESSAGE") == 4
    # Greeting and farewell are said to everyone: stored, but flagged as not memory.
    not_memory = [
        e.text
        for e in history
        if "memory" in e.payload.fields and not e.payload.fields["memory"].bool_value
    ]
    assert not_memory == [
        "Hello, Ana! How can I help you today?",
        "Goodbye, Ana, talk to you soon.",
    ]
    assert types.count("EVENT_TYPE_TTS_SPEECH") == 4
    user_texts = [e.text for e in history if e.type == pb.EVENT_TYPE_USER_MESSAGE]
    assert user_texts == ["Where does my sister live?", "Thanks a lot."]
    speech = [e.speech for e in history if e.type == pb.EVENT_TYPE_TTS_SPEECH]
    assert {s.source for s in speech} == {"say", "generate_reply"}
    conversation = (
        await stub.GetConversation(
            pb.GetConversationRequest(conversation_id=conversation_id), metadata=md
        )
    ).conversation
    assert conversation.status == pb.CONVERSATION_STATUS_ENDED
    assert conversation.end_reason
    snapshot = (
        await stub.GetLatestSnapshot(
            pb.GetLatestSnapshotRequest(conversation_id=conversation_id), metadata=md
        )
    ).snapshot
    assert [i.text for i in snapshot.history if i.role == pb.ROLE_USER] == user_texts
    profile_stored = (await stub.GetUser(pb.GetUserRequest(user_id=user), metadata=md)).user
    assert profile_stored.display_name == "Ana"

    # The same room again: the conversation resumes, it is not created twice.
    llm_server.clear()
    async with agent_session(settings, room, profile, llm_server.base_url) as run:
        assert run.state.resumed is True
        assert run.state.conversation_id == conversation_id
        assert await run.reply() == "Welcome back, Ana! Shall we pick up where we left off?"
        await run.turn("What did I ask you before?")
        messages = _chat_requests(llm_server)[-1]
        texts = [message_text(m) for m in messages]
        assert "Where does my sister live?" in texts, "history not restored into the chat context"
        assert any("continues an earlier session" in t for t in texts)
    listed = await stub.ListConversations(pb.ListConversationsRequest(user_id=user), metadata=md)
    assert len(listed.conversations) == 2  # the seeded one and ours, not a third


async def test_profile_change_during_session_updates_instructions_and_profile(
    tmp_path: Path, jwt_key: str, state: StateHandle, ctx: ContextHandle, llm_server: FakeOpenAI
) -> None:
    user = f"user-{uuid7()[-6:]}"
    settings = agent_settings(tmp_path, jwt_key, state.port, ctx.port)
    async with agent_session(
        settings, tmp_path / "room-2.json", UserProfile(user_id=user), llm_server.base_url
    ) as run:
        assert await run.reply() == "Hello! How can I help you today?"
        await run.conversation.update_profile(
            UserProfile(
                user_id=user, display_name="Bea", preferences={"language": "de", "tone": "casual"}
            )
        )
        llm_server.clear()
        await run.turn("Hallo!")
        instructions = " ".join(
            message_text(m)
            for m in _chat_requests(llm_server)[-1]
            if m.get("role") in ("system", "developer")
        )
        assert "Bea" in instructions
        assert "'de'" in instructions
        assert "casual" in instructions
    stored = (
        await state.stub().GetUser(pb.GetUserRequest(user_id=user), metadata=state.metadata())
    ).user
    assert stored.display_name == "Bea"
    assert stored.preferences["language"] == "de"


async def test_turn_goes_on_within_budget_when_context_svc_hangs(
    tmp_path: Path, jwt_key: str, state: StateHandle, llm_server: FakeOpenAI
) -> None:
    """A context_svc that accepts connections and never answers: the reply still comes,
    the LLM request waits no more than the budget, and the timeout is counted."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # never accepted: connections hang in the backlog
        settings = agent_settings(
            tmp_path, jwt_key, state.port, hung.getsockname()[1], enrich_budget_ms=150
        )
        timeouts = sample("agent_enrich_timeouts_total")
        wait_sum, wait_count = (
            sample("agent_enrich_wait_seconds_sum"),
            sample("agent_enrich_wait_seconds_count"),
        )
        async with agent_session(
            settings, tmp_path / "room-3.json", UserProfile(user_id="user-h"), llm_server.base_url
        ) as run:
            await run.reply()
            assert await run.turn("Is anyone there?") == "I heard: Is anyone there?"
        assert sample("agent_enrich_timeouts_total") == timeouts + 1
        added = sample("agent_enrich_wait_seconds_sum") - wait_sum
        assert sample("agent_enrich_wait_seconds_count") == wait_count + 1
        assert added < 0.150 + 0.1, f"the request waited {added * 1000:.0f} ms"


async def test_enrich_call_and_the_enriched_request_are_in_the_session_trace(
    tmp_path: Path, jwt_key: str, state: StateHandle, ctx: ContextHandle, llm_server: FakeOpenAI
) -> None:
    """One trace: the Enrich client span (started at the final transcript, which context_svc
    continues) and, under the framework's llm_node, the `enriched_llm` span that waited for
    it and holds the wrapped LLM's own request span."""
    settings = agent_settings(tmp_path, jwt_key, state.port, ctx.port)
    configure_agent_tracing(settings)
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with agent_session(
        settings, tmp_path / "room-4.json", UserProfile(user_id="user-t"), llm_server.base_url
    ) as run:
        await run.reply()
        await run.turn("Trace this turn, please.")
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    session = next(s for s in spans if s.name == "agent_session")
    enrich = [s for s in spans if s.name.endswith("ContextService/Enrich") and s.parent is not None]
    assert enrich, [s.name for s in spans]
    assert {s.context.trace_id for s in enrich} == {session.context.trace_id}
    wrapped = [s for s in spans if s.name == "enriched_llm"]
    assert len(wrapped) == 1, [s.name for s in spans]
    assert wrapped[0].parent is not None
    assert by_id[wrapped[0].parent.span_id].name == "llm_node"
    inner = [s for s in spans if s.name == "llm_request"]
    assert [by_id[s.parent.span_id].name for s in inner if s.parent] == ["enriched_llm"]


async def test_unrecoverable_llm_error_is_reported_with_stack_trace(
    tmp_path: Path, jwt_key: str, state: StateHandle, ctx: ContextHandle, llm_server: FakeOpenAI
) -> None:
    """The LLM refuses the key (401, not retryable): the error is counted and stored in
    state_svc with its stack trace; the call itself goes on."""
    settings = agent_settings(tmp_path, jwt_key, state.port, ctx.port)
    before = sample("agent_session_errors_total", source="llm", recoverable="false")
    try:
        async with agent_session(
            settings, tmp_path / "room-5.json", UserProfile(user_id="user-err"), llm_server.base_url
        ) as run:
            await run.reply()
            llm_server.api_key = "a-key-the-agent-does-not-have"
            run.typed.type_line("Hello?")
            await eventually(
                lambda: (
                    sample("agent_session_errors_total", source="llm", recoverable="false") > before
                ),
                "the LLM error event",
            )
            conversation_id = run.state.conversation_id
    finally:
        llm_server.api_key = None
    assert sample("agent_session_errors_total", source="llm", recoverable="false") == before + 1
    stub, md = state.stub(), state.metadata()
    events = (
        await stub.GetHistory(pb.GetHistoryRequest(conversation_id=conversation_id), metadata=md)
    ).events
    errors = [e for e in events if e.type == pb.EVENT_TYPE_ERROR]
    assert errors, event_types(list(events))
    assert errors[0].error.source == "llm"
    assert not errors[0].error.recoverable
    assert "Traceback" in errors[0].error.stack_trace
    conversation = (
        await stub.GetConversation(
            pb.GetConversationRequest(conversation_id=conversation_id), metadata=md
        )
    ).conversation
    assert conversation.status == pb.CONVERSATION_STATUS_ENDED


async def test_preemptive_reply_is_kept_and_carries_the_context_of_its_own_transcript(
    tmp_path: Path, jwt_key: str, state: StateHandle, ctx: ContextHandle, llm_server: FakeOpenAI
) -> None:
    """Your own agent (plain instructions, no greeting) on the state layer, with LiveKit's
    preemptive generation on: enrichment starts at the final transcript and is added to the
    LLM request, so the reply generated before the end of turn is the one used. When the
    transcript grows before the end of turn, the reply carries the context of the whole
    transcript, not of its first part."""
    user = f"user-{uuid7()[-6:]}"
    earlier = await new_conversation(state, user_ids=(user,))
    before = ctx.domain.turns_by_tenant.get("tenant-a", 0)
    await say(
        state,
        earlier.conversation_id,
        [("user", "My sister Maria lives in Porto."), ("user", "Our dog Rex fears thunder.")],
    )
    await indexed(ctx, "tenant-a", before + 2)
    settings = agent_settings(tmp_path, jwt_key, state.port, ctx.port, enrich_budget_ms=2000)
    llm_server.clear()
    with framework_log() as log_lines:
        async with agent_session(
            settings,
            tmp_path / "room-6.json",
            UserProfile(user_id=user),
            llm_server.base_url,
            agent=lambda _: Agent(instructions="You are the test's own agent."),
            endpointing_s=0.6,
        ) as run:
            conversation = run.conversation
            ask = "Where does my sister live?"
            assert await run.turn(ask, final_after_s=0.05) == f"I heard: {ask}"
            # Two finals in one turn: the first one's preemptive reply is superseded.
            run.typed.type_line(ask, final_after_s=0.05)
            run.typed.type_line("And what does our dog fear?", final_after_s=0.05)
            both = f"{ask} And what does our dog fear?"
            assert await run.reply() == f"I heard: {both}"
    assert sum("using preemptive generation" in line for line in log_lines) == 2, log_lines
    assert not [line for line in log_lines if "preemptive generation invalidated" in line]
    requests = _chat_requests(llm_server)
    users = [[message_text(m) for m in r if m.get("role") == "user"][-1] for r in requests]
    assert users[0] == "Where does my sister live?"
    assert users[-1] == both
    for messages, text in ((requests[0], users[0]), (requests[-1], both)):
        injected = _context_messages(messages)
        assert len(injected) == 1, messages
        # The block is the one context_svc gave for this very transcript.
        assert injected[0] == await conversation.enricher.context_for(text)
    assert "Porto" in _context_messages(requests[0])[0]
    assert "thunder" in _context_messages(requests[-1])[0]
    assert _context_messages(requests[0])[0] != _context_messages(requests[-1])[0]


class InvoiceTask(AgentTask[str]):
    """An AgentTask of the user's: asks for an invoice number, completes with it."""

    def __init__(self) -> None:
        super().__init__(instructions="Ask for the invoice number and record it.")

    async def on_enter(self) -> None:
        self.session.say("What is your invoice number?")

    @function_tool
    async def record_invoice(self, number: str) -> None:
        """Record the invoice number the user gave."""
        self.complete(number)


class Billing(Agent):
    def __init__(self, chat_ctx: llm.ChatContext) -> None:
        super().__init__(instructions="You are billing.", chat_ctx=chat_ctx)

    async def on_enter(self) -> None:
        number = await InvoiceTask()
        self.session.say(f"Invoice {number} noted.")


class Reception(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are reception.")

    @function_tool
    async def transfer_to_billing(self) -> Agent:
        """Transfer the user to billing."""
        return Billing(self.chat_ctx)


def handoff_responder(messages: list[dict[str, Any]]) -> str | Reply:
    """Tool calls for the two requests that need them, "I heard: ..." otherwise."""
    # The last message that is not the context block enrichment adds after the user's.
    last = next(m for m in reversed(messages) if m.get("role") not in ("system", "developer"))
    if last.get("role") == "tool":
        return "Done."
    said = message_text(last) if last.get("role") == "user" else ""
    if "billing" in said:
        return Reply(tool_calls=[ToolCall("transfer_to_billing", {})])
    if "invoice number is" in said:
        return Reply(tool_calls=[ToolCall("record_invoice", {"number": said.split()[-1][:-1]})])
    return default_responder(messages)


async def test_handoffs_and_agent_tasks_keep_one_conversation_and_follow_the_active_agent(
    tmp_path: Path, jwt_key: str, state: StateHandle, ctx: ContextHandle, llm_server: FakeOpenAI
) -> None:
    """Reception hands off to Billing (a tool returning an agent), Billing runs an AgentTask:
    one conversation throughout, each handoff and tool call recorded, enrichment added to
    the task's requests too, and the final snapshot names the agent that was active."""
    user = f"user-{uuid7()[-6:]}"
    earlier = await new_conversation(state, user_ids=(user,))
    before = ctx.domain.turns_by_tenant.get("tenant-a", 0)
    await say(state, earlier.conversation_id, [("user", "Invoice 77 was charged twice.")])
    await indexed(ctx, "tenant-a", before + 1)
    settings = agent_settings(tmp_path, jwt_key, state.port, ctx.port, enrich_budget_ms=2000)
    llm_server.clear()
    llm_server.responder = handoff_responder
    try:
        async with agent_session(
            settings,
            tmp_path / "room-7.json",
            UserProfile(user),
            llm_server.base_url,
            agent=lambda _: Reception(),
            endpointing_s=0.2,
        ) as run:
            conversation = run.conversation
            heard = await run.turn("Please put me through to billing.", final_after_s=0.05)
            assert heard == "What is your invoice number?"
            assert await run.turn("My invoice number is 77.", 0.05) == "Invoice 77 noted."
            assert conversation.state.current_agent == "billing"
    finally:
        llm_server.responder = default_responder

    stub, md = state.stub(), state.metadata()
    cid = conversation.conversation_id
    events = list(
        (await stub.GetHistory(pb.GetHistoryRequest(conversation_id=cid), metadata=md)).events
    )
    handoffs = [(e.handoff.from_agent, e.handoff.to_agent) for e in events if e.handoff.to_agent]
    assert handoffs[:2] == [("", "reception"), ("reception", "billing")], handoffs
    assert ("billing", "invoice_task") in handoffs, handoffs
    assert ("invoice_task", "billing") in handoffs, handoffs
    tools = [e.tool_call for e in events if e.type == pb.EVENT_TYPE_TOOL_CALL]
    assert [(t.name, t.is_error) for t in tools] == [
        ("transfer_to_billing", False),
        ("record_invoice", False),
    ]
    assert json.loads(tools[1].arguments) == {"number": "77"}
    listed = await stub.ListConversations(pb.ListConversationsRequest(user_id=user), metadata=md)
    assert len(listed.conversations) == 2  # the seeded one and this one, across three agents
    snapshot = (
        await stub.GetLatestSnapshot(pb.GetLatestSnapshotRequest(conversation_id=cid), metadata=md)
    ).snapshot
    assert snapshot.current_agent == "billing"
    # The task's own request (under its instructions) got this turn's context too.
    task_requests = [
        r
        for r in _chat_requests(llm_server)
        if any("Ask for the invoice number" in message_text(m) for m in r)
    ]
    assert task_requests
    assert any("Invoice 77" in c for c in _context_messages(task_requests[0])), task_requests[0]
