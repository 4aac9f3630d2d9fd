"""context_svc: IngestDocument answers within its embedding budget whatever the document's
size; the chunks it did not embed are found by keyword at once and embedded in the
background, across a restart, and never for a document deleted or replaced meanwhile.

The service runs with a 50 ms budget, so a 512 KiB document of distinct text (about 1,400
chunks) always leaves a tail, however fast the machine.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.context import (
    ContextHandle,
    context_settings,
    eventually,
    running_context,
    sqlite_state,
)
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.context_svc.embedding import EmbeddingError, Vectors
from voiceagent_backbone.context_svc.service import shared_embedder
from voiceagent_backbone.context_svc.store import IndexStore

TITLE = "Staff handbook"
# What the model embeds for a chunk of a titled document starts with its title.
CHUNK_PREFIX = f"{TITLE}: "
LAST_PASSAGE = (
    "Lost badges. A lost staff badge is replaced at the security desk on level minus two, "
    "for a fee of fifteen euros, on weekdays between nine and eleven."
)
KEYWORDS = "security desk level minus two"
# Not one term in common with the passage (nor with the rest of the document): only the
# dense ranking can find it.
PARAPHRASE = "I misplaced my employee ID card. Who can give me another?"
# Long enough for the whole tail of a 512 KiB document on a slow, busy machine.
FULLY_EMBEDDED_WITHIN_S = 480

PEOPLE = ["Amira", "the plumber", "our accountant", "Jonas", "the gardener", "Mrs Okafor"]
PEOPLE += ["the courier", "my cousin", "the landlord", "Dr Petrov", "the night nurse", "Lucia"]
ACTIONS = ["repaired", "delivered", "inspected", "painted", "ordered", "returned"]
ACTIONS += ["measured", "cleaned", "photographed", "weighed", "labelled", "assembled"]
THINGS = ["the kitchen tap", "a crate of apples", "the boiler", "twelve chairs"]
THINGS += ["the garden fence", "a bicycle wheel", "the roof tiles", "a violin", "the bookshelf"]
THINGS += ["forty lanterns", "the greenhouse", "a carpet"]
PLACES = ["near the harbour", "behind the library", "at the farm", "in the attic"]
PLACES += ["beside the river", "at the bakery", "in the workshop", "by the station"]


def distinct_text(limit: int, seed: int = 2026) -> str:
    """Numbered sentences of varied words up to `limit` bytes, LAST_PASSAGE last. Paragraphs
    of five sentences (60-75 words) make one chunk each, every one different."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    size, n = len(LAST_PASSAGE) + 2, 0
    while True:
        sentences = []
        for _ in range(5):
            n += 1
            sentences.append(
                f"Entry {n}: {rng.choice(PEOPLE)} {rng.choice(ACTIONS)} {rng.choice(THINGS)} "
                f"{rng.choice(PLACES)} on day {rng.randint(1, 9999)}."
            )
        paragraph = " ".join(sentences)
        if size + len(paragraph) + 2 > limit:
            break
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join([*paragraphs, LAST_PASSAGE])


class GatedEmbedder:
    """The real model; while held, the next embedding of handbook chunks waits in the
    indexing thread until released, so a test sees the background embedding mid-tail."""

    def __init__(self) -> None:
        self.inner = shared_embedder(2)
        self.name, self.dim = self.inner.name, self.inner.dim
        self.entered = threading.Event()
        self._held = False
        self._released = threading.Event()

    def hold(self) -> None:
        self.entered.clear()
        self._released.clear()
        self._held = True

    def release(self) -> None:
        self._held = False
        self._released.set()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self._held and any(t.startswith(CHUNK_PREFIX) for t in texts):
            self.entered.set()
            self._released.wait(60)
        return self.inner.embed(texts)


class FailingEmbedder:
    """The real model; a hosted backend going down after `allowed` handbook chunks (a call
    that would go past them fails whole)."""

    def __init__(self, allowed: int) -> None:
        self.inner = shared_embedder(2)
        self.name, self.dim = self.inner.name, self.inner.dim
        self.allowed = allowed

    def embed(self, texts: Sequence[str]) -> Vectors:
        chunks = sum(t.startswith(CHUNK_PREFIX) for t in texts)
        if chunks > self.allowed:
            raise EmbeddingError("embeddings API answered HTTP 503")
        self.allowed -= chunks
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def embedder() -> GatedEmbedder:
    return GatedEmbedder()


@pytest.fixture(scope="module")
async def ctx(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str, embedder: GatedEmbedder
) -> AsyncIterator[ContextHandle]:
    tmp = tmp_path_factory.mktemp("ctx-ingest")
    async with sqlite_state(tmp / "state", jwt_key) as state:
        settings = context_settings(
            tmp, jwt_key, state.port, follow_feed=False, ingest_sync_budget_s=0.05
        )
        async with running_context(settings, jwt_key, embedder) as handle:
            yield handle


