"""The state_svc contract, over gRPC, against both stores: SQLite and MongoDB (FerretDB)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from tests.support.ferretdb import MongoTarget
from tests.support.rpc import violations
from tests.support.state import (
    StateHandle,
    event,
    new_conversation,
    running_state,
    state_settings,
)
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.servicekit.ids import uuid7


@pytest.fixture(params=["sqlite", "mongodb"])
async def state(
    request: pytest.FixtureRequest, tmp_path: Path, jwt_key: str
) -> AsyncIterator[StateHandle]:
    mongo: MongoTarget | None = None
    if request.param == "mongodb":
        mongo = request.getfixturevalue("mongo")
    settings = state_settings(request.param, tmp_path, jwt_key, mongo)
    async with running_state(settings, jwt_key) as handle:
        yield handle


async def rpc_error(awaitable: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable  # type: ignore[misc]
    return info.value


# -- conversations --------------------------------------------------------------------


async def test_create_get_find_end_conversation(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    created = await new_conversation(state, room="room-1")
    assert created.status == pb.CONVERSATION_STATUS_OPEN
    assert created.tenant_id == "tenant-a"
    assert created.user_ids == ["user-1"]

    got = await stub.GetConversation(
        pb.GetConversationRequest(conversation_id=created.conversation_id), metadata=md
    )
    assert got.conversation == created

    found = await stub.FindOpenConversation(
        pb.FindOpenConversationRequest(room_name="room-1"), metadata=md
    )
    assert found.conversation.conversation_id == created.conversation_id

    ended = await stub.EndConversation(
        pb.EndConversationRequest(conversation_id=created.conversation_id, reason="user hung up"),
        metadata=md,
    )
    assert ended.conversation.status == pb.CONVERSATION_STATUS_ENDED
    assert ended.conversation.end_reason == "user hung up"
    assert ended.conversation.HasField("ended_at")
    again = await stub.FindOpenConversation(
        pb.FindOpenConversationRequest(room_name="room-1"), metadata=md
    )
    assert not again.HasField("conversation")


async def test_create_with_client_id_is_idempotent(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    conversation_id = uuid7()
    request = pb.CreateConversationRequest(conversation_id=conversation_id, room_name="r")
    first = await stub.CreateConversation(request, metadata=md)
    second = await stub.CreateConversation(request, metadata=md)
    assert first.created
    assert not second.created
    assert second.conversation.conversation_id == conversation_id


async def test_other_tenant_gets_not_found(state: StateHandle) -> None:
    stub = state.stub()
    conversation = await new_conversation(state, tenant="tenant-a")
    other = state.metadata("tenant-b")
    for call in (
        stub.GetConversation(
            pb.GetConversationRequest(conversation_id=conversation.conversation_id),
            metadata=other,
        ),
        stub.AppendEvents(
            pb.AppendEventsRequest(conversation_id=conversation.conversation_id, events=[event()]),
            metadata=other,
        ),
        stub.GetHistory(
            pb.GetHistoryRequest(conversation_id=conversation.conversation_id, last_n=5),
            metadata=other,
        ),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND
    unknown = await rpc_error(
        stub.GetConversation(pb.GetConversationRequest(conversation_id=uuid7()), metadata=other)
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_two_tenants_each_have_a_conversation_of_one_id(state: StateHandle) -> None:
    """Conversation ids are per tenant: creating one with another tenant's id neither tells
    that it exists nor touches it; each keeps its own events, seqs, snapshot and end."""
    stub = state.stub()
    a, b = state.metadata("tenant-a"), state.metadata("tenant-b")
    cid = uuid7()
    for md, room in ((a, "room-a"), (b, "room-b")):
        reply = await stub.CreateConversation(
            pb.CreateConversationRequest(conversation_id=cid, room_name=room, user_ids=["ana"]),
            metadata=md,
        )
        assert reply.created
    retry = await stub.CreateConversation(
        pb.CreateConversationRequest(conversation_id=cid, room_name="elsewhere"), metadata=b
    )
    assert not retry.created
    assert (retry.conversation.tenant_id, retry.conversation.room_name) == ("tenant-b", "room-b")

    shared = event(text="shared")  # event ids are per tenant too
    appended = {
        "a": await stub.AppendEvents(
            pb.AppendEventsRequest(
                conversation_id=cid, events=[event(text="a1"), shared, event(text="a3")]
            ),
            metadata=a,
        ),
        "b": await stub.AppendEvents(
            pb.AppendEventsRequest(conversation_id=cid, events=[shared, event(text="b2")]),
            metadata=b,
        ),
    }
    assert [(r.seq, r.duplicate) for r in appended["a"].results] == [(s, False) for s in (1, 2, 3)]
    assert [(r.seq, r.duplicate) for r in appended["b"].results] == [(1, False), (2, False)]
    for md, texts in ((a, ["a1", "shared", "a3"]), (b, ["shared", "b2"])):
        history = await stub.GetHistory(pb.GetHistoryRequest(conversation_id=cid), metadata=md)
        assert [(e.seq, e.text) for e in history.events] == list(enumerate(texts, 1))
        got = await stub.GetConversation(
            pb.GetConversationRequest(conversation_id=cid), metadata=md
        )
        assert got.conversation.last_seq == len(texts)
    only_b, _ = await _drain(state, tenant="tenant-b")
    assert [(c.event.conversation_id, c.event.text) for c in only_b] == [
        (cid, "shared"),
        (cid, "b2"),
    ]

    for md, agents in ((a, ["a-first", "a-second"]), (b, ["b-only"])):
        for agent in agents:
            saved = await stub.SaveSnapshot(
                pb.SaveSnapshotRequest(
                    conversation_id=cid, snapshot=pb.Snapshot(current_agent=agent)
                ),
                metadata=md,
            )
        assert saved.snapshot.version == len(agents)
    for md, agent in ((a, "a-second"), (b, "b-only")):
        latest = await stub.GetLatestSnapshot(
            pb.GetLatestSnapshotRequest(conversation_id=cid), metadata=md
        )
        assert latest.snapshot.current_agent == agent

    await stub.EndConversation(pb.EndConversationRequest(conversation_id=cid), metadata=a)
    open_b = await stub.FindOpenConversation(
        pb.FindOpenConversationRequest(room_name="room-b"), metadata=b
    )
    assert open_b.conversation.conversation_id == cid
    assert open_b.conversation.status == pb.CONVERSATION_STATUS_OPEN
    for md, room in ((a, "room-a"), (b, "room-b")):
        listed = await stub.ListConversations(
            pb.ListConversationsRequest(user_id="ana"), metadata=md
        )
        assert [(c.conversation_id, c.room_name) for c in listed.conversations] == [(cid, room)]


async def test_removing_one_tenants_conversation_keeps_the_other_of_that_id(
    state: StateHandle,
) -> None:
    from voiceagent_backbone.state_svc.domain import utcnow

    stub = state.stub()
    a, r = state.metadata("tenant-a"), state.metadata("tenant-r")
    cid = uuid7()
    for md in (a, r):
        await stub.CreateConversation(
            pb.CreateConversationRequest(conversation_id=cid, room_name="room", user_ids=["ana"]),
            metadata=md,
        )
        await stub.AppendEvents(
            pb.AppendEventsRequest(conversation_id=cid, events=[event(), event()]), metadata=md
        )
        await stub.SaveSnapshot(
            pb.SaveSnapshotRequest(conversation_id=cid, snapshot=pb.Snapshot(current_agent="x")),
            metadata=md,
        )

    async def exported(md: tuple[tuple[str, str], ...]) -> list[str | None]:
        request = pb.ExportUserDataRequest(user_id="ana")
        return [item.WhichOneof("item") async for item in stub.ExportUserData(request, metadata=md)]

    # Retention removes tenant-r's conversation, not tenant-a's of the same id.
    await stub.SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=60)), metadata=r
    )
    assert await state.domain.sweep_retention(now=utcnow() + timedelta(seconds=120)) == 1
    assert await exported(r) == []
    assert await exported(a) == ["conversation", "event", "event", "snapshot"]

    # Created again, it starts anew; tenant-a's user deletion leaves it alone.
    again = await stub.CreateConversation(
        pb.CreateConversationRequest(conversation_id=cid, room_name="room", user_ids=["ana"]),
        metadata=r,
    )
    assert again.created
    first = await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=[event()]), metadata=r
    )
    assert [(x.seq, x.duplicate) for x in first.results] == [(1, False)]
    deleted = await stub.DeleteUserData(pb.DeleteUserDataRequest(user_id="ana"), metadata=a)
    assert (
        deleted.conversations_deleted,
        deleted.events_deleted,
        deleted.snapshots_deleted,
    ) == (1, 2, 1)
    assert await exported(a) == []
    assert await exported(r) == ["conversation", "event"]


async def test_list_conversations_newest_first_with_paging(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    ids = []
    for _ in range(5):
        ids.append((await new_conversation(state, user_ids=("lister",))).conversation_id)
        await asyncio.sleep(0.002)
    await new_conversation(state, user_ids=("somebody-else",))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListConversations(
            pb.ListConversationsRequest(user_id="lister", page_size=2, page_token=token),
            metadata=md,
        )
        pages += 1
        seen += [c.conversation_id for c in page.conversations]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    assert pages == 3
    bad = await rpc_error(
        stub.ListConversations(
            pb.ListConversationsRequest(user_id="other-user", page_token=token or "garbage"),
            metadata=md,
        )
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(bad) == ["page_token"]


# -- events ---------------------------------------------------------------------------


async def test_append_assigns_gapless_sequence_and_is_idempotent(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    conversation = await new_conversation(state)
    cid = conversation.conversation_id
    batch = [event(text=f"turn {i}") for i in range(5)]
    first = await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=batch), metadata=md
    )
    assert [r.seq for r in first.results] == [1, 2, 3, 4, 5]
    assert not any(r.duplicate for r in first.results)
    assert first.last_seq == 5

    again = await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=batch), metadata=md
    )
    assert [(r.seq, r.duplicate) for r in again.results] == [(s, True) for s in range(1, 6)]

    mixed = [batch[2], event(text="new one"), batch[0]]
    third = await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=mixed), metadata=md
    )
    assert [(r.seq, r.duplicate) for r in third.results] == [(3, True), (6, False), (1, True)]

    history = await stub.GetHistory(
        pb.GetHistoryRequest(conversation_id=cid, page_size=100), metadata=md
    )
    assert [e.seq for e in history.events] == [1, 2, 3, 4, 5, 6]
    assert [e.text for e in history.events] == [f"turn {i}" for i in range(5)] + ["new one"]
    got = await stub.GetConversation(pb.GetConversationRequest(conversation_id=cid), metadata=md)
    assert got.conversation.last_seq == 6


async def test_event_id_of_another_conversation_is_refused(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    one = await new_conversation(state)
    two = await new_conversation(state)
    shared = event()
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=one.conversation_id, events=[shared]), metadata=md
    )
    error = await rpc_error(
        stub.AppendEvents(
            pb.AppendEventsRequest(conversation_id=two.conversation_id, events=[shared]),
            metadata=md,
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_every_event_type_round_trips(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    payload = struct_pb2.Struct()
    payload.update({"lang": "en", "nested": {"n": 1.5, "list": [1, "a"]}})
    events = [
        event(
            pb.EVENT_TYPE_TRANSCRIPTION,
            "hi there",
            transcription=pb.TranscriptionDetail(final=True, language="en", confidence=0.9),
        ),
        event(pb.EVENT_TYPE_USER_MESSAGE, "hi there", payload=payload),
        event(pb.EVENT_TYPE_AGENT_MESSAGE, "hello!", pb.ROLE_AGENT),
        event(
            pb.EVENT_TYPE_TTS_SPEECH,
            "hello!",
            pb.ROLE_AGENT,
            speech=pb.SpeechDetail(
                speech_id="sp1",
                source="generate_reply",
                user_initiated=False,
                duration=duration_pb2.Duration(seconds=1, nanos=500_000_000),
                interrupted=True,
            ),
        ),
        event(pb.EVENT_TYPE_USER_ACTION, "", user_action=pb.UserActionDetail(action="pressed 1")),
        event(
            pb.EVENT_TYPE_ERROR,
            "",
            pb.ROLE_SYSTEM,
            error=pb.ErrorDetail(
                message="tts failed", stack_trace="Traceback...", source="tts", recoverable=False
            ),
        ),
        event(
            pb.EVENT_TYPE_AGENT_HANDOFF,
            "",
            pb.ROLE_SYSTEM,
            handoff=pb.HandoffDetail(from_agent="a", to_agent="b", reason="billing"),
        ),
        event(
            pb.EVENT_TYPE_TOOL_CALL,
            "",
            pb.ROLE_AGENT,
            tool_call=pb.ToolCallDetail(
                call_id="call_1",
                name="order_status",
                arguments='{"order_id": "42"}',
                output="shipped",
                is_error=False,
            ),
        ),
    ]
    await stub.AppendEvents(pb.AppendEventsRequest(conversation_id=cid, events=events), metadata=md)
    history = await stub.GetHistory(pb.GetHistoryRequest(conversation_id=cid), metadata=md)
    for sent, stored in zip(events, history.events, strict=True):
        assert stored.event_id == sent.event_id
        assert stored.type == sent.type
        assert stored.role == sent.role
        assert stored.text == sent.text
        assert stored.payload == sent.payload
        assert stored.WhichOneof("detail") == sent.WhichOneof("detail")
        kind = sent.WhichOneof("detail")
        if kind:
            assert getattr(stored, kind) == getattr(sent, kind)
        assert abs(stored.client_time.ToMilliseconds() - sent.client_time.ToMilliseconds()) <= 1
        assert stored.HasField("server_time")
        assert stored.user_ids == ["user-1"]


async def test_history_last_n_messages_and_paging(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    events = []
    for i in range(30):
        events.append(event(pb.EVENT_TYPE_TRANSCRIPTION, f"t{i}"))
        events.append(
            event(pb.EVENT_TYPE_USER_MESSAGE if i % 2 else pb.EVENT_TYPE_AGENT_MESSAGE, f"m{i}")
        )
    await stub.AppendEvents(pb.AppendEventsRequest(conversation_id=cid, events=events), metadata=md)
    last = await stub.GetHistory(
        pb.GetHistoryRequest(
            conversation_id=cid,
            last_n=4,
            types=[pb.EVENT_TYPE_USER_MESSAGE, pb.EVENT_TYPE_AGENT_MESSAGE],
        ),
        metadata=md,
    )
    assert [e.text for e in last.events] == ["m26", "m27", "m28", "m29"]
    assert last.last_seq == 60
    seqs: list[int] = []
    token = ""
    while True:
        page = await stub.GetHistory(
            pb.GetHistoryRequest(conversation_id=cid, page_size=7, page_token=token), metadata=md
        )
        seqs += [e.seq for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert seqs == list(range(1, 61))


# -- snapshots and users --------------------------------------------------------------


async def test_snapshot_latest_wins_and_size_limit(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    empty = await stub.GetLatestSnapshot(
        pb.GetLatestSnapshotRequest(conversation_id=cid), metadata=md
    )
    assert not empty.HasField("snapshot")
    userdata = struct_pb2.Struct()
    userdata.update({"name": "Ada", "cart": [1, 2]})
    for version in (1, 2):
        saved = await stub.SaveSnapshot(
            pb.SaveSnapshotRequest(
                conversation_id=cid,
                snapshot=pb.Snapshot(
                    current_agent=f"agent-{version}",
                    history=[pb.ChatItem(item_id="i1", role=pb.ROLE_USER, text="hi")],
                    userdata=userdata,
                    covered_seq=version * 10,
                ),
            ),
            metadata=md,
        )
        assert saved.snapshot.version == version
    latest = await stub.GetLatestSnapshot(
        pb.GetLatestSnapshotRequest(conversation_id=cid), metadata=md
    )
    assert latest.snapshot.current_agent == "agent-2"
    assert latest.snapshot.covered_seq == 20
    assert latest.snapshot.userdata == userdata
    assert latest.snapshot.history[0].text == "hi"

    huge = pb.Snapshot(history=[pb.ChatItem(item_id="x", text="a" * 600_000)] * 2)
    error = await rpc_error(
        stub.SaveSnapshot(pb.SaveSnapshotRequest(conversation_id=cid, snapshot=huge), metadata=md)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == ["snapshot"]
    assert "limit" in (error.details() or "")


async def test_user_profile_upsert_merges_preferences(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    prefs = struct_pb2.Struct()
    prefs.update({"language": "fr", "tone": "formal"})
    first = await stub.UpsertUser(
        pb.UpsertUserRequest(
            user=pb.UserProfile(user_id="ada", display_name="Ada", preferences=prefs)
        ),
        metadata=md,
    )
    assert first.created
    more = struct_pb2.Struct()
    more.update({"tone": "casual"})
    second = await stub.UpsertUser(
        pb.UpsertUserRequest(user=pb.UserProfile(user_id="ada", preferences=more)), metadata=md
    )
    assert not second.created
    got = await stub.GetUser(pb.GetUserRequest(user_id="ada"), metadata=md)
    assert got.user.display_name == "Ada"
    assert dict(got.user.preferences) == {"language": "fr", "tone": "casual"}
    missing = await rpc_error(
        stub.GetUser(pb.GetUserRequest(user_id="ada"), metadata=state.metadata("tenant-b"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


# -- change feed ----------------------------------------------------------------------


async def _drain(
    state: StateHandle, cursor: str = "", tenant: str = "tenant-a", all_tenants: bool = False
) -> tuple[list[pb.Change], str]:
    changes: list[pb.Change] = []
    async for response in state.stub().Watch(
        pb.WatchRequest(cursor=cursor, stop_at_end=True, all_tenants=all_tenants, max_batch=7),
        metadata=state.metadata(tenant),
    ):
        changes.extend(response.changes)
        if response.changes:
            cursor = response.changes[-1].cursor
    return changes, cursor


async def test_watch_delivers_everything_once_and_resumes(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    first = [event(text=f"a{i}") for i in range(10)]
    await stub.AppendEvents(pb.AppendEventsRequest(conversation_id=cid, events=first), metadata=md)
    seen, cursor = await _drain(state)
    assert [c.event.text for c in seen] == [f"a{i}" for i in range(10)]

    # Written while the consumer was away, including a retry that stores nothing new.
    second = [event(text=f"b{i}") for i in range(5)]
    await stub.AppendEvents(pb.AppendEventsRequest(conversation_id=cid, events=second), metadata=md)
    await stub.AppendEvents(pb.AppendEventsRequest(conversation_id=cid, events=first), metadata=md)
    more, cursor2 = await _drain(state, cursor)
    assert [c.event.text for c in more] == [f"b{i}" for i in range(5)]
    assert [c.event.seq for c in more] == list(range(11, 16))
    nothing, _ = await _drain(state, cursor2)
    assert nothing == []


async def test_watch_follows_live_writes(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    received: list[str] = []
    caught_up = asyncio.Event()

    async def follow() -> None:
        async for response in stub.Watch(pb.WatchRequest(), metadata=md):
            received.extend(c.event.text for c in response.changes)
            if response.caught_up:
                caught_up.set()
            if len(received) >= 6:
                return

    task = asyncio.create_task(follow())
    await asyncio.wait_for(caught_up.wait(), 5)
    for i in range(3):
        await stub.AppendEvents(
            pb.AppendEventsRequest(
                conversation_id=cid, events=[event(text=f"live{i}a"), event(text=f"live{i}b")]
            ),
            metadata=md,
        )
    await asyncio.wait_for(task, 5)
    assert received == [f"live{i}{x}" for i in range(3) for x in "ab"]


async def test_watch_is_tenant_scoped_unless_feed_scope(state: StateHandle) -> None:
    stub = state.stub()
    a = (await new_conversation(state, tenant="tenant-a")).conversation_id
    b = (await new_conversation(state, tenant="tenant-b")).conversation_id
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=a, events=[event(text="from a")]),
        metadata=state.metadata("tenant-a"),
    )
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=b, events=[event(text="from b")]),
        metadata=state.metadata("tenant-b"),
    )
    only_b, _ = await _drain(state, tenant="tenant-b")
    assert [c.event.text for c in only_b] == ["from b"]
    everything, _ = await _drain(state, tenant="ops", all_tenants=True)
    assert [c.event.text for c in everything] == ["from a", "from b"]
    # Neither a reader nor a tenant's own admin reads other tenants: only state.feed does.
    for scopes in ("state.read", "state.admin", "state.read state.write state.admin"):
        denied = await rpc_error(
            _drain_list(
                stub.Watch(
                    pb.WatchRequest(all_tenants=True, stop_at_end=True),
                    metadata=state.metadata("tenant-a", scopes),
                )
            )
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, scopes
        assert "state.feed" in (denied.details() or "")
    bad = await rpc_error(
        _drain_list(stub.Watch(pb.WatchRequest(cursor="not-a-cursor"), metadata=state.metadata()))
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(bad) == ["cursor"]


async def _drain_list(stream: object) -> list[object]:
    return [item async for item in stream]  # type: ignore[attr-defined]


# -- retention, export, delete --------------------------------------------------------


async def test_page_tokens_and_cursors_read_on_another_replica(
    state: StateHandle, jwt_key: str
) -> None:
    """Tokens are signed with a key kept in the database: a second replica on the same
    database (or this one after a restart) takes what the first handed out."""
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=[event() for _ in range(3)]),
        metadata=md,
    )
    page = await stub.GetHistory(
        pb.GetHistoryRequest(conversation_id=cid, page_size=1), metadata=md
    )
    feed = [
        c
        async for r in stub.Watch(pb.WatchRequest(stop_at_end=True), metadata=md)
        for c in r.changes
    ]
    async with running_state(state.settings, jwt_key) as other:
        rest = await other.stub().GetHistory(
            pb.GetHistoryRequest(conversation_id=cid, page_token=page.next_page_token),
            metadata=md,
        )
        assert [e.seq for e in rest.events] == [2, 3]
        resumed = [
            c
            async for r in other.stub().Watch(
                pb.WatchRequest(cursor=feed[0].cursor, stop_at_end=True), metadata=md
            )
            for c in r.changes
        ]
        assert [c.cursor for c in resumed] == [c.cursor for c in feed[1:]]


async def test_retention_policy_and_sweep(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata("tenant-r")
    default = await stub.GetRetentionPolicy(pb.GetRetentionPolicyRequest(), metadata=md)
    assert default.is_default
    assert default.retention.seconds == state.settings.default_retention_s
    await stub.SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=3600)), metadata=md
    )
    policy = await stub.GetRetentionPolicy(pb.GetRetentionPolicyRequest(), metadata=md)
    assert (policy.retention.seconds, policy.is_default) == (3600, False)
    forbidden = await rpc_error(
        stub.SetRetentionPolicy(
            pb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=60)),
            metadata=state.metadata("tenant-r", "state.read state.write"),
        )
    )
    assert forbidden.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_retention_removes_expired_and_announces_it(state: StateHandle) -> None:
    from voiceagent_backbone.state_svc.domain import utcnow

    stub, md = state.stub(), state.metadata("tenant-r")
    await stub.SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=60)), metadata=md
    )
    old = (await new_conversation(state, tenant="tenant-r")).conversation_id
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=old, events=[event()]), metadata=md
    )
    keep = (await new_conversation(state, tenant="tenant-keep")).conversation_id
    _, cursor = await _drain(state, tenant="tenant-r")

    removed = await state.domain.sweep_retention(now=utcnow() + timedelta(seconds=120))
    assert removed == 1
    gone = await rpc_error(
        stub.GetConversation(pb.GetConversationRequest(conversation_id=old), metadata=md)
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    kept = await stub.GetConversation(
        pb.GetConversationRequest(conversation_id=keep), metadata=state.metadata("tenant-keep")
    )
    assert kept.conversation.conversation_id == keep
    changes, _ = await _drain(state, cursor, tenant="tenant-r")
    assert len(changes) == 1
    assert changes[0].deletion.reason == pb.DELETION_REASON_RETENTION
    assert list(changes[0].deletion.conversation_ids) == [old]


async def test_export_and_delete_user(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    await stub.UpsertUser(
        pb.UpsertUserRequest(user=pb.UserProfile(user_id="gone", display_name="G")), metadata=md
    )
    cids = [(await new_conversation(state, user_ids=("gone",))).conversation_id for _ in range(2)]
    other = (await new_conversation(state, user_ids=("stays",))).conversation_id
    for cid in [*cids, other]:
        await stub.AppendEvents(
            pb.AppendEventsRequest(conversation_id=cid, events=[event(), event()]), metadata=md
        )
    await stub.SaveSnapshot(
        pb.SaveSnapshotRequest(conversation_id=cids[0], snapshot=pb.Snapshot(current_agent="a")),
        metadata=md,
    )
    exported = [
        item.WhichOneof("item")
        async for item in stub.ExportUserData(pb.ExportUserDataRequest(user_id="gone"), metadata=md)
    ]
    assert exported == [
        "user",
        "conversation",
        "event",
        "event",
        "snapshot",
        "conversation",
        "event",
        "event",
    ]
    _, cursor = await _drain(state)
    deleted = await stub.DeleteUserData(pb.DeleteUserDataRequest(user_id="gone"), metadata=md)
    assert (
        deleted.conversations_deleted,
        deleted.events_deleted,
        deleted.snapshots_deleted,
        deleted.profile_deleted,
    ) == (2, 4, 1, True)
    nothing = [
        item
        async for item in stub.ExportUserData(pb.ExportUserDataRequest(user_id="gone"), metadata=md)
    ]
    assert nothing == []
    for cid in cids:
        error = await rpc_error(
            stub.GetHistory(pb.GetHistoryRequest(conversation_id=cid), metadata=md)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
    still = await stub.GetHistory(pb.GetHistoryRequest(conversation_id=other), metadata=md)
    assert len(still.events) == 2
    changes, _ = await _drain(state, cursor)
    assert [c.WhichOneof("change") for c in changes] == ["deletion"]
    assert changes[0].deletion.user_id == "gone"
    assert sorted(changes[0].deletion.conversation_ids) == sorted(cids)
    not_admin = await rpc_error(
        stub.DeleteUserData(
            pb.DeleteUserDataRequest(user_id="stays"),
            metadata=state.metadata("tenant-a", "state.read state.write"),
        )
    )
    assert not_admin.code() == grpc.StatusCode.PERMISSION_DENIED


# -- embeddings -----------------------------------------------------------------------

MODEL = "minilm-l6:384"
INDEX = "state.index"


def ekey(
    item: str,
    owner_id: str = "c1",
    owner: int = pb.EMBEDDING_OWNER_CONVERSATION,
    tenant: str = "tenant-a",
) -> pb.EmbeddingKey:
    return pb.EmbeddingKey(tenant_id=tenant, owner=owner, owner_id=owner_id, item_id=item)  # type: ignore[arg-type]


def vec(seed: int) -> bytes:
    return bytes([seed % 256]) * 16


async def _conversation(state: StateHandle, tenant: str = "tenant-a") -> str:
    """A conversation to own vectors: a key of one that does not exist is gone."""
    return (await new_conversation(state, tenant=tenant)).conversation_id


def _index_md(state: StateHandle) -> tuple[tuple[str, str], ...]:
    # The indexer's own token: a platform scope, whatever its tenant.
    return state.metadata("platform", INDEX)


async def _claim(
    state: StateHandle, keys: list[pb.EmbeddingKey], holder: str, lease_ms: int = 60_000
) -> list[pb.EmbeddingClaim]:
    reply = await state.stub().ClaimEmbeddings(
        pb.ClaimEmbeddingsRequest(model=MODEL, keys=keys, holder=holder, lease_ms=lease_ms),
        metadata=_index_md(state),
    )
    assert [c.key for c in reply.claims] == keys
    return list(reply.claims)


async def _put(
    state: StateHandle, items: list[tuple[pb.EmbeddingKey, bytes]], holder: str = ""
) -> list[bool]:
    reply = await state.stub().PutEmbeddings(
        pb.PutEmbeddingsRequest(
            model=MODEL,
            holder=holder,
            embeddings=[pb.Embedding(key=k, vector=v) for k, v in items],
        ),
        metadata=_index_md(state),
    )
    assert [r.key for r in reply.results] == [k for k, _ in items]
    return [r.duplicate for r in reply.results]


async def _get(state: StateHandle, keys: list[pb.EmbeddingKey]) -> dict[str, bytes]:
    reply = await state.stub().GetEmbeddings(
        pb.GetEmbeddingsRequest(model=MODEL, keys=keys), metadata=_index_md(state)
    )
    return {e.key.item_id: e.vector for e in reply.embeddings}


async def _list(
    state: StateHandle, page_size: int = 0, token: str = "", model: str = MODEL
) -> list[pb.ListEmbeddingsResponse]:
    return [
        r
        async for r in state.stub().ListEmbeddings(
            pb.ListEmbeddingsRequest(model=model, page_size=page_size, page_token=token),
            metadata=_index_md(state),
        )
    ]


async def test_embeddings_claim_put_get_list_round_trip(state: StateHandle) -> None:
    c1 = await _conversation(state)
    keys = [ekey(f"e{i}", c1) for i in range(3)]
    first = await _claim(state, keys, "replica-1")
    assert all(c.owned and not c.vector for c in first)
    assert all(c.held_until.ToDatetime(tzinfo=UTC) > datetime.now(UTC) for c in first)
    # Another replica sees them held, until when, and computes nothing.
    other = await _claim(state, keys, "replica-2")
    assert [(c.owned, c.vector) for c in other] == [(False, b"")] * 3
    assert [c.held_until for c in other] == [c.held_until for c in first]

    assert await _put(state, [(k, vec(i)) for i, k in enumerate(keys)], "replica-1") == [False] * 3
    assert await _get(state, [*keys, ekey("never", c1)]) == {f"e{i}": vec(i) for i in range(3)}
    # Stored: every claimer gets the vector back, nobody owns it.
    again = await _claim(state, [*keys, ekey("e3", c1)], "replica-2")
    assert [c.vector for c in again[:3]] == [vec(i) for i in range(3)]
    assert not any(c.owned for c in again[:3])
    assert again[3].owned

    # Another model is another vector; the list is the model's, in key order.
    await state.stub().PutEmbeddings(
        pb.PutEmbeddingsRequest(
            model="other-model", embeddings=[pb.Embedding(key=keys[0], vector=vec(9))]
        ),
        metadata=_index_md(state),
    )
    pages = await _list(state)
    assert [(e.key.item_id, e.vector) for p in pages for e in p.embeddings] == [
        (f"e{i}", vec(i)) for i in range(3)
    ]
    assert pages[-1].next_page_token == ""
    assert [e.vector for p in await _list(state, model="other-model") for e in p.embeddings] == [
        vec(9)
    ]


async def test_list_embeddings_pages_every_tenant_in_order_and_resumes(state: StateHandle) -> None:
    # Owners of every kind in two tenants: conversations and documents that exist.
    owner_ids: dict[tuple[str, int, int], str] = {}
    for tenant in ("t0", "t1"):
        for n in range(3):
            owner_ids[tenant, pb.EMBEDDING_OWNER_CONVERSATION, n] = await _conversation(
                state, tenant
            )
            owner_ids[tenant, pb.EMBEDDING_OWNER_USER, n] = f"o{n}"
            owner_ids[tenant, pb.EMBEDDING_OWNER_DOCUMENT, n] = await _document(
                state, f"o{n}", tenant
            )
    items = [
        (
            ekey(
                f"i{i:02d}",
                owner_id=owner_ids[f"t{i % 2}", 1 + i % 3, i % 3],
                tenant=f"t{i % 2}",
                owner=1 + i % 3,
            ),
            vec(i),
        )
        for i in range(25)
    ]
    await _put(state, items)
    expected = sorted(
        ((k.tenant_id, k.owner, k.owner_id, k.item_id) for k, _ in items),
        key=lambda t: (t[0], pb.EmbeddingOwner.Name(t[1]).lower(), t[2], t[3]),
    )
    pages = await _list(state, page_size=4)
    assert [len(p.embeddings) for p in pages] == [4, 4, 4, 4, 4, 4, 1]
    seen = [
        (e.key.tenant_id, e.key.owner, e.key.owner_id, e.key.item_id)
        for p in pages
        for e in p.embeddings
    ]
    assert seen == expected
    assert all(p.next_page_token for p in pages[:-1])
    assert pages[-1].next_page_token == ""
    # A stream cut after its third page resumes from that page's token, on any replica.
    rest = await _list(state, page_size=10, token=pages[2].next_page_token)
    resumed = [
        (e.key.tenant_id, e.key.owner, e.key.owner_id, e.key.item_id)
        for p in rest
        for e in p.embeddings
    ]
    assert resumed == expected[12:]
    wrong = await rpc_error(_list(state, token=pages[2].next_page_token, model="other-model"))
    assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(wrong) == ["page_token"]
    empty = await _list(state, model="nothing-stored")
    assert [(list(p.embeddings), p.next_page_token) for p in empty] == [([], "")]


async def test_concurrent_claimers_on_two_replicas_own_each_key_once(
    state: StateHandle, jwt_key: str
) -> None:
    conversations = [await _conversation(state) for _ in range(4)]
    keys = [ekey(f"race{i}", owner_id=conversations[i % 4]) for i in range(40)]
    async with running_state(state.settings, jwt_key) as other:
        rounds = await asyncio.gather(
            _claim(state, keys, "replica-1"),
            _claim(other, keys, "replica-2"),
            _claim(state, keys[::-1], "replica-3"),
        )
    owners: dict[str, list[int]] = {}
    for claimer, claims in enumerate(rounds):
        for claim in claims:
            if claim.owned:
                owners.setdefault(claim.key.item_id, []).append(claimer)
            else:
                assert claim.HasField("held_until")
    assert sorted(owners) == sorted(k.item_id for k in keys)
    assert all(len(who) == 1 for who in owners.values()), owners


async def test_expired_claim_is_taken_over_and_the_holder_may_claim_again(
    state: StateHandle,
) -> None:
    key = ekey("slow", await _conversation(state))
    (short,) = await _claim(state, [key], "crashed-replica", lease_ms=1)
    assert short.owned
    await asyncio.sleep(0.05)
    (taken,) = await _claim(state, [key], "replica-2", lease_ms=60_000)
    assert taken.owned
    (refused,) = await _claim(state, [key], "crashed-replica", lease_ms=60_000)
    assert (refused.owned, refused.held_until) == (False, taken.held_until)
    # The same holder claims again (a retry): still its own, with the new lease.
    (renewed,) = await _claim(state, [key], "replica-2", lease_ms=120_000)
    assert renewed.owned
    assert renewed.held_until.ToDatetime() > taken.held_until.ToDatetime()


async def test_put_needs_no_claim_and_a_second_put_keeps_the_first_vector(
    state: StateHandle,
) -> None:
    key = ekey("fact-1", owner_id="ana", owner=pb.EMBEDDING_OWNER_USER)
    c1 = await _conversation(state)
    assert await _put(state, [(key, vec(1))], "replica-1") == [False]
    assert await _put(state, [(key, vec(2)), (ekey("x", c1), vec(3))], "replica-2") == [True, False]
    assert await _get(state, [key]) == {"fact-1": vec(1)}
    # A put over another holder's live claim stores the vector: the claim is over.
    claimed = ekey("claimed", c1)
    assert (await _claim(state, [claimed], "replica-1"))[0].owned
    assert await _put(state, [(claimed, vec(4))], "replica-2") == [False]
    (after,) = await _claim(state, [claimed], "replica-1")
    assert (after.owned, after.vector) == (False, vec(4))


async def test_embeddings_are_platform_calls(state: StateHandle) -> None:
    stub = state.stub()
    tenant_md = state.metadata("tenant-a", "state.read state.write state.admin state.feed")
    calls = [
        stub.ClaimEmbeddings(
            pb.ClaimEmbeddingsRequest(model=MODEL, keys=[ekey("a")], holder="h", lease_ms=10),
            metadata=tenant_md,
        ),
        stub.PutEmbeddings(
            pb.PutEmbeddingsRequest(
                model=MODEL, embeddings=[pb.Embedding(key=ekey("a"), vector=b"1")]
            ),
            metadata=tenant_md,
        ),
        stub.GetEmbeddings(
            pb.GetEmbeddingsRequest(model=MODEL, keys=[ekey("a")]), metadata=tenant_md
        ),
        _drain_list(stub.ListEmbeddings(pb.ListEmbeddingsRequest(model=MODEL), metadata=tenant_md)),
    ]
    for call in calls:
        denied = await rpc_error(call)
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert INDEX in (denied.details() or "")


async def test_deleting_a_user_deletes_their_vectors_only(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    gone = [(await new_conversation(state, user_ids=("gone",))).conversation_id for _ in range(2)]
    stays = (await new_conversation(state, user_ids=("stays",))).conversation_id
    # Tenant b has a conversation of the same id as one of gone's, and a user "gone" too.
    await stub.CreateConversation(
        pb.CreateConversationRequest(conversation_id=gone[0], room_name="r", user_ids=["gone"]),
        metadata=state.metadata("tenant-b"),
    )
    user, doc = pb.EMBEDDING_OWNER_USER, pb.EMBEDDING_OWNER_DOCUMENT
    await _document(state, "gone")
    removed = [
        ekey("e1", gone[0]),
        ekey("e2", gone[0]),
        ekey("e3", gone[1]),
        ekey("f1", "gone", user),
    ]
    kept = [
        ekey("e4", stays),
        ekey("f2", "stays", user),
        ekey("d1", "gone", doc),  # a document named like the user is not the user's
        ekey("e5", gone[0], tenant="tenant-b"),
        ekey("f3", "gone", user, tenant="tenant-b"),
    ]
    await _put(state, [(k, vec(i)) for i, k in enumerate(removed + kept)])
    pending = ekey("e6", gone[1])  # claimed, never stored: the claim goes too
    assert (await _claim(state, [pending], "replica-1"))[0].owned

    deleted = await stub.DeleteUserData(pb.DeleteUserDataRequest(user_id="gone"), metadata=md)
    assert deleted.conversations_deleted == 2
    assert deleted.embeddings_deleted == len(removed)
    assert await _get(state, removed) == {}
    assert sorted(await _get(state, kept)) == sorted(k.item_id for k in kept)
    listed = [e.key.item_id for p in await _list(state) for e in p.embeddings]
    assert sorted(listed) == sorted(k.item_id for k in kept)
    (fresh,) = await _claim(state, [pending], "replica-2")
    assert fresh.owned


async def test_retention_removes_a_conversations_vectors(state: StateHandle) -> None:
    from voiceagent_backbone.state_svc.domain import utcnow

    md = state.metadata("tenant-r")
    await state.stub().SetRetentionPolicy(
        pb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=60)), metadata=md
    )
    old = (await new_conversation(state, tenant="tenant-r")).conversation_id
    other = (await new_conversation(state, tenant="tenant-keep")).conversation_id
    old_keys = [ekey(f"o{i}", old, tenant="tenant-r") for i in range(3)]
    user_key = ekey("f1", "user-1", pb.EMBEDDING_OWNER_USER, tenant="tenant-r")
    other_key = ekey("k1", other, tenant="tenant-keep")
    await _put(state, [(k, vec(i)) for i, k in enumerate([*old_keys, user_key, other_key])])

    assert await state.domain.sweep_retention(now=utcnow() + timedelta(seconds=120)) == 1
    assert await _get(state, old_keys) == {}
    # A user's facts outlive one conversation; another tenant's vectors stay.
    assert sorted(await _get(state, [user_key, other_key])) == ["f1", "k1"]


# -- knowledge documents and user facts ------------------------------------------------

KNOWLEDGE = "state.knowledge"


def _knowledge_md(state: StateHandle) -> tuple[tuple[str, str], ...]:
    # context_svc's own token: a platform scope, the tenant named in each request.
    return state.metadata("platform", KNOWLEDGE)


async def _put_document(
    state: StateHandle,
    document_id: str,
    tenant: str = "tenant-a",
    text: str = "Opening hours: 9 to 5.",
    title: str = "",
    metadata: dict[str, str] | None = None,
) -> pb.KnowledgeDocument:
    document = pb.KnowledgeDocument(document_id=document_id, title=title, text=text)
    if metadata:
        document.metadata.update(metadata)
    reply = await state.stub().PutDocument(
        pb.PutDocumentRequest(tenant_id=tenant, document=document), metadata=_knowledge_md(state)
    )
    stored: pb.KnowledgeDocument = reply.document
    return stored


async def _document(state: StateHandle, document_id: str, tenant: str = "tenant-a") -> str:
    """A document to own vectors."""
    await _put_document(state, document_id, tenant)
    return document_id


async def _get_document(
    state: StateHandle, document_id: str, tenant: str = "tenant-a"
) -> pb.KnowledgeDocument:
    reply = await state.stub().GetDocument(
        pb.GetDocumentRequest(tenant_id=tenant, document_id=document_id),
        metadata=_knowledge_md(state),
    )
    document: pb.KnowledgeDocument = reply.document
    return document


async def _list_documents(
    state: StateHandle, tenant: str = "tenant-a", page_size: int = 0, token: str = ""
) -> pb.ListDocumentsResponse:
    reply: pb.ListDocumentsResponse = await state.stub().ListDocuments(
        pb.ListDocumentsRequest(tenant_id=tenant, page_size=page_size, page_token=token),
        metadata=_knowledge_md(state),
    )
    return reply


async def _delete_document(state: StateHandle, document_id: str, tenant: str = "tenant-a") -> bool:
    reply = await state.stub().DeleteDocument(
        pb.DeleteDocumentRequest(tenant_id=tenant, document_id=document_id),
        metadata=_knowledge_md(state),
    )
    return bool(reply.deleted)


def fact(fact_id: str, text: str, model: str = "", vector: bytes = b"") -> pb.UserFact:
    return pb.UserFact(fact_id=fact_id, text=text, embedding_model=model, vector=vector)


async def _put_facts(
    state: StateHandle, user: str, facts: list[pb.UserFact], tenant: str = "tenant-a"
) -> list[pb.UserFact]:
    reply = await state.stub().PutFacts(
        pb.PutFactsRequest(tenant_id=tenant, user_id=user, facts=facts),
        metadata=_knowledge_md(state),
    )
    return list(reply.facts)


async def _list_facts(state: StateHandle, user: str, tenant: str = "tenant-a") -> list[pb.UserFact]:
    reply = await state.stub().ListFacts(
        pb.ListFactsRequest(tenant_id=tenant, user_id=user), metadata=_knowledge_md(state)
    )
    return list(reply.facts)


async def _delete_fact(
    state: StateHandle, user: str, fact_id: str, tenant: str = "tenant-a"
) -> bool:
    reply = await state.stub().DeleteFact(
        pb.DeleteFactRequest(tenant_id=tenant, user_id=user, fact_id=fact_id),
        metadata=_knowledge_md(state),
    )
    return bool(reply.deleted)


def _us(value: object) -> int:
    return value.ToMicroseconds()  # type: ignore[attr-defined, no-any-return]


async def test_documents_put_get_replace_delete(state: StateHandle) -> None:
    text = "Öffnungszeiten: 9 bis 17 Uhr, 東京"
    first = await _put_document(state, "hours", text=text, title="Hours", metadata={"lang": "de"})
    # The answer is the stored version without its text (the caller has it).
    assert (first.document_id, first.title, first.text) == ("hours", "Hours", "")
    assert first.text_bytes == len(text.encode())
    assert dict(first.metadata) == {"lang": "de"}
    got = await _get_document(state, "hours")
    assert (got.text, got.title, got.text_bytes) == (text, "Hours", len(text.encode()))
    assert got.stored_at == first.stored_at
    assert abs(_us(first.stored_at) - datetime.now(UTC).timestamp() * 1e6) < 60e6

    # Replaced: the new version, with a later stored_at, every time.
    stamps = [_us(first.stored_at)]
    for i in range(3):
        again = await _put_document(state, "hours", text=f"version {i}")
        stamps.append(_us(again.stored_at))
    assert stamps == sorted(set(stamps))
    got = await _get_document(state, "hours")
    assert (got.text, got.title, dict(got.metadata)) == ("version 2", "", {})
    assert _us(got.stored_at) == stamps[-1]

    assert await _delete_document(state, "hours")
    missing = await rpc_error(_get_document(state, "hours"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert not await _delete_document(state, "hours")
    # Stored again after its deletion: a document anew.
    await _put_document(state, "hours", text="back")
    assert (await _get_document(state, "hours")).text == "back"


async def test_concurrent_puts_of_a_document_get_distinct_versions(state: StateHandle) -> None:
    replies = await asyncio.gather(
        *(_put_document(state, "busy", text=f"writer {i}") for i in range(12))
    )
    stamps = [_us(r.stored_at) for r in replies]
    assert len(set(stamps)) == len(stamps)
    # The version kept is the one stamped last.
    latest = await _get_document(state, "busy")
    assert _us(latest.stored_at) == max(stamps)
    assert latest.text == f"writer {stamps.index(max(stamps))}"


async def test_list_documents_by_id_without_text_with_paging(state: StateHandle) -> None:
    ids = ["a", "b/1", "b/2", "c", "zé", "é"]
    for n, document_id in enumerate(reversed(ids)):
        await _put_document(state, document_id, text="x" * (n + 1), title=f"t-{document_id}")
    await _put_document(state, "other-tenant", tenant="tenant-b")
    seen: list[pb.KnowledgeDocument] = []
    token, pages = "", 0
    while True:
        page = await _list_documents(state, page_size=4, token=token)
        seen += page.documents
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 2
    assert [d.document_id for d in seen] == sorted(ids)
    assert all(d.text == "" and d.text_bytes > 0 and d.HasField("stored_at") for d in seen)
    assert {d.document_id: d.title for d in seen} == {i: f"t-{i}" for i in ids}
    everything = await _list_documents(state)
    assert [d.document_id for d in everything.documents] == sorted(ids)
    assert everything.next_page_token == ""
    # A token is the tenant's: another tenant's listing refuses it.
    first = await _list_documents(state, page_size=1)
    wrong = await rpc_error(_list_documents(state, tenant="tenant-b", token=first.next_page_token))
    assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(wrong) == ["page_token"]
    assert [d.document_id for d in (await _list_documents(state, "tenant-b")).documents] == [
        "other-tenant"
    ]
    assert list((await _list_documents(state, "tenant-none")).documents) == []


async def test_facts_upsert_by_id_list_and_delete(state: StateHandle) -> None:
    vector = bytes(range(16))
    stored = await _put_facts(
        state, "ana", [fact("f2", "likes tea", "m1", vector), fact("f1", "lives in Lyon")]
    )
    assert [(f.fact_id, f.text, f.embedding_model, f.vector) for f in stored] == [
        ("f2", "likes tea", "m1", vector),
        ("f1", "lives in Lyon", "", b""),
    ]
    assert all(f.HasField("updated_at") for f in stored)
    listed = await _list_facts(state, "ana")
    assert [(f.fact_id, f.text, f.vector) for f in listed] == [
        ("f1", "lives in Lyon", b""),
        ("f2", "likes tea", vector),
    ]
    await asyncio.sleep(0.005)
    # f1 unchanged keeps its updated_at; f2 replaced and f3 new get a new one.
    again = await _put_facts(
        state, "ana", [fact("f1", "lives in Lyon"), fact("f2", "prefers coffee"), fact("f3", "x")]
    )
    times = {f.fact_id: _us(f.updated_at) for f in again}
    before = {f.fact_id: _us(f.updated_at) for f in listed}
    assert times["f1"] == before["f1"]
    assert times["f2"] > before["f2"]
    assert times["f3"] == times["f2"]
    listed = await _list_facts(state, "ana")
    assert [(f.fact_id, f.text, f.embedding_model) for f in listed] == [
        ("f1", "lives in Lyon", ""),
        ("f2", "prefers coffee", ""),
        ("f3", "x", ""),
    ]
    assert await _delete_fact(state, "ana", "f2")
    assert not await _delete_fact(state, "ana", "f2")
    assert not await _delete_fact(state, "nobody", "f1")
    assert [f.fact_id for f in await _list_facts(state, "ana")] == ["f1", "f3"]
    assert await _list_facts(state, "nobody") == []


async def test_another_tenants_knowledge_is_like_none(state: StateHandle) -> None:
    await _put_document(state, "secret-doc", text="secret of a")
    await _put_facts(state, "ana", [fact("f1", "secret fact of a")])
    b = "tenant-b"
    missing = await rpc_error(_get_document(state, "secret-doc", tenant=b))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert not await _delete_document(state, "secret-doc", tenant=b)
    assert not await _delete_fact(state, "ana", "f1", tenant=b)
    assert await _list_facts(state, "ana", tenant=b) == []
    assert list((await _list_documents(state, b)).documents) == []
    # The same ids in tenant b are b's own; a's stay as they were.
    await _put_document(state, "secret-doc", tenant=b, text="b's")
    await _put_facts(state, "ana", [fact("f1", "b's fact")], tenant=b)
    assert (await _get_document(state, "secret-doc")).text == "secret of a"
    assert (await _get_document(state, "secret-doc", tenant=b)).text == "b's"
    assert [f.text for f in await _list_facts(state, "ana")] == ["secret fact of a"]
    assert [f.text for f in await _list_facts(state, "ana", tenant=b)] == ["b's fact"]


async def test_fact_limits_are_failed_precondition(state: StateHandle, jwt_key: str) -> None:
    settings = state.settings.model_copy(
        update={"max_facts_per_user": 5, "max_message_bytes": 200_000, "max_document_bytes": 1000}
    )
    async with running_state(settings, jwt_key) as small:
        await _put_facts(small, "ana", [fact(f"f{i}", f"fact {i}") for i in range(5)])
        over = await rpc_error(_put_facts(small, "ana", [fact("f0", "new"), fact("f9", "one")]))
        assert over.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "STATE_MAX_FACTS_PER_USER" in (over.details() or "")
        # Nothing of the refused put was stored; replacing within the limit is fine.
        assert [f.text for f in await _list_facts(small, "ana")] == [f"fact {i}" for i in range(5)]
        await _put_facts(small, "ana", [fact("f0", "replaced")])
        # Every fact of a user is answered in one ListFacts reply (here about 134 KB): four
        # of the largest facts fit, a fifth does not.
        big, vector = "\U0001f600" * 4096, b"v" * 16384  # 16 KiB of text, 16 KiB of vector
        await _put_facts(small, "bo", [fact(f"b{i}", big, "m", vector) for i in range(4)])
        full = await rpc_error(_put_facts(small, "bo", [fact("b4", big, "m", vector)]))
        assert full.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "ListFacts" in (full.details() or "")
        assert len(await _list_facts(small, "bo")) == 4


async def test_knowledge_changes_are_on_the_feed_in_order(state: StateHandle) -> None:
    cid = await _conversation(state)
    _, cursor = await _drain(state, tenant="ops", all_tenants=True)
    stub, md = state.stub(), state.metadata()
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=[event(text="before")]), metadata=md
    )
    await _put_document(state, "d1")
    await _put_facts(state, "ana", [fact("f1", "one")])
    await _put_facts(state, "ana", [fact("f1", "one")])  # unchanged: nothing to announce
    assert await _delete_fact(state, "ana", "f1")
    assert not await _delete_fact(state, "ana", "f1")
    assert await _delete_document(state, "d1")
    assert not await _delete_document(state, "d1")
    await _put_document(state, "d2", tenant="tenant-b")
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=[event(text="after")]), metadata=md
    )
    changes, _ = await _drain(state, cursor, tenant="ops", all_tenants=True)

    def described(c: pb.Change) -> tuple[str, ...]:
        kind = c.WhichOneof("change")
        if kind == "event":
            return ("event", c.event.text)
        assert kind == "knowledge", kind
        k = c.knowledge
        return ("knowledge", k.tenant_id, k.document_id, k.user_id)

    assert [described(c) for c in changes] == [
        ("event", "before"),
        ("knowledge", "tenant-a", "d1", ""),
        ("knowledge", "tenant-a", "", "ana"),
        ("knowledge", "tenant-a", "", "ana"),
        ("knowledge", "tenant-a", "d1", ""),
        ("knowledge", "tenant-b", "d2", ""),
        ("event", "after"),
    ]
    # A tenant's own feed has its own knowledge changes only.
    only_b, _ = await _drain(state, cursor, tenant="tenant-b")
    assert [described(c) for c in only_b] == [("knowledge", "tenant-b", "d2", "")]


async def test_deleting_a_document_deletes_its_vectors(state: StateHandle) -> None:
    doc = pb.EMBEDDING_OWNER_DOCUMENT
    for tenant, document_id in (
        ("tenant-a", "manual"),
        ("tenant-a", "faq"),
        ("tenant-b", "manual"),
    ):
        await _put_document(state, document_id, tenant)
    removed = [ekey(f"p{i}", "manual", doc) for i in range(3)]
    kept = [ekey("p9", "faq", doc), ekey("p0", "manual", doc, tenant="tenant-b")]
    await _put(state, [(k, vec(i)) for i, k in enumerate(removed + kept)])
    assert await _delete_document(state, "manual")
    assert await _get(state, removed) == {}
    assert sorted(await _get(state, kept)) == ["p0", "p9"]


async def test_user_deletion_removes_facts_and_export_includes_them(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    await stub.UpsertUser(pb.UpsertUserRequest(user=pb.UserProfile(user_id="gone")), metadata=md)
    await _put_facts(state, "gone", [fact("f2", "two", "m", b"v" * 8), fact("f1", "one")])
    await _put_facts(state, "gone", [fact("f1", "b's")], tenant="tenant-b")
    await _put_facts(state, "stays", [fact("f1", "mine")])
    exported = [
        item
        async for item in stub.ExportUserData(pb.ExportUserDataRequest(user_id="gone"), metadata=md)
    ]
    assert [i.WhichOneof("item") for i in exported] == ["user", "fact", "fact"]
    # The facts as the user stated them, without the vectors computed from them.
    assert [(i.fact.fact_id, i.fact.text, i.fact.vector) for i in exported[1:]] == [
        ("f1", "one", b""),
        ("f2", "two", b""),
    ]
    _, cursor = await _drain(state)
    deleted = await stub.DeleteUserData(pb.DeleteUserDataRequest(user_id="gone"), metadata=md)
    assert (deleted.facts_deleted, deleted.profile_deleted) == (2, True)
    assert await _list_facts(state, "gone") == []
    assert [f.text for f in await _list_facts(state, "gone", tenant="tenant-b")] == ["b's"]
    assert [f.text for f in await _list_facts(state, "stays")] == ["mine"]
    # The Deletion names the user: readers drop the user's facts on it.
    changes, _ = await _drain(state, cursor)
    assert [c.WhichOneof("change") for c in changes] == ["deletion"]
    assert changes[0].deletion.user_id == "gone"


async def test_vectors_of_deleted_owners_are_neither_claimed_nor_stored(
    state: StateHandle,
) -> None:
    """A replica behind the feed claims and puts vectors of a conversation (or document)
    already deleted: they are dropped instead of staying for ever."""
    stub, md = state.stub(), state.metadata()
    deleted_cid = (await new_conversation(state, user_ids=("leaver",))).conversation_id
    live_cid = await _conversation(state)
    await _put_document(state, "old-doc")
    await stub.DeleteUserData(pb.DeleteUserDataRequest(user_id="leaver"), metadata=md)
    assert await _delete_document(state, "old-doc")
    doc = pb.EMBEDDING_OWNER_DOCUMENT
    gone = [
        ekey("e1", deleted_cid),
        ekey("p1", "old-doc", doc),
        ekey("e2", uuid7()),  # never existed
        ekey("e3", live_cid, tenant="tenant-b"),  # the id exists in another tenant only
    ]
    live = [ekey("e4", live_cid), ekey("f1", "leaver", pb.EMBEDDING_OWNER_USER)]
    claims = await _claim(state, gone + live, "lagging-replica")
    assert [c.gone for c in claims] == [True] * 4 + [False] * 2
    # Owned as well: a client that predates `gone` computes the vector, never waits.
    assert all(c.owned and not c.vector for c in claims)
    reply = await stub.PutEmbeddings(
        pb.PutEmbeddingsRequest(
            model=MODEL, embeddings=[pb.Embedding(key=k, vector=vec(1)) for k in gone + live]
        ),
        metadata=_index_md(state),
    )
    assert [(r.dropped, r.duplicate) for r in reply.results] == [(True, False)] * 4 + [
        (False, False)
    ] * 2
    assert sorted(await _get(state, gone + live)) == ["e4", "f1"]
    listed = [e.key.item_id for p in await _list(state) for e in p.embeddings]
    assert sorted(listed) == ["e4", "f1"]


async def test_knowledge_calls_are_platform_calls(state: StateHandle) -> None:
    stub = state.stub()
    # Everything a tenant may hold, even its admin and the other platform scopes: not enough.
    md = state.metadata("tenant-a", "state.read state.write state.admin state.feed state.index")
    calls = [
        stub.PutDocument(
            pb.PutDocumentRequest(
                tenant_id="tenant-a", document=pb.KnowledgeDocument(document_id="d")
            ),
            metadata=md,
        ),
        stub.GetDocument(pb.GetDocumentRequest(tenant_id="tenant-a", document_id="d"), metadata=md),
        stub.ListDocuments(pb.ListDocumentsRequest(tenant_id="tenant-a"), metadata=md),
        stub.DeleteDocument(
            pb.DeleteDocumentRequest(tenant_id="tenant-a", document_id="d"), metadata=md
        ),
        stub.PutFacts(
            pb.PutFactsRequest(tenant_id="tenant-a", user_id="u", facts=[fact("f", "t")]),
            metadata=md,
        ),
        stub.ListFacts(pb.ListFactsRequest(tenant_id="tenant-a", user_id="u"), metadata=md),
        stub.DeleteFact(
            pb.DeleteFactRequest(tenant_id="tenant-a", user_id="u", fact_id="f"), metadata=md
        ),
    ]
    for call in calls:
        denied = await rpc_error(call)
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert KNOWLEDGE in (denied.details() or "")


async def test_a_lock_left_by_a_crashed_writer_is_taken_over(state: StateHandle) -> None:
    """MongoDB: a write that reads first holds a lock document on its record (FerretDB loses
    concurrent updates); one whose writer died is taken over when its lease runs out."""
    if state.backend != "mongodb":
        pytest.skip("SQLite writes in one transaction: no lock documents")
    from pymongo import AsyncMongoClient

    from voiceagent_backbone.state_svc.store.mongo_embeddings import SEPARATOR
    from voiceagent_backbone.state_svc.store.mongo_knowledge import document_key

    assert state.settings.mongodb_uri is not None
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        state.settings.mongodb_uri.get_secret_value()
    )
    locks = client[state.settings.mongodb_database]["knowledge_locks"]
    until = datetime.now(UTC) + timedelta(milliseconds=500)
    key = "document" + SEPARATOR + document_key("tenant-a", "locked")
    await locks.insert_one({"_id": key, "until": until, "t": "crashed-writer"})
    started = asyncio.get_running_loop().time()
    stored = await _put_document(state, "locked", text="after the lease")
    waited = asyncio.get_running_loop().time() - started
    assert waited >= 0.3  # it waited for the lease, then took the lock over
    assert (await _get_document(state, "locked")).stored_at == stored.stored_at
    assert await locks.count_documents({}) == 0  # and let it go
    await client.close()
