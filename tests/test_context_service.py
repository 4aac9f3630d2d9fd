"""context_svc end to end: a real state_svc, its change feed, the real model and index.

Each test uses its own tenant, so tests sharing the module's servers do not see each other.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.support.context import (
    ContextHandle,
    context_settings,
    eventually,
    indexed,
    running_context,
    say,
)
from tests.support.state import StateHandle, event, new_conversation, running_state, state_settings
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.state.v1 import state_pb2 as spb
from voiceagent_backbone.context_svc import metrics
from voiceagent_backbone.context_svc.embedding import Vectors
from voiceagent_backbone.context_svc.service import shared_embedder


def fresh_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def state(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[StateHandle]:
    settings = state_settings("sqlite", tmp_path_factory.mktemp("ctx-state"), jwt_key, None)
    async with running_state(settings, jwt_key) as handle:
        yield handle


@pytest.fixture(scope="module")
async def ctx(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str, state: StateHandle
) -> AsyncIterator[ContextHandle]:
    settings = context_settings(tmp_path_factory.mktemp("ctx"), jwt_key, state.port)
    async with running_context(settings, jwt_key) as handle:
        yield handle


DOG = ("user", "My dog Biscuit is a golden retriever and he loves swimming in the lake.")
JOB = ("user", "I started a new job as a nurse at the children's hospital in March.")
REPLY = ("agent", "That is wonderful news, congratulations on the new position!")


async def test_memory_spans_the_users_conversations(ctx: ContextHandle, state: StateHandle) -> None:
    tenant = fresh_tenant()
    first = await new_conversation(state, tenant, ("ana",))
    stored = await say(
        state, first.conversation_id, [DOG, ("agent", "What a lovely dog!"), JOB, REPLY], tenant
    )
    await indexed(ctx, tenant, 4)
    second = await new_conversation(state, tenant, ("ana",))

    reply = await ctx.enrich(
        "What breed is my dog?", "ana", tenant, conversation_id=second.conversation_id
    )

    # The turn that answers it is among the first two (the agent's "What a lovely dog!"
    # is a close neighbour), with everything needed to cite it.
    (top,) = [item for item in reply.items[:2] if "golden retriever" in item.text]
    assert top.source == cpb.SOURCE_KIND_MEMORY
    assert top.event_id == stored[0].event_id
    assert top.conversation_id == first.conversation_id
    assert top.seq == 1
    assert top.speaker == "caller"
    assert top.occurred_at.seconds > 0
    assert 0 < top.score <= 1.0
    assert not reply.partial
    assert "golden retriever" in reply.context_block
    assert 0 < reply.context_tokens <= 512
    scores = [item.score for item in reply.items]
    assert scores == sorted(scores, reverse=True)


async def test_a_question_nothing_answers_gets_no_context(
    ctx: ContextHandle, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    conversation = await new_conversation(state, tenant, ("ana",))
    await say(state, conversation.conversation_id, [DOG, REPLY, JOB], tenant)
    await indexed(ctx, tenant, 3)

    unrelated = await ctx.enrich("What is the weather on Mars?", "ana", tenant)
    assert not unrelated.items
    assert unrelated.context_block == ""
    assert unrelated.context_tokens == 0
    assert not unrelated.partial

    # The same memory still answers what it knows, and only with what is relevant to it.
    related = await ctx.enrich("What breed is my dog?", "ana", tenant)
    assert "golden retriever" in related.items[0].text
    assert "golden retriever" in related.context_block
    assert all("nurse" not in item.text for item in related.items)


async def test_agent_text_flagged_not_memory_is_stored_but_never_indexed(
    ctx: ContextHandle, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    conversation = await new_conversation(state, tenant, ("ana",))
    greeting = "Hello, Ana! How can I help you today?"
    # As agent_svc stores a greeting the agent excluded from memory.
    flagged = event(
        spb.EVENT_TYPE_AGENT_MESSAGE, greeting, spb.ROLE_AGENT, participant_identity="assistant"
    )
    flagged.payload.update({"item_id": "item-1", "interrupted": False, "memory": False})
    await state.stub().AppendEvents(
        spb.AppendEventsRequest(conversation_id=conversation.conversation_id, events=[flagged]),
        metadata=state.metadata(tenant),
    )
    # The feed is applied in order: once the turn after the greeting is indexed, the
    # greeting has been read (and left out).
    await say(state, conversation.conversation_id, [DOG], tenant)
    await indexed(ctx, tenant, 1)

    history = await state.stub().GetHistory(
        spb.GetHistoryRequest(conversation_id=conversation.conversation_id),
        metadata=state.metadata(tenant),
    )
    assert [e.text for e in history.events] == [greeting, DOG[1]]
    reply = await ctx.enrich("How can I help you today, Ana?", "ana", tenant, max_items=50)
    assert all(item.event_id != flagged.event_id for item in reply.items)
    assert ctx.domain.turns_by_tenant[tenant] == 1


async def test_never_another_tenants_or_users_memory(
    ctx: ContextHandle, state: StateHandle
) -> None:
    tenant_a, tenant_b = fresh_tenant(), fresh_tenant()
    secret = "The vault code for the blue warehouse is seven seven four."
    mine = await new_conversation(state, tenant_a, ("ana",))
    await say(state, mine.conversation_id, [JOB], tenant_a)
    other_user = await new_conversation(state, tenant_a, ("ben",))
    await say(state, other_user.conversation_id, [("user", secret)], tenant_a)
    # Same user id, other tenant.
    other_tenant = await new_conversation(state, tenant_b, ("ana",))
    await say(state, other_tenant.conversation_id, [("user", secret)], tenant_b)
    await indexed(ctx, tenant_a, 2)
    await indexed(ctx, tenant_b, 1)

    reply = await ctx.enrich(secret, "ana", tenant_a)
    assert all("vault" not in item.text for item in reply.items)
    assert {item.conversation_id for item in reply.items} <= {mine.conversation_id}

    # The owners do see it.
    assert "vault" in (await ctx.enrich(secret, "ben", tenant_a)).items[0].text
    assert "vault" in (await ctx.enrich(secret, "ana", tenant_b)).items[0].text


async def test_deleting_a_user_in_state_svc_removes_their_memory_and_facts(
    ctx: ContextHandle, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    conversation = await new_conversation(state, tenant, ("ana",))
    await say(state, conversation.conversation_id, [DOG, REPLY], tenant)
    await ctx.stub().UpsertFacts(
        cpb.UpsertFactsRequest(user_id="ana", facts=[cpb.Fact(text="Ana is allergic to cats.")]),
        metadata=ctx.metadata(tenant),
    )
    await indexed(ctx, tenant, 2)
    assert (await ctx.enrich("my dog", "ana", tenant)).items

    await state.stub().DeleteUserData(
        spb.DeleteUserDataRequest(user_id="ana"), metadata=state.metadata(tenant)
    )

    await indexed(ctx, tenant, 0)
    assert not (await ctx.enrich("my dog Biscuit allergic cats", "ana", tenant)).items
    facts = await ctx.stub().ListFacts(
        cpb.ListFactsRequest(user_id="ana"), metadata=ctx.metadata(tenant)
    )
    assert not facts.facts


async def test_a_message_replaces_the_transcriptions_of_its_turn(
    ctx: ContextHandle, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    conversation = await new_conversation(state, tenant, ("ana",))

    def transcription(text: str, final: bool = True) -> spb.Event:
        return event(
            spb.EVENT_TYPE_TRANSCRIPTION,
            text,
            spb.ROLE_USER,
            transcription=spb.TranscriptionDetail(final=final),
        )

    events = [
        transcription("I need a taxi to the airport"),  # never became a message: kept
        event(spb.EVENT_TYPE_AGENT_MESSAGE, "Where are you now?", spb.ROLE_AGENT),
        transcription("book a table for", final=False),  # interim: never indexed
        transcription("book a table for two at the sushi place"),  # replaced by the message
        event(
            spb.EVENT_TYPE_USER_MESSAGE, "Book a table for two at the sushi place.", spb.ROLE_USER
        ),
    ]
    await state.stub().AppendEvents(
        spb.AppendEventsRequest(conversation_id=conversation.conversation_id, events=events),
        metadata=state.metadata(tenant),
    )
    await indexed(ctx, tenant, 3)

    texts = [
        i.text
        for i in (await ctx.enrich("taxi airport sushi table", "ana", tenant, max_items=10)).items
    ]
    assert sorted(texts) == [
        "Book a table for two at the sushi place.",
        "I need a taxi to the airport",
    ]
    # The agent's turn is indexed too (found when it is what is asked about).
    texts = [i.text for i in (await ctx.enrich("Where are you now?", "ana", tenant)).items]
    assert "Where are you now?" in texts


async def test_a_spoken_turn_is_embedded_once(ctx: ContextHandle, state: StateHandle) -> None:
    """The final transcription is indexed at once; the message that replaces it moments
    later (the same words, capitalised and punctuated) reuses its vector."""
    tenant = fresh_tenant()
    conversation = await new_conversation(state, tenant, ("ana",))
    spoken = event(
        spb.EVENT_TYPE_TRANSCRIPTION,
        "my sister lives in lisbon and she teaches piano",
        spb.ROLE_USER,
        transcription=spb.TranscriptionDetail(final=True),
    )
    spoken.participant_identity = "caller"
    await state.stub().AppendEvents(
        spb.AppendEventsRequest(conversation_id=conversation.conversation_id, events=[spoken]),
        metadata=state.metadata(tenant),
    )
    await indexed(ctx, tenant, 1)
    before = ctx.domain.embedded_for_index
    message = event(
        spb.EVENT_TYPE_USER_MESSAGE,
        "My sister lives in Lisbon, and she teaches piano.",
        spb.ROLE_USER,
    )
    message.participant_identity = "caller"
    reply = event(spb.EVENT_TYPE_AGENT_MESSAGE, "How lovely, does she play too?", spb.ROLE_AGENT)
    await state.stub().AppendEvents(
        spb.AppendEventsRequest(
            conversation_id=conversation.conversation_id, events=[message, reply]
        ),
        metadata=state.metadata(tenant),
    )
    await eventually(
        lambda: ctx.domain.turns_by_tenant[tenant] == 2 and ctx.domain.progress.backlog == 0,
        "the message replaced the transcription",
    )
    assert ctx.domain.embedded_for_index - before == 1, "only the agent's reply is new"
    top = (await ctx.enrich("Where does my sister live?", "ana", tenant)).items[0]
    assert top.text == "My sister lives in Lisbon, and she teaches piano."


async def test_restart_resumes_from_the_cursor_without_re_embedding(
    tmp_path: Path, jwt_key: str, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    settings = context_settings(tmp_path, jwt_key, state.port)
    conversation = await new_conversation(state, tenant, ("ana",))
    async with running_context(settings, jwt_key) as first:
        await say(state, conversation.conversation_id, [DOG, REPLY, JOB], tenant)
        await indexed(first, tenant, 3)
        cursor = first.domain.progress.cursor

    # Written while context_svc is down.
    await say(
        state, conversation.conversation_id, [("user", "We adopted a kitten named Miso.")], tenant
    )
    async with running_context(settings, jwt_key) as second:
        # Loaded from the store: nothing embedded, same cursor.
        assert second.domain.turns_by_tenant[tenant] == 3
        assert second.domain.progress.cursor == cursor
        assert second.domain.embedded_for_index == 0
        await indexed(second, tenant, 4)
        # Only the new turn needed a vector, nothing was applied twice: embedded here, or
        # by the module's other replica of this state_svc first and loaded (shared).
        assert second.domain.embedded_for_index <= 1
        assert await second.domain.store.count_turns() >= 4
        reply = await second.enrich("what is the kitten called", "ana", tenant)
        assert "Miso" in reply.items[0].text
        assert len({item.event_id for item in reply.items}) == len(reply.items)


class SlowEmbedder:
    """The real model behind a delay: a CPU so busy that a query cannot be embedded in time."""

    def __init__(self, delay_s: float) -> None:
        self.inner = shared_embedder(2)
        self.name, self.dim = self.inner.name, self.inner.dim
        self.delay_s = delay_s
        self.query_delay = False

    def embed(self, texts: Sequence[str]) -> Vectors:
        if self.query_delay:
            time.sleep(self.delay_s)
        return self.inner.embed(texts)


async def test_enrich_answers_within_the_callers_deadline(
    tmp_path: Path, jwt_key: str, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    embedder = SlowEmbedder(delay_s=1.0)
    settings = context_settings(tmp_path, jwt_key, state.port)
    async with running_context(settings, jwt_key, embedder) as slow:
        conversation = await new_conversation(state, tenant, ("ana",))
        await say(state, conversation.conversation_id, [DOG, JOB], tenant)
        await indexed(slow, tenant, 2)
        embedder.query_delay = True
        partial_before = metrics.ENRICH_PARTIAL._value.get()

        started = time.perf_counter()
        reply = await slow.stub().Enrich(
            cpb.EnrichRequest(text="new job at the hospital", user_id="ana"),
            metadata=slow.metadata(tenant),
            timeout=0.3,
        )
        elapsed = time.perf_counter() - started

        assert elapsed < 0.3
        assert reply.partial
        assert "nurse" in reply.items[0].text  # the lexical ranking still found it
        assert metrics.ENRICH_PARTIAL._value.get() == partial_before + 1
        embedder.query_delay = False
        # Without a deadline pressure the full ranking is back.
        await asyncio.sleep(1.0)  # the abandoned embedding finishes in its thread
        full = await slow.enrich("new job at the hospital", "ana", tenant)
        assert not full.partial


async def test_knowledge_is_shared_by_the_tenants_users_only(
    ctx: ContextHandle, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    stub, md = ctx.stub(), ctx.metadata(tenant)
    text = (
        "Opening hours. The clinic opens at 8am on weekdays and 10am on Saturdays.\n\n"
        "Parking. Patients park for free in the underground garage on Elm Street; the "
        "entrance is next to the pharmacy.\n\n"
        "Cancellations. Appointments can be cancelled free of charge up to 24 hours before."
    )
    doc = await stub.IngestDocument(
        cpb.IngestDocumentRequest(
            document=cpb.Document(document_id="clinic-faq", title="Clinic FAQ", text=text)
        ),
        metadata=md,
    )
    assert doc.document.chunk_count >= 1
    # A small document is embedded within the call's budget: fully indexed on return.
    assert doc.document.embedded_chunks == doc.document.chunk_count
    assert doc.document.ingested_at.seconds > 0

    for user in ("ana", "ben"):
        reply = await ctx.enrich("where can I park my car?", user, tenant)
        assert reply.items[0].source == cpb.SOURCE_KIND_KNOWLEDGE
        assert "garage" in reply.items[0].text
        assert reply.items[0].document_id == "clinic-faq"
        assert "Clinic FAQ" in reply.context_block
    assert not (await ctx.enrich("where can I park my car?", "ana", fresh_tenant())).items

    # Re-ingesting replaces the chunks.
    await stub.IngestDocument(
        cpb.IngestDocumentRequest(
            document=cpb.Document(
                document_id="clinic-faq", title="Clinic FAQ", text="Parking is no longer available."
            )
        ),
        metadata=md,
    )
    texts = [i.text for i in (await ctx.enrich("park garage", "ana", tenant)).items]
    assert texts == ["Parking is no longer available."]

    listed = await stub.ListDocuments(cpb.ListDocumentsRequest(), metadata=md)
    assert [d.document_id for d in listed.documents] == ["clinic-faq"]
    assert (
        await stub.DeleteDocument(cpb.DeleteDocumentRequest(document_id="clinic-faq"), metadata=md)
    ).deleted
    assert not (await ctx.enrich("park garage", "ana", tenant)).items
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.DeleteDocument(cpb.DeleteDocumentRequest(document_id="clinic-faq"), metadata=md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_document_of_the_largest_size_is_searchable_to_its_end(ctx: ContextHandle) -> None:
    tenant = fresh_tenant()
    stub, md = ctx.stub(), ctx.metadata(tenant)
    # A staff handbook at the size limit whose notice repeats (each distinct chunk costs the
    # model about 20 ms, so repetition keeps the test quick); its last section is asked for.
    notice = (
        "Safety notice. Keep fire doors closed at all times, wear your badge where it can be "
        "seen, and report spilled liquids on the stairs to the facilities team at once."
    )
    last = (
        "Lost badges. A lost staff badge is replaced at the security desk on level minus two, "
        "for a fee of fifteen euros."
    )
    limit = ctx.settings.max_document_bytes
    text = "\n\n".join([notice] * ((limit - len(last)) // (len(notice) + 2)) + [last])
    assert limit - len(notice) - 2 < len(text.encode()) <= limit

    doc = await stub.IngestDocument(
        cpb.IngestDocumentRequest(
            document=cpb.Document(document_id="handbook", title="Staff handbook", text=text)
        ),
        metadata=md,
    )

    reply = await ctx.enrich("where do I get a new staff badge after losing mine?", "ana", tenant)
    top = reply.items[0]
    assert "security desk on level minus two" in top.text
    assert (top.document_id, top.chunk_index) == ("handbook", doc.document.chunk_count - 1)
    assert "security desk" in reply.context_block


async def test_list_documents_pages(ctx: ContextHandle) -> None:
    tenant = fresh_tenant()
    stub, md = ctx.stub(), ctx.metadata(tenant)
    for i in range(5):
        await stub.IngestDocument(
            cpb.IngestDocumentRequest(
                document=cpb.Document(
                    document_id=f"doc-{i}", text=f"Document number {i} about topic {i}."
                )
            ),
            metadata=md,
        )
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await stub.ListDocuments(
            cpb.ListDocumentsRequest(page_size=2, page_token=token), metadata=md
        )
        seen.extend(d.document_id for d in page.documents)
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"doc-{i}" for i in range(5)]


async def test_facts_are_the_users_own(ctx: ContextHandle) -> None:
    tenant = fresh_tenant()
    stub, md = ctx.stub(), ctx.metadata(tenant)
    upserted = await stub.UpsertFacts(
        cpb.UpsertFactsRequest(
            user_id="ana",
            facts=[
                cpb.Fact(fact_id="diet", text="Ana is vegetarian."),
                cpb.Fact(text="Ana prefers to be called in the evening."),
            ],
        ),
        metadata=md,
    )
    assert len(upserted.facts) == 2
    assert upserted.facts[1].fact_id  # generated

    reply = await ctx.enrich("Can you suggest a dinner recipe with meat?", "ana", tenant)
    assert reply.items[0].source == cpb.SOURCE_KIND_FACT
    assert reply.items[0].fact_id == "diet"
    assert "About the user: Ana is vegetarian." in reply.context_block
    assert not (await ctx.enrich("dinner recipe vegetarian", "ben", tenant)).items

    await stub.UpsertFacts(
        cpb.UpsertFactsRequest(
            user_id="ana", facts=[cpb.Fact(fact_id="diet", text="Ana eats fish but no meat.")]
        ),
        metadata=md,
    )
    listed = await stub.ListFacts(cpb.ListFactsRequest(user_id="ana"), metadata=md)
    assert sorted(f.text for f in listed.facts) == [
        "Ana eats fish but no meat.",
        "Ana prefers to be called in the evening.",
    ]
    reply = await ctx.enrich("dinner recipe", "ana", tenant, sources=[cpb.SOURCE_KIND_FACT])
    assert "vegetarian" not in reply.context_block

    await stub.DeleteFact(cpb.DeleteFactRequest(user_id="ana", fact_id="diet"), metadata=md)
    listed = await stub.ListFacts(cpb.ListFactsRequest(user_id="ana"), metadata=md)
    assert [f.text for f in listed.facts] == ["Ana prefers to be called in the evening."]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.DeleteFact(cpb.DeleteFactRequest(user_id="ana", fact_id="diet"), metadata=md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_token_budget_and_max_items_bound_the_answer(
    ctx: ContextHandle, state: StateHandle
) -> None:
    tenant = fresh_tenant()
    conversation = await new_conversation(state, tenant, ("ana",))
    turns = [
        ("user", f"Reminder {i}: water the garden plants and check the tomatoes.")
        for i in range(12)
    ]
    await say(state, conversation.conversation_id, turns, tenant)
    await indexed(ctx, tenant, 12)

    assert len((await ctx.enrich("garden tomatoes", "ana", tenant, max_items=3)).items) == 3
    small = await ctx.enrich("garden tomatoes", "ana", tenant, max_items=12, token_budget=60)
    assert 0 < len(small.items) < 12
    assert small.context_tokens <= 60
    assert small.context_block.count("\n") == len(small.items)


async def test_index_status_and_feed_backlog(ctx: ContextHandle, state: StateHandle) -> None:
    tenant = fresh_tenant()
    conversation = await new_conversation(state, tenant, ("ana",))
    await say(state, conversation.conversation_id, [DOG, REPLY], tenant)
    await indexed(ctx, tenant, 2)
    await eventually(lambda: ctx.domain.progress.backlog == 0, "an empty backlog")
    status = await ctx.stub().GetIndexStatus(
        cpb.GetIndexStatusRequest(), metadata=ctx.metadata(tenant)
    )
    assert status.indexed_turns == 2
    # The feed position spans every tenant: a tenant does not see it, the platform does.
    assert status.cursor == ""
    platform = await ctx.stub().GetIndexStatus(
        cpb.GetIndexStatusRequest(), metadata=ctx.metadata(tenant, "context.read state.feed")
    )
    assert platform.cursor == ctx.domain.progress.cursor != ""
    assert status.lag_events == 0
    assert status.lag_seconds == 0
    assert status.feed_connected
    current = await ctx.stub().Enrich(
        cpb.EnrichRequest(user_id="ana", text="the dog"), metadata=ctx.metadata(tenant)
    )
    assert current.items
    assert current.memory_lag_events == 0
    assert current.memory_lag_seconds == 0

    # state_svc tells a feed reader how much is left behind each response.
    watch = state.stub().Watch(
        spb.WatchRequest(max_batch=1, stop_at_end=True), metadata=state.metadata(tenant)
    )
    backlogs = [response.backlog async for response in watch]
    assert backlogs[0] >= 1
    assert backlogs[-1] == 0


async def test_empty_index_answers_empty(ctx: ContextHandle) -> None:
    reply = await ctx.enrich("anything at all", "nobody", fresh_tenant())
    assert not reply.items
    assert reply.context_block == ""
    assert not reply.partial


def test_embeddings_put_similar_sentences_close() -> None:
    model = shared_embedder(2)
    vectors = model.embed(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The stock market fell sharply today.",
        ]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    # all-MiniLM-L6-v2's published similarity of this pair is about 0.75.
    assert 0.7 < similar < 0.8
    assert unrelated < 0.2
