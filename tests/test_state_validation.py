"""Bad input of every field class: INVALID_ARGUMENT naming the field, the service stays up."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests.support.state import StateHandle, event, new_conversation, running_state, state_settings
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.servicekit.ids import uuid7

CID = "00000000-0000-7000-8000-000000000000"


@pytest.fixture(scope="module")
async def state(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[StateHandle]:
    settings = state_settings("sqlite", tmp_path_factory.mktemp("validation"), jwt_key, None)
    async with running_state(settings, jwt_key) as handle:
        yield handle


def deep(levels: int) -> struct_pb2.Struct:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    out = struct_pb2.Struct()
    out.update(value)
    return out


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def old_time() -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=600_000_000)  # 1989


_ITEM = iter(range(1_000_000))


def ekey(item_id: str | None = None, **fields: Any) -> pb.EmbeddingKey:
    values: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "owner": pb.EMBEDDING_OWNER_CONVERSATION,
        "owner_id": CID,
        "item_id": item_id if item_id is not None else f"item-{next(_ITEM)}",
    }
    return pb.EmbeddingKey(**{**values, **fields})


KEYS_1001 = [ekey(f"k{i}") for i in range(1001)]


def claim(**fields: Any) -> pb.ClaimEmbeddingsRequest:
    values: dict[str, Any] = {"model": "m", "keys": [ekey()], "holder": "h", "lease_ms": 1000}
    return pb.ClaimEmbeddingsRequest(**{**values, **fields})


def put(
    vectors: list[bytes], key: pb.EmbeddingKey | None = None, model: str = "m"
) -> pb.PutEmbeddingsRequest:
    return pb.PutEmbeddingsRequest(
        model=model,
        embeddings=[pb.Embedding(key=key or ekey(), vector=v) for v in vectors],
    )


def put_no_key() -> pb.PutEmbeddingsRequest:
    return pb.PutEmbeddingsRequest(model="m", embeddings=[pb.Embedding(vector=b"1")])


def put_document(tenant_id: str = "tenant-a", **fields: Any) -> pb.PutDocumentRequest:
    values: dict[str, Any] = {"document_id": "d1", "text": "some text"}
    return pb.PutDocumentRequest(
        tenant_id=tenant_id, document=pb.KnowledgeDocument(**{**values, **fields})
    )


def put_facts(facts: list[pb.UserFact] | None = None, **fields: Any) -> pb.PutFactsRequest:
    values: dict[str, Any] = {
        "tenant_id": "tenant-a",
        "user_id": "ana",
        "facts": facts if facts is not None else [a_fact()],
    }
    return pb.PutFactsRequest(**{**values, **fields})


def a_fact(**fields: Any) -> pb.UserFact:
    return pb.UserFact(**{"fact_id": "f1", "text": "likes tea", **fields})


CASES: list[tuple[str, str, Any, str]] = [
    # (case id, method, request, field named)
    ("room empty", "CreateConversation", pb.CreateConversationRequest(), "room_name"),
    (
        "room too long",
        "CreateConversation",
        pb.CreateConversationRequest(room_name="r" * 300),
        "room_name",
    ),
    (
        "room control chars",
        "CreateConversation",
        pb.CreateConversationRequest(room_name="a\nb"),
        "room_name",
    ),
    (
        "conversation id format",
        "CreateConversation",
        pb.CreateConversationRequest(conversation_id="abc", room_name="r"),
        "conversation_id",
    ),
    (
        "user id format",
        "CreateConversation",
        pb.CreateConversationRequest(room_name="r", user_ids=["bad id!"]),
        "user_ids[0]",
    ),
    (
        "too many users",
        "CreateConversation",
        pb.CreateConversationRequest(room_name="r", user_ids=[f"u{i}" for i in range(40)]),
        "user_ids",
    ),
    (
        "metadata too deep",
        "CreateConversation",
        pb.CreateConversationRequest(room_name="r", metadata=deep(12)),
        "metadata",
    ),
    (
        "metadata too big",
        "CreateConversation",
        pb.CreateConversationRequest(room_name="r", metadata=struct({"x": "y" * 20000})),
        "metadata",
    ),
    (
        "metadata bad key",
        "CreateConversation",
        pb.CreateConversationRequest(room_name="r", metadata=struct({"$where": 1})),
        "metadata['$where']",
    ),
    (
        "append no conversation",
        "AppendEvents",
        pb.AppendEventsRequest(events=[event()]),
        "conversation_id",
    ),
    ("append empty batch", "AppendEvents", pb.AppendEventsRequest(conversation_id=CID), "events"),
    (
        "append huge batch",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event() for _ in range(501)]),
        "events",
    ),
    (
        "event id not v7",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(event_id=str(uuid.uuid4()))]),
        "events[0].event_id",
    ),
    (
        "event id garbage",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(event_id="x")]),
        "events[0].event_id",
    ),
    (
        "event type unspecified",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(event_type=0)]),
        "events[0].type",
    ),
    (
        "event type unknown",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(event_type=99)]),
        "events[0].type",
    ),
    (
        "role unknown",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(role=42)]),
        "events[0].role",
    ),
    (
        "text too long",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(text="é" * 20000)]),
        "events[0].text",
    ),
    (
        "payload too deep",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(payload=deep(9))]),
        "events[0].payload",
    ),
    (
        "duplicate id in batch",
        "AppendEvents",
        pb.AppendEventsRequest(
            conversation_id=CID, events=[event(event_id=CID), event(event_id=CID)]
        ),
        "events[1].event_id",
    ),
    (
        "client time out of range",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(client_time=old_time())]),
        "events[0].client_time",
    ),
    (
        "negative speech duration",
        "AppendEvents",
        pb.AppendEventsRequest(
            conversation_id=CID,
            events=[
                event(
                    event_type=pb.EVENT_TYPE_TTS_SPEECH,
                    speech=pb.SpeechDetail(duration=duration_pb2.Duration(seconds=-1)),
                )
            ],
        ),
        "events[0].speech.duration",
    ),
    (
        "detail of another type",
        "AppendEvents",
        pb.AppendEventsRequest(conversation_id=CID, events=[event(speech=pb.SpeechDetail())]),
        "events[0].speech",
    ),
    (
        "error without message",
        "AppendEvents",
        pb.AppendEventsRequest(
            conversation_id=CID,
            events=[event(event_type=pb.EVENT_TYPE_ERROR, text="", error=pb.ErrorDetail())],
        ),
        "events[0].error.message",
    ),
    (
        "history negative last_n",
        "GetHistory",
        pb.GetHistoryRequest(conversation_id=CID, last_n=-1),
        "last_n",
    ),
    (
        "history page too big",
        "GetHistory",
        pb.GetHistoryRequest(conversation_id=CID, page_size=5000),
        "page_size",
    ),
    (
        "history unknown type",
        "GetHistory",
        pb.GetHistoryRequest(conversation_id=CID, types=[99]),  # type: ignore[list-item]
        "types[0]",
    ),
    (
        "history bad token",
        "GetHistory",
        pb.GetHistoryRequest(conversation_id=CID, page_token="%%%"),
        "page_token",
    ),
    ("list no user", "ListConversations", pb.ListConversationsRequest(), "user_id"),
    (
        "list negative page",
        "ListConversations",
        pb.ListConversationsRequest(user_id="u", page_size=-1),
        "page_size",
    ),
    (
        "end reason too long",
        "EndConversation",
        pb.EndConversationRequest(conversation_id=CID, reason="x" * 300),
        "reason",
    ),
    ("user id empty", "UpsertUser", pb.UpsertUserRequest(user=pb.UserProfile()), "user.user_id"),
    (
        "preference key with dot",
        "UpsertUser",
        pb.UpsertUserRequest(user=pb.UserProfile(user_id="u", preferences=struct({"a.b": 1}))),
        "user.preferences['a.b']",
    ),
    ("get user bad id", "GetUser", pb.GetUserRequest(user_id="a/b"), "user_id"),
    ("snapshot missing", "SaveSnapshot", pb.SaveSnapshotRequest(conversation_id=CID), "snapshot"),
    (
        "snapshot negative seq",
        "SaveSnapshot",
        pb.SaveSnapshotRequest(conversation_id=CID, snapshot=pb.Snapshot(covered_seq=-5)),
        "snapshot.covered_seq",
    ),
    (
        "retention negative",
        "SetRetentionPolicy",
        pb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=-1)),
        "retention",
    ),
    ("retention missing", "SetRetentionPolicy", pb.SetRetentionPolicyRequest(), "retention"),
    ("export bad user", "ExportUserData", pb.ExportUserDataRequest(user_id=""), "user_id"),
    ("watch batch too big", "Watch", pb.WatchRequest(max_batch=5000), "max_batch"),
    *[
        (f"embeddings: {case}", method, request, field)
        for case, method, request, field in [
            ("claim model empty", "ClaimEmbeddings", claim(model=""), "model"),
            ("claim model too long", "ClaimEmbeddings", claim(model="m" * 129), "model"),
            ("claim model control", "ClaimEmbeddings", claim(model="m\n1"), "model"),
            ("claim no keys", "ClaimEmbeddings", claim(keys=[]), "keys"),
            ("claim too many keys", "ClaimEmbeddings", claim(keys=KEYS_1001), "keys"),
            ("claim holder empty", "ClaimEmbeddings", claim(holder=""), "holder"),
            ("claim lease zero", "ClaimEmbeddings", claim(lease_ms=0), "lease_ms"),
            ("claim lease too long", "ClaimEmbeddings", claim(lease_ms=600_001), "lease_ms"),
            (
                "claim tenant empty",
                "ClaimEmbeddings",
                claim(keys=[ekey(tenant_id="")]),
                "keys[0].tenant_id",
            ),
            (
                "claim owner unspecified",
                "ClaimEmbeddings",
                claim(keys=[ekey(owner=0)]),
                "keys[0].owner",
            ),
            (
                "claim owner unknown",
                "ClaimEmbeddings",
                claim(keys=[ekey(owner=9)]),
                "keys[0].owner",
            ),
            (
                "claim owner id too long",
                "ClaimEmbeddings",
                claim(keys=[ekey(), ekey(), ekey(), ekey(owner_id="\u00e9" * 129)]),
                "keys[3].owner_id",
            ),
            (
                "claim item control",
                "ClaimEmbeddings",
                claim(keys=[ekey(item_id="a\x1fb")]),
                "keys[0].item_id",
            ),
            (
                "claim key twice",
                "ClaimEmbeddings",
                claim(keys=[ekey("same"), ekey("same")]),
                "keys[1]",
            ),
            ("put none", "PutEmbeddings", put([]), "embeddings"),
            ("put vector empty", "PutEmbeddings", put([b""]), "embeddings[0].vector"),
            ("put vector too big", "PutEmbeddings", put([b"v" * 16385]), "embeddings[0].vector"),
            ("put lengths differ", "PutEmbeddings", put([b"1234", b"123"]), "embeddings[1].vector"),
            ("put key missing", "PutEmbeddings", put_no_key(), "embeddings[0].key"),
            (
                "put item empty",
                "PutEmbeddings",
                put([b"1"], ekey(item_id="")),
                "embeddings[0].key.item_id",
            ),
            ("put model empty", "PutEmbeddings", put([b"1"], model=""), "model"),
            ("get no keys", "GetEmbeddings", pb.GetEmbeddingsRequest(model="m"), "keys"),
            (
                "get bad owner id",
                "GetEmbeddings",
                pb.GetEmbeddingsRequest(model="m", keys=[ekey(owner_id="")]),
                "keys[0].owner_id",
            ),
            ("list model empty", "ListEmbeddings", pb.ListEmbeddingsRequest(), "model"),
            (
                "list page too big",
                "ListEmbeddings",
                pb.ListEmbeddingsRequest(model="m", page_size=1001),
                "page_size",
            ),
            (
                "list forged token",
                "ListEmbeddings",
                pb.ListEmbeddingsRequest(model="m", page_token="abc.def"),
                "page_token",
            ),
        ]
    ],
]


KNOWLEDGE_CASES: list[tuple[str, str, Any, str]] = [
    ("put doc no tenant", "PutDocument", put_document(tenant_id=""), "tenant_id"),
    ("put doc tenant too long", "PutDocument", put_document(tenant_id="t" * 129), "tenant_id"),
    ("put doc tenant control", "PutDocument", put_document(tenant_id="a\x1fb"), "tenant_id"),
    (
        "put doc missing",
        "PutDocument",
        pb.PutDocumentRequest(tenant_id="tenant-a"),
        "document",
    ),
    ("put doc id empty", "PutDocument", put_document(document_id=""), "document.document_id"),
    (
        "put doc id too long",
        "PutDocument",
        put_document(document_id="d" * 129),
        "document.document_id",
    ),
    ("put doc title too long", "PutDocument", put_document(title="t" * 513), "document.title"),
    (
        "put doc text too big",
        "PutDocument",
        put_document(text="x" * (512 * 1024 + 1)),
        "document.text",
    ),
    (
        "put doc metadata too big",
        "PutDocument",
        put_document(metadata=struct({"x": "y" * 17000})),
        "document.metadata",
    ),
    (
        "get doc id empty",
        "GetDocument",
        pb.GetDocumentRequest(tenant_id="tenant-a"),
        "document_id",
    ),
    ("get doc no tenant", "GetDocument", pb.GetDocumentRequest(document_id="d"), "tenant_id"),
    (
        "delete doc id too long",
        "DeleteDocument",
        pb.DeleteDocumentRequest(tenant_id="tenant-a", document_id="d" * 129),
        "document_id",
    ),
    ("list docs no tenant", "ListDocuments", pb.ListDocumentsRequest(), "tenant_id"),
    (
        "list docs page too big",
        "ListDocuments",
        pb.ListDocumentsRequest(tenant_id="tenant-a", page_size=1001),
        "page_size",
    ),
    (
        "list docs negative page",
        "ListDocuments",
        pb.ListDocumentsRequest(tenant_id="tenant-a", page_size=-1),
        "page_size",
    ),
    (
        "list docs forged token",
        "ListDocuments",
        pb.ListDocumentsRequest(tenant_id="tenant-a", page_token="abc.def"),
        "page_token",
    ),
    ("put facts none", "PutFacts", put_facts([]), "facts"),
    (
        "put facts too many",
        "PutFacts",
        put_facts([a_fact(fact_id=f"f{i}") for i in range(101)]),
        "facts",
    ),
    ("put facts no tenant", "PutFacts", put_facts(tenant_id=""), "tenant_id"),
    ("put facts bad user", "PutFacts", put_facts(user_id="a b"), "user_id"),
    ("put fact id empty", "PutFacts", put_facts([a_fact(fact_id="")]), "facts[0].fact_id"),
    (
        "put fact id too long",
        "PutFacts",
        put_facts([a_fact(fact_id="f" * 129)]),
        "facts[0].fact_id",
    ),
    ("put fact id twice", "PutFacts", put_facts([a_fact(), a_fact()]), "facts[1].fact_id"),
    ("put fact text empty", "PutFacts", put_facts([a_fact(text=" ")]), "facts[0].text"),
    (
        "put fact text too long",
        "PutFacts",
        put_facts([a_fact(text="é" * 4097)]),
        "facts[0].text",
    ),
    (
        "put fact model without vector",
        "PutFacts",
        put_facts([a_fact(embedding_model="m")]),
        "facts[0].vector",
    ),
    (
        "put fact vector without model",
        "PutFacts",
        put_facts([a_fact(vector=b"1234")]),
        "facts[0].embedding_model",
    ),
    (
        "put fact model too long",
        "PutFacts",
        put_facts([a_fact(embedding_model="m" * 129, vector=b"1234")]),
        "facts[0].embedding_model",
    ),
    (
        "put fact vector too big",
        "PutFacts",
        put_facts([a_fact(embedding_model="m", vector=b"v" * 16385)]),
        "facts[0].vector",
    ),
    ("list facts no user", "ListFacts", pb.ListFactsRequest(tenant_id="tenant-a"), "user_id"),
    ("list facts no tenant", "ListFacts", pb.ListFactsRequest(user_id="ana"), "tenant_id"),
    (
        "delete fact id empty",
        "DeleteFact",
        pb.DeleteFactRequest(tenant_id="tenant-a", user_id="ana"),
        "fact_id",
    ),
    (
        "delete fact bad user",
        "DeleteFact",
        pb.DeleteFactRequest(tenant_id="tenant-a", user_id="", fact_id="f"),
        "user_id",
    ),
]
CASES += [(f"knowledge: {case}", *rest) for case, *rest in KNOWLEDGE_CASES]


async def invoke(state: StateHandle, method: str, request: Any) -> None:
    result = getattr(state.stub(), method)(request, metadata=state.metadata())
    if method in ("Watch", "ExportUserData", "ListEmbeddings"):
        async for _ in result:
            pass
    else:
        await result


@pytest.mark.parametrize(
    ("method", "request_message", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_names_the_field(
    state: StateHandle, method: str, request_message: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await invoke(state, method, request_message)
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert field in [v.field for v in bad.field_violations]
    assert field in (error.details() or "")


async def test_service_stays_up_after_bad_input(state: StateHandle) -> None:
    health = health_pb2_grpc.HealthStub(state.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    conversation = await new_conversation(state)
    appended = await state.stub().AppendEvents(
        pb.AppendEventsRequest(conversation_id=conversation.conversation_id, events=[event()]),
        metadata=state.metadata(),
    )
    assert appended.last_seq == 1


async def test_several_bad_fields_are_all_named(state: StateHandle) -> None:
    request = pb.AppendEventsRequest(
        conversation_id=CID, events=[event(event_id="x"), event(event_type=0, event_id=uuid7())]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await state.stub().AppendEvents(request, metadata=state.metadata())
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["events[0].event_id", "events[1].type"]


async def test_unknown_conversation_is_not_found(state: StateHandle) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await state.stub().AppendEvents(
            pb.AppendEventsRequest(conversation_id=CID, events=[event()]), metadata=state.metadata()
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_case_ids_are_unique() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)