def fresh_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def ingest(
    handle: ContextHandle, tenant: str, document_id: str, text: str
) -> cpb.IngestDocumentResponse:
    reply: cpb.IngestDocumentResponse = await handle.stub().IngestDocument(
        cpb.IngestDocumentRequest(
            document=cpb.Document(document_id=document_id, title=TITLE, text=text)
        ),
        metadata=handle.metadata(tenant),
        timeout=120,
    )
    return reply


async def get_document(handle: ContextHandle, tenant: str, document_id: str) -> cpb.Document:
    reply = await handle.stub().GetDocument(
        cpb.GetDocumentRequest(document_id=document_id), metadata=handle.metadata(tenant)
    )
    document: cpb.Document = reply.document
    return document


async def status(handle: ContextHandle, tenant: str) -> cpb.GetIndexStatusResponse:
    reply: cpb.GetIndexStatusResponse = await handle.stub().GetIndexStatus(
        cpb.GetIndexStatusRequest(), metadata=handle.metadata(tenant)
    )
    return reply


async def fully_embedded(
    handle: ContextHandle, tenant: str, document_id: str, keywords: str = KEYWORDS
) -> cpb.Document:
    """Polls GetDocument (bounded) until every chunk is embedded. Meanwhile the service
    answers Enrich, finding the document by `keywords`, and health checks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FULLY_EMBEDDED_WITHIN_S
    health = health_pb2_grpc.HealthStub(handle.channel)
    while True:
        document = await get_document(handle, tenant, document_id)
        if document.embedded_chunks == document.chunk_count:
            return document
        found = await handle.enrich(keywords, "ana", tenant)
        assert found.items[0].document_id == document_id
        checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
        if loop.time() > deadline:
            raise AssertionError(
                f"{document.embedded_chunks} of {document.chunk_count} chunks embedded "
                f"after {FULLY_EMBEDDED_WITHIN_S} s"
            )
        await asyncio.sleep(0.2)


async def stored_chunks(store: IndexStore, tenant: str, document_id: str) -> list[bool]:
    """Whether each stored chunk of the document has a vector, by chunk index."""
    rows = sorted(
        (c.chunk_index, c.vector is not None)
        for c in await store.load_chunks()
        if (c.tenant_id, c.document_id) == (tenant, document_id)
    )
    assert [i for i, _ in rows] == list(range(len(rows)))  # each chunk once
    return [embedded for _, embedded in rows]


def items_of(reply: cpb.EnrichResponse, document_id: str) -> list[cpb.ContextItem]:
    return [item for item in reply.items if item.document_id == document_id]


@pytest.mark.timeout(FULLY_EMBEDDED_WITHIN_S + 120)
async def test_a_512_kib_document_answers_at_once_and_is_embedded_in_the_background(
    ctx: ContextHandle, embedder: GatedEmbedder
) -> None:
    tenant = fresh_tenant()
    limit = ctx.settings.max_document_bytes
    text = distinct_text(limit)
    assert limit - 1000 < len(text.encode()) <= limit

    reply = await ingest(ctx, tenant, "handbook", text)

    chunks = reply.document.chunk_count
    assert chunks > 1000
    assert reply.document.embedded_chunks < chunks
    # Every chunk is searchable by keyword at once, the last one too.
    found = await ctx.enrich(KEYWORDS, "ana", tenant)
    assert "security desk" in found.items[0].text
    assert (found.items[0].document_id, found.items[0].chunk_index) == ("handbook", chunks - 1)

    embedder.hold()
    try:
        # The background embedding is in the middle of the tail (chunks go in order).
        await eventually(embedder.entered.is_set, "the background embedding of a chunk")
        document = await get_document(ctx, tenant, "handbook")
        assert document.text == text
        assert reply.document.embedded_chunks <= document.embedded_chunks < chunks - 1
        tail = await status(ctx, tenant)
        assert tail.knowledge_chunks == chunks
        assert tail.pending_chunks == chunks - document.embedded_chunks
        # No word in common and no vector yet: not found (and not ranked by a zero vector).
        early = await ctx.enrich(PARAPHRASE, "ana", tenant)
        assert all("security desk" not in item.text for item in early.items)
        health = health_pb2_grpc.HealthStub(ctx.channel)
        checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert checked.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        embedder.release()

    document = await fully_embedded(ctx, tenant, "handbook")

    assert document.embedded_chunks == chunks
    assert (await status(ctx, tenant)).pending_chunks == 0
    meaning = await ctx.enrich(PARAPHRASE, "ana", tenant)
    assert "security desk" in " ".join(item.text for item in meaning.items[:3])
    listed = await ctx.stub().ListDocuments(
        cpb.ListDocumentsRequest(), metadata=ctx.metadata(tenant)
    )
    assert [(d.chunk_count, d.embedded_chunks) for d in listed.documents] == [(chunks, chunks)]
    assert all(await stored_chunks(ctx.domain.store, tenant, "handbook"))


async def test_a_restart_mid_tail_finishes_the_document(tmp_path: Path, jwt_key: str) -> None:
    tenant = fresh_tenant()
    text = distinct_text(16 * 1024)
    # Nothing embedded while answering; then the backend fails after one batch of chunks.
    async with sqlite_state(tmp_path / "state", jwt_key) as state:
        settings = context_settings(
            tmp_path, jwt_key, state.port, follow_feed=False, ingest_sync_budget_s=0
        )
        batch = 16
        async with running_context(settings, jwt_key, FailingEmbedder(allowed=batch)) as first:
            reply = await ingest(first, tenant, "handbook", text)
            chunks = reply.document.chunk_count
            assert chunks > batch
            assert reply.document.embedded_chunks == 0
            await eventually(
                lambda: first.domain.knowledge.backfill.count(tenant) == chunks - batch,
                "a batch embedded",
            )
            assert (await get_document(first, tenant, "handbook")).embedded_chunks == batch

        async with running_context(settings, jwt_key) as second:
            document = await fully_embedded(second, tenant, "handbook")

            assert document.chunk_count == chunks
            # Only what was left was embedded, each chunk once, none of them twice.
            assert second.domain.embedded_for_index == chunks - batch
            assert await stored_chunks(second.domain.store, tenant, "handbook") == [True] * chunks
            meaning = await second.enrich(PARAPHRASE, "ana", tenant)
            assert "security desk" in meaning.items[0].text
            keys = [(i.document_id, i.chunk_index) for i in meaning.items]
            assert len(set(keys)) == len(keys)


async def test_a_document_deleted_mid_tail_stays_deleted(
    ctx: ContextHandle, embedder: GatedEmbedder
) -> None:
    tenant = fresh_tenant()
    stub, md = ctx.stub(), ctx.metadata(tenant)
    reply = await ingest(ctx, tenant, "old-handbook", distinct_text(16 * 1024))
    assert reply.document.embedded_chunks < reply.document.chunk_count

    embedder.hold()
    try:
        # One of its chunks is being embedded when it is deleted.
        await eventually(embedder.entered.is_set, "the background embedding of a chunk")
        deleted = await stub.DeleteDocument(
            cpb.DeleteDocumentRequest(document_id="old-handbook"), metadata=md
        )
        assert deleted.deleted
        assert (await status(ctx, tenant)).pending_chunks == 0
    finally:
        embedder.release()
    # The worker finishes that chunk and then embeds this one: it has passed the deleted one.
    await ingest(ctx, tenant, "new-handbook", distinct_text(8 * 1024, seed=7))
    await fully_embedded(ctx, tenant, "new-handbook")

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_document(ctx, tenant, "old-handbook")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert await stored_chunks(ctx.domain.store, tenant, "old-handbook") == []
    listed = await stub.ListDocuments(cpb.ListDocumentsRequest(), metadata=md)
    assert [d.document_id for d in listed.documents] == ["new-handbook"]
    for query in (KEYWORDS, PARAPHRASE):
        assert not items_of(await ctx.enrich(query, "ana", tenant), "old-handbook")
    current = await status(ctx, tenant)
    assert (current.knowledge_chunks, current.pending_chunks) == (
        listed.documents[0].chunk_count,
        0,
    )


async def test_ingesting_again_mid_tail_replaces_the_document(ctx: ContextHandle) -> None:
    tenant = fresh_tenant()
    first = await ingest(ctx, tenant, "handbook", distinct_text(16 * 1024))
    assert first.document.embedded_chunks < first.document.chunk_count

    second = await ingest(ctx, tenant, "handbook", "Parking. Staff park in garage B for free.")

    # The first version's tail is dropped at once: only the new version can be pending.
    pending = (await status(ctx, tenant)).pending_chunks
    assert pending <= second.document.chunk_count - second.document.embedded_chunks
    document = await fully_embedded(ctx, tenant, "handbook", keywords="garage parking")
    assert (document.chunk_count, document.embedded_chunks) == (1, 1)
    assert document.text == "Parking. Staff park in garage B for free."
    assert await stored_chunks(ctx.domain.store, tenant, "handbook") == [True]
    # The first version's passage is gone (nothing else answers its words); the new one is
    # what is found.
    assert not (await ctx.enrich(KEYWORDS, "ana", tenant)).items
    texts = [item.text for item in (await ctx.enrich("where do staff park", "ana", tenant)).items]
    assert texts == ["Parking. Staff park in garage B for free."]
    assert (await status(ctx, tenant)).knowledge_chunks == 1


async def test_get_document_of_an_unknown_id_is_not_found(ctx: ContextHandle) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get_document(ctx, fresh_tenant(), "nothing-here")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
