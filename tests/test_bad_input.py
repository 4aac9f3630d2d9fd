"""Bad input is INVALID_ARGUMENT naming the field, for every class the adversarial probe found
answered INTERNAL or UNKNOWN: NaN and Infinity in any Struct, keys MongoDB would read as
operators or paths (and FerretDB refuses), out-of-range and sign-mismatched Timestamps and
Durations, forged page tokens and cursors, and request bytes that do not parse. After each,
the service still answers."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.context import ContextHandle, context_settings, running_context
from tests.support.ferretdb import MongoTarget
from tests.support.rpc import violations
from tests.support.state import StateHandle, event, new_conversation, running_state, state_settings
from voiceagent_backbone.agent_svc.metadata import parse_participant_metadata
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.servicekit.errors import InvalidArgument
from voiceagent_backbone.state_svc import wire
from voiceagent_backbone.state_svc.domain import utcnow
from voiceagent_backbone.state_svc.model import Snapshot
from voiceagent_backbone.state_svc.service import open_domain
from voiceagent_backbone.state_svc.wire import Checks


@pytest.fixture(scope="module")
async def state(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[StateHandle]:
    settings = state_settings("sqlite", tmp_path_factory.mktemp("bad-input"), jwt_key, None)
    async with running_state(settings, jwt_key) as handle:
        yield handle


@pytest.fixture(scope="module")
async def ctx(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str, state: StateHandle
) -> AsyncIterator[ContextHandle]:
    settings = context_settings(tmp_path_factory.mktemp("bad-input-ctx"), jwt_key, state.port)
    async with running_context(settings, jwt_key) as handle:
        yield handle


def struct_with(key: str, value: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.fields[key].CopyFrom(_value(value))
    return s


def _value(value: Any) -> struct_pb2.Value:
    v = struct_pb2.Value()
    if isinstance(value, float):
        v.number_value = value
    elif isinstance(value, dict):
        for k, item in value.items():
            v.struct_value.fields[k].CopyFrom(_value(item))
    else:
        v.string_value = str(value)
    return v


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth):
        value = {"n": value}
    return value


BAD_STRUCTS: list[tuple[str, struct_pb2.Struct, str]] = [
    ("nan", struct_with("score", math.nan), "['score']"),
    ("infinity", struct_with("score", math.inf), "['score']"),
    ("minus infinity", struct_with("deep", {"score": -math.inf}), "['deep']['score']"),
    ("dollar key", struct_with("$set", "x"), "['$set']"),
    ("dotted key", struct_with("a.b", "x"), "['a.b']"),
    ("NUL in key", struct_with("a\x00b", "x"), "['a\\x00b']"),
    ("empty key", struct_with("", "x"), "['']"),
    ("too deep", struct_with("n", nested(21)), "['n']" * 20),
]


async def _code(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def _still_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(("case", "bad", "where"), BAD_STRUCTS, ids=[c for c, _, _ in BAD_STRUCTS])
async def test_bad_struct_values_are_invalid_argument_in_every_struct_field(
    state: StateHandle, ctx: ContextHandle, case: str, bad: struct_pb2.Struct, where: str
) -> None:
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    calls: list[tuple[str, Callable[[], Any]]] = [
        (
            "events[0].payload",
            lambda: stub.AppendEvents(
                pb.AppendEventsRequest(conversation_id=cid, events=[event(payload=bad)]),
                metadata=md,
            ),
        ),
        (
            "snapshot.userdata",
            lambda: stub.SaveSnapshot(
                pb.SaveSnapshotRequest(conversation_id=cid, snapshot=pb.Snapshot(userdata=bad)),
                metadata=md,
            ),
        ),
        (
            "user.preferences",
            lambda: stub.UpsertUser(
                pb.UpsertUserRequest(user=pb.UserProfile(user_id="user-1", preferences=bad)),
                metadata=md,
            ),
        ),
        (
            "metadata",
            lambda: stub.CreateConversation(
                pb.CreateConversationRequest(room_name="r", metadata=bad), metadata=md
            ),
        ),
        (
            "document.metadata",
            lambda: ctx.stub().IngestDocument(
                cpb.IngestDocumentRequest(
                    document=cpb.Document(title="t", text="some text", metadata=bad)
                ),
                metadata=ctx.metadata(scopes="context.write"),
            ),
        ),
    ]
    for field, call in calls:
        error = await _code(call())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert violations(error) == [f"{field}{where}"], (field, error.details())
    await _still_serving(state.channel)
    await _still_serving(ctx.channel)


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


BAD_TIMES: list[tuple[str, pb.Event, str]] = [
    ("timestamp far future", event(client_time=_ts(10**15)), "events[0].client_time"),
    ("timestamp before year 1", event(client_time=_ts(-(10**12))), "events[0].client_time"),
    (
        "timestamp negative nanos",
        event(client_time=_ts(1_800_000_000, -5)),
        "events[0].client_time",
    ),
    (
        "duration out of range",
        event(speech=pb.SpeechDetail(duration=duration_pb2.Duration(seconds=10**12))),
        "events[0].speech.duration",
    ),
    (
        "duration signs differ",
        event(speech=pb.SpeechDetail(duration=duration_pb2.Duration(seconds=5, nanos=-1))),
        "events[0].speech.duration",
    ),
]


@pytest.mark.parametrize(("case", "bad", "where"), BAD_TIMES, ids=[c for c, _, _ in BAD_TIMES])
async def test_bad_times_and_durations_are_invalid_argument(
    state: StateHandle, case: str, bad: pb.Event, where: str
) -> None:
    bad.type = pb.EVENT_TYPE_TTS_SPEECH if bad.HasField("speech") else bad.type
    cid = (await new_conversation(state)).conversation_id
    error = await _code(
        state.stub().AppendEvents(
            pb.AppendEventsRequest(conversation_id=cid, events=[bad]), metadata=state.metadata()
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert violations(error) == [where]


async def test_snapshot_chat_item_time_out_of_range_is_invalid_argument(
    state: StateHandle,
) -> None:
    cid = (await new_conversation(state)).conversation_id
    item = pb.ChatItem(item_id="i", role=pb.ROLE_USER, text="hi", created_at=_ts(10**14))
    error = await _code(
        state.stub().SaveSnapshot(
            pb.SaveSnapshotRequest(conversation_id=cid, snapshot=pb.Snapshot(history=[item])),
            metadata=state.metadata(),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == ["snapshot.history[0].created_at"]


def forged(kind: str, **fields: Any) -> str:
    """A token as tokens were before they were signed: base64url JSON, no mac."""
    raw = json.dumps({"k": kind, **fields}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def edited(token: str, **fields: Any) -> str:
    """A real token with its payload changed and its mac kept."""
    payload, _, mac = token.partition(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw = json.dumps({**body, **fields}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + mac


async def _watch_code(stub: Any, request: pb.WatchRequest, md: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Watch(request, metadata=md):
            pass
    return caught.value


async def test_forged_page_tokens_and_cursors_are_invalid_argument(state: StateHandle) -> None:
    stub, md = state.stub(), state.metadata()
    cid = (await new_conversation(state)).conversation_id
    await stub.AppendEvents(
        pb.AppendEventsRequest(
            conversation_id=cid,
            events=[event(), event(), event()],
        ),
        metadata=md,
    )
    first = await stub.GetHistory(
        pb.GetHistoryRequest(conversation_id=cid, page_size=1), metadata=md
    )
    real = first.next_page_token
    assert real
    binding = cid + "|"
    huge = 10**30
    history_tokens = [
        # Unsigned, as before tokens were signed, with values no store can take.
        forged("history", b=binding, s=huge),
        forged("history", b=binding, s=-1),
        forged("history", b=binding, s=True),
        forged("history", b=binding, s="1"),
        # A real token edited: its mac no longer matches.
        edited(real, s=2),
        edited(real, s=huge),
        real + "x",
        real.partition(".")[0],
    ]
    for token in history_tokens:
        error = await _code(
            stub.GetHistory(
                pb.GetHistoryRequest(conversation_id=cid, page_token=token), metadata=md
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, token
        assert violations(error) == ["page_token"]
    # The real token reads on, bound to its own call.
    rest = await stub.GetHistory(
        pb.GetHistoryRequest(conversation_id=cid, page_token=real), metadata=md
    )
    assert [e.seq for e in rest.events] == [2, 3]
    for token in (forged("conversations", b="user-1", t=huge, i="x"), real):
        error = await _code(
            stub.ListConversations(
                pb.ListConversationsRequest(user_id="user-1", page_token=token), metadata=md
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(error) == ["page_token"]
    tenant_md = state.metadata(scopes="state.read state.write")
    changes = [
        c
        async for r in stub.Watch(pb.WatchRequest(stop_at_end=True), metadata=md)
        for c in r.changes
    ]
    cursor = changes[0].cursor
    for bad, who in (
        (forged("feed", s=huge), md),
        (forged("feed", s=[1]), md),
        (edited(cursor, s=0), md),
        # Before the upgrade, cursors were unsigned: only a platform reader, who may read
        # the whole feed anyway, may still resume from one.
        (forged("feed", s=1), tenant_md),
        (real, md),
    ):
        error = await _watch_code(stub, pb.WatchRequest(cursor=bad, stop_at_end=True), who)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert violations(error) == ["cursor"]
    legacy = [
        c
        async for r in stub.Watch(
            pb.WatchRequest(cursor=forged("feed", s=1), all_tenants=True, stop_at_end=True),
            metadata=md,
        )
        for c in r.changes
    ]
    assert [c.cursor for c in legacy] == [c.cursor for c in changes[1:]]
    await _still_serving(state.channel)


@pytest.mark.parametrize(
    "method",
    [
        "/voiceagent.state.v1.StateService/AppendEvents",
        "/voiceagent.state.v1.StateService/Watch",
        "/voiceagent.context.v1.ContextService/Enrich",
    ],
)
async def test_unparseable_request_bytes_are_invalid_argument(
    state: StateHandle, ctx: ContextHandle, method: str
) -> None:
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field longer than the message
    context_call = "ContextService" in method
    channel = ctx.channel if context_call else state.channel
    md = ctx.metadata() if context_call else state.metadata()

    def raw(data: bytes) -> bytes:
        return data

    if method.endswith("/Watch"):
        stream = channel.unary_stream(method, request_serializer=raw, response_deserializer=raw)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream(garbage, metadata=md):
                pass
        error = caught.value
    else:
        call = channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)
        error = await _code(call(garbage, metadata=md))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert violations(error) == ["request"]
    # Authentication still comes first: garbage without a token is UNAUTHENTICATED.
    call = channel.unary_unary(method, request_serializer=raw, response_deserializer=raw)
    if not method.endswith("/Watch"):
        anonymous = await _code(call(garbage))
        assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    await _still_serving(channel)


def test_participant_preferences_the_services_would_refuse_are_left_out() -> None:
    """Participant metadata is anyone's JSON: what state_svc would refuse is dropped by the
    agent, so one odd preference never costs the whole profile write."""
    raw = (
        '{"preferences": {"language": "de", "$set": 1, "a.b": 2, "ok": "yes", '
        '"x\\u0000": 3, "score": NaN, "big": Infinity}}'
    )
    profile = parse_participant_metadata(raw, "ana")
    assert profile.preferences == {"language": "de", "ok": "yes"}


async def test_streams_beyond_the_limit_are_refused_and_never_starve_health_or_unary(
    tmp_path: Path, jwt_key: str
) -> None:
    settings = state_settings(
        "sqlite", tmp_path, jwt_key, None, max_concurrent_streams=2, max_concurrent_rpcs=50
    )
    async with running_state(settings, jwt_key) as state:
        stub, md = state.stub(), state.metadata()
        held = [stub.Watch(pb.WatchRequest(), metadata=md) for _ in range(2)]
        try:
            for call in held:
                await call.read()  # the first reply: each stream is now in flight
            refused = stub.Watch(pb.WatchRequest(), metadata=md)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused.read()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await _still_serving(state.channel)
            created = await new_conversation(state)  # unary calls have their own budget
            assert created.conversation_id
        finally:
            for call in held:
                call.cancel()


@pytest.mark.ferretdb
async def test_a_value_mongodb_refuses_is_invalid_argument_not_unavailable(
    tmp_path: Path, jwt_key: str, mongo: MongoTarget
) -> None:
    """Below the request check (which refuses such keys first): if the database itself
    refuses a value, the answer is INVALID_ARGUMENT, which clients do not retry, not
    UNAVAILABLE, which they retry for ever."""
    settings = state_settings("mongodb", tmp_path, jwt_key, mongo)
    async with open_domain(settings) as domain:
        conversation = wire.new_conversation(
            Checks(settings),
            pb.CreateConversationRequest(room_name="r", user_ids=["u"]),
            "tenant-a",
            utcnow(),
        )
        await domain.create_conversation(conversation)
        snapshot = Snapshot(
            conversation_id=conversation.conversation_id,
            version=0,
            current_agent="a",
            history=[],
            userdata={"$set": {"x": 1}},
            covered_seq=0,
        )
        with pytest.raises(InvalidArgument) as caught:
            await domain.save_snapshot("tenant-a", snapshot)
        assert "refused" in caught.value.message
        await domain.store.drop_database()  # type: ignore[attr-defined]
