"""context_svc: bad input gives INVALID_ARGUMENT naming the field; the service stays up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.context import (
    ContextHandle,
    context_settings,
    running_context,
    sqlite_state,
)
from voiceagent_backbone.api.context.v1 import context_pb2 as pb


@pytest.fixture(scope="module")
async def ctx(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[ContextHandle]:
    # Feed following is off: validation happens before anything else.
    tmp = tmp_path_factory.mktemp("ctx-validation")
    async with sqlite_state(tmp / "state", jwt_key) as state:
        settings = context_settings(
            tmp, jwt_key, state.port, follow_feed=False, max_document_bytes=4096
        )
        async with running_context(settings, jwt_key) as handle:
            yield handle


def big_struct() -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update({f"k{i}": "v" * 100 for i in range(200)})
    return out


CID = "00000000-0000-7000-8000-000000000000"
OK_TEXT = "where can I park?"

CASES: list[tuple[str, str, Any, str]] = [
    ("enrich no user or conversation", "Enrich", pb.EnrichRequest(text=OK_TEXT), "user_id"),
    ("enrich bad user id", "Enrich", pb.EnrichRequest(user_id="a b", text=OK_TEXT), "user_id"),
    (
        "enrich user id too long",
        "Enrich",
        pb.EnrichRequest(user_id="u" * 129, text=OK_TEXT),
        "user_id",
    ),
    (
        "enrich bad conversation id",
        "Enrich",
        pb.EnrichRequest(user_id="ana", conversation_id="not-a-uuid", text=OK_TEXT),
        "conversation_id",
    ),
    ("enrich empty text", "Enrich", pb.EnrichRequest(user_id="ana", text="  "), "text"),
    ("enrich huge text", "Enrich", pb.EnrichRequest(user_id="ana", text="x" * 5000), "text"),
    ("enrich control chars", "Enrich", pb.EnrichRequest(user_id="ana", text="a\x00b"), "text"),
    (
        "enrich negative items",
        "Enrich",
        pb.EnrichRequest(user_id="ana", text=OK_TEXT, max_items=-1),
        "max_items",
    ),
    (
        "enrich too many items",
        "Enrich",
        pb.EnrichRequest(user_id="ana", text=OK_TEXT, max_items=51),
        "max_items",
    ),
    (
        "enrich negative budget",
        "Enrich",
        pb.EnrichRequest(user_id="ana", text=OK_TEXT, token_budget=-5),
        "token_budget",
    ),
    (
        "enrich huge budget",
        "Enrich",
        pb.EnrichRequest(user_id="ana", text=OK_TEXT, token_budget=10**6),
        "token_budget",
    ),
    (
        "enrich unknown source",
        "Enrich",
        pb.EnrichRequest(user_id="ana", text=OK_TEXT, sources=[pb.SOURCE_KIND_UNSPECIFIED]),
        "sources[0]",
    ),
    ("ingest without document", "IngestDocument", pb.IngestDocumentRequest(), "document"),
    (
        "ingest empty text",
        "IngestDocument",
        pb.IngestDocumentRequest(document=pb.Document(document_id="d", text="")),
        "document.text",
    ),
    (
        "ingest text too big",
        "IngestDocument",
        pb.IngestDocumentRequest(document=pb.Document(text="word " * 2000)),
        "document.text",
    ),
    (
        "ingest bad id",
        "IngestDocument",
        pb.IngestDocumentRequest(document=pb.Document(document_id="a b", text="x")),
        "document.document_id",
    ),
    (
        "ingest title too long",
        "IngestDocument",
        pb.IngestDocumentRequest(document=pb.Document(title="t" * 300, text="x")),
        "document.title",
    ),
    (
        "ingest metadata too big",
        "IngestDocument",
        pb.IngestDocumentRequest(document=pb.Document(text="x", metadata=big_struct())),
        "document.metadata",
    ),
    ("delete document without id", "DeleteDocument", pb.DeleteDocumentRequest(), "document_id"),
    ("get document without id", "GetDocument", pb.GetDocumentRequest(), "document_id"),
    (
        "get document bad id",
        "GetDocument",
        pb.GetDocumentRequest(document_id="a b"),
        "document_id",
    ),
    (
        "list documents page size",
        "ListDocuments",
        pb.ListDocumentsRequest(page_size=1000),
        "page_size",
    ),
    (
        "list documents bad token",
        "ListDocuments",
        pb.ListDocumentsRequest(page_token="zzz"),
        "page_token",
    ),
    (
        "facts without user",
        "UpsertFacts",
        pb.UpsertFactsRequest(facts=[pb.Fact(text="likes tea")]),
        "user_id",
    ),
    ("facts empty", "UpsertFacts", pb.UpsertFactsRequest(user_id="ana"), "facts"),
    (
        "facts too many",
        "UpsertFacts",
        pb.UpsertFactsRequest(user_id="ana", facts=[pb.Fact(text="x")] * 101),
        "facts",
    ),
    (
        "fact empty text",
        "UpsertFacts",
        pb.UpsertFactsRequest(user_id="ana", facts=[pb.Fact(text="")]),
        "facts[0].text",
    ),
    (
        "fact text too long",
        "UpsertFacts",
        pb.UpsertFactsRequest(user_id="ana", facts=[pb.Fact(text="x" * 1001)]),
        "facts[0].text",
    ),
    (
        "fact id twice",
        "UpsertFacts",
        pb.UpsertFactsRequest(
            user_id="ana", facts=[pb.Fact(fact_id="f", text="a"), pb.Fact(fact_id="f", text="b")]
        ),
        "facts[1].fact_id",
    ),
    ("list facts bad user", "ListFacts", pb.ListFactsRequest(user_id="ü"), "user_id"),
    ("delete fact without id", "DeleteFact", pb.DeleteFactRequest(user_id="ana"), "fact_id"),
]


@pytest.mark.parametrize(
    ("method", "request_message", "field"), [pytest.param(m, r, f, id=i) for i, m, r, f in CASES]
)
async def test_bad_input_names_the_field(
    ctx: ContextHandle, method: str, request_message: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(ctx.stub(), method)(request_message, metadata=ctx.metadata(), timeout=10)
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    assert field in [v.field for v in bad.field_violations]


async def test_service_stays_up_and_writes_need_the_write_scope(ctx: ContextHandle) -> None:
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await ctx.stub().Enrich(pb.EnrichRequest(), metadata=ctx.metadata())
    reply = await ctx.stub().Enrich(
        pb.EnrichRequest(user_id="ana", text=OK_TEXT), metadata=ctx.metadata()
    )
    assert not reply.items

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ctx.stub().UpsertFacts(
            pb.UpsertFactsRequest(user_id="ana", facts=[pb.Fact(text="likes tea")]),
            metadata=ctx.metadata(scopes="context.read"),
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ctx.stub().Enrich(pb.EnrichRequest(user_id="ana", text=OK_TEXT))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_too_many_facts_for_one_user_is_refused(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> None:
    tmp = tmp_path_factory.mktemp("ctx-facts")
    async with (
        sqlite_state(tmp / "state", jwt_key) as state,
        running_context(
            context_settings(tmp, jwt_key, state.port, follow_feed=False, max_facts_per_user=3),
            jwt_key,
        ) as handle,
    ):
        stub, md = handle.stub(), handle.metadata()
        await stub.UpsertFacts(
            pb.UpsertFactsRequest(
                user_id="ana", facts=[pb.Fact(text=f"fact {i}") for i in range(3)]
            ),
            metadata=md,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UpsertFacts(
                pb.UpsertFactsRequest(user_id="ana", facts=[pb.Fact(text="one more")]), metadata=md
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = await stub.ListFacts(pb.ListFactsRequest(user_id="ana"), metadata=md)
        assert len(listed.facts) == 3
