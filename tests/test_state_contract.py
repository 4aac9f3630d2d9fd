"""The state_svc contract, over gRPC, against both stores: SQLite and MongoDB (FerretDB)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
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
