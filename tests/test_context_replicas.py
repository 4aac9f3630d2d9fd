"""Several context_svc replicas on one state_svc: each turn and passage is embedded once for
all of them (the vectors are shared through state_svc), a replica started later loads the
vectors instead of embedding, every replica gives the same answers, and knowledge and facts
written through one replica are found through every other."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.context import ContextHandle, context_settings, eventually, running_context
from tests.support.state import StateHandle, event, running_state, state_settings
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as spb
from voiceagent_backbone.context_svc.index import Source
from voiceagent_backbone.servicekit.client import create_channel

TENANT = "tenant-replicas"
USERS = ("ana", "ben", "cai", "dee")
# The figure: a replica started against 10,000 stored turns.
TURNS = 10_000
WORDS = (
    "river",
    "garden",
    "violin",
    "market",
    "winter",
    "ticket",
    "doctor",
    "pasta",
    "bicycle",
    "museum",
    "letter",
    "island",
    "concert",
    "harbour",
    "lantern",
    "orchard",
    "recipe",
    "passport",
    "tennis",
    "glacier",
    "poetry",
    "kitchen",
    "bakery",
    "compass",
    "meadow",
    "festival",
    "library",
    "theatre",
    "ferry",
    "camera",
    "pottery",
    "sailing",
)


@pytest.fixture
async def state(tmp_path: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    async with running_state(state_settings("sqlite", tmp_path, jwt_key, None), jwt_key) as h:
        yield h


async def store_turns(state: StateHandle, count: int) -> dict[str, list[str]]:
    """`count` distinct turns over conversations of USERS; returns user -> conversation ids."""
    rng = random.Random(7)
    conversations: dict[str, list[str]] = {u: [] for u in USERS}
    per_conversation = 100
    stub, md = state.stub(), state.metadata(TENANT)
    for start in range(0, count, per_conversation):
        user = USERS[(start // per_conversation) % len(USERS)]
        created = await stub.CreateConversation(
            spb.CreateConversationRequest(room_name=f"room-{start}", user_ids=[user]), metadata=md
        )
        cid = created.conversation.conversation_id
        conversations[user].append(cid)
        events = [
            event(
                text=f"turn {start + i}: " + " ".join(rng.sample(WORDS, 6)),
                role=spb.ROLE_USER if i % 2 == 0 else spb.ROLE_AGENT,
                event_type=spb.EVENT_TYPE_USER_MESSAGE
                if i % 2 == 0
                else spb.EVENT_TYPE_AGENT_MESSAGE,
            )
            for i in range(min(per_conversation, count - start))
        ]
        await stub.AppendEvents(
            spb.AppendEventsRequest(conversation_id=cid, events=events), metadata=md
        )
    return conversations


async def caught_up(handle: ContextHandle, turns: int) -> None:
    await eventually(
        lambda: (
            handle.domain.turns_by_tenant.get(TENANT, 0) == turns
            and handle.domain.progress.backlog == 0
        ),
        f"{turns} turns indexed",
        timeout_s=600,
    )


async def readiness(handle: ContextHandle) -> int:
    """What the chart's readiness probe reads: the health of context_svc's gRPC service."""
    reply = await health_pb2_grpc.HealthStub(handle.channel).Check(
        health_pb2.HealthCheckRequest(service="voiceagent.context.v1.ContextService"), timeout=5
    )
    return int(reply.status)


async def ready_now(handle: ContextHandle) -> bool:
    return await readiness(handle) == int(health_pb2.HealthCheckResponse.SERVING)


def answer(reply: cpb.EnrichResponse) -> list[tuple[str, float]]:
    return [(i.event_id, round(i.score, 6)) for i in reply.items]


@pytest.mark.timeout(900)
async def test_replicas_embed_each_turn_once_and_answer_alike(
    tmp_path: Path, jwt_key: str, state: StateHandle
) -> None:
    conversations = await store_turns(state, TURNS)
    settings = [context_settings(tmp_path / f"replica{i}", jwt_key, state.port) for i in range(3)]
    for s in settings:
        s.index_path.parent.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        a, b = [await stack.enter_async_context(running_context(s, jwt_key)) for s in settings[:2]]
        await asyncio.gather(caught_up(a, TURNS), caught_up(b, TURNS))
        embedded = a.domain.embedded_for_index + b.domain.embedded_for_index
        assert embedded == TURNS, f"{embedded / TURNS:.2f} embeddings per stored turn"

        # A third replica, started when everything is stored: it loads, it does not embed,
        # and it is not ready (readiness probe) until it has caught up.
        c = await stack.enter_async_context(running_context(settings[2], jwt_key))
        assert await readiness(c) == health_pb2.HealthCheckResponse.NOT_SERVING
        await caught_up(c, TURNS)
        assert c.domain.embedded_for_index == 0
        await eventually_async(
            lambda: ready_now(c), "replica c ready once it caught up with the feed"
        )

        # Behind one channel, round robin: every replica gives the same answer.
        target = "ipv4:" + ",".join(f"127.0.0.1:{h.port}" for h in (a, b, c))
        async with create_channel(target) as channel:
            stub = context_pb2_grpc.ContextServiceStub(channel)  # type: ignore[no-untyped-call]
            for query in ("violin concert in winter", "passport at the harbour", "bakery recipe"):
                request = cpb.EnrichRequest(user_id="ana", text=query, max_items=8)
                answers = {
                    tuple(answer(await stub.Enrich(request, metadata=a.metadata(TENANT))))
                    for _ in range(6)
                }
                assert len(answers) == 1, f"replicas disagree on {query!r}"
                assert next(iter(answers)), "no memory found"

        # Deleting a user removes their vectors from state_svc and their memory everywhere.
        await state.stub().DeleteUserData(
            spb.DeleteUserDataRequest(user_id="ana"), metadata=state.metadata(TENANT)
        )
        remaining = TURNS - sum(100 for _ in conversations["ana"])
        await asyncio.gather(*(caught_up(h, remaining) for h in (a, b, c)))
        for h in (a, b, c):
            reply = await h.stub().Enrich(
                cpb.EnrichRequest(user_id="ana", text="violin concert"), metadata=h.metadata(TENANT)
            )
            assert not reply.items
        listed = 0
        async for page in state.stub().ListEmbeddings(
            spb.ListEmbeddingsRequest(model=a.domain.embedder.name, page_size=1000),
            metadata=state.metadata(TENANT, "state.index"),
        ):
            listed += len(page.embeddings)
            assert all(e.key.owner_id not in conversations["ana"] for e in page.embeddings)
        assert listed == remaining


HANDBOOK = (
    "Parking. Staff park on level minus one; visitors get a ticket at the front desk.\n\n"
    "Lost badges. A lost staff badge is replaced at the security desk on level minus two, "
    "for a fee of fifteen euros, on weekdays between nine and eleven.\n\n"
    "Canteen. Lunch is served from noon to two; the vegetarian dish changes every day."
)
HANDBOOK_V2 = (
    "Bicycles. Bicycles are parked in the courtyard shed, which opens with the staff badge.\n\n"
    + HANDBOOK.split("\n\n", 1)[1]
)


async def knowledge_of(handle: ContextHandle, text: str, user: str = "ana") -> list[str]:
    reply = await handle.stub().Enrich(
        cpb.EnrichRequest(user_id=user, text=text, max_items=3), metadata=handle.metadata(TENANT)
    )
    return [i.text for i in reply.items]


def has_document(handle: ContextHandle, version_text: str) -> bool:
    partition = handle.domain.index.partitions.get((TENANT, Source.KNOWLEDGE, ""))
    entries = partition.entries if partition is not None else []
    return any(e is not None and version_text in e.text for e in entries)


@pytest.mark.timeout(300)
async def test_knowledge_and_facts_written_through_one_replica_are_everywhere(
    tmp_path: Path, jwt_key: str, state: StateHandle
) -> None:
    settings = [context_settings(tmp_path / f"replica{i}", jwt_key, state.port) for i in range(3)]
    for s in settings:
        s.index_path.parent.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        a, b = [await stack.enter_async_context(running_context(s, jwt_key)) for s in settings[:2]]
        md = a.metadata(TENANT)
        ingested = await a.stub().IngestDocument(
            cpb.IngestDocumentRequest(
                document=cpb.Document(document_id="handbook", title="Staff handbook", text=HANDBOOK)
            ),
            metadata=md,
        )
        chunks = ingested.document.chunk_count
        assert ingested.document.embedded_chunks == chunks
        await a.stub().UpsertFacts(
            cpb.UpsertFactsRequest(
                user_id="ana", facts=[cpb.Fact(fact_id="diet", text="Ana is vegetarian.")]
            ),
            metadata=md,
        )

        # Found through the other replica, by meaning, which it loaded instead of embedding.
        async def b_has_everything() -> bool:
            found = await b.stub().GetDocument(
                cpb.GetDocumentRequest(document_id="handbook"), metadata=md
            )
            return (
                found.document.embedded_chunks == chunks
                and b.domain.index.count(Source.FACT, TENANT) == 1
            )

        await eventually_async(b_has_everything, "the document and the fact on replica b")
        assert "security desk" in (await knowledge_of(b, "I lost my badge, where do I go?"))[0]
        assert "Ana is vegetarian." in await knowledge_of(b, "is Ana a vegetarian?")
        assert b.domain.embedded_for_index == 0
        listed = await b.stub().ListFacts(cpb.ListFactsRequest(user_id="ana"), metadata=md)
        assert [f.text for f in listed.facts] == ["Ana is vegetarian."]

        # A new version through b replaces the old one on a.
        await b.stub().IngestDocument(
            cpb.IngestDocumentRequest(
                document=cpb.Document(
                    document_id="handbook", title="Staff handbook", text=HANDBOOK_V2
                )
            ),
            metadata=md,
        )
        await eventually(
            lambda: has_document(a, "courtyard shed") and not has_document(a, "level minus one"),
            "the new version on replica a",
        )

        # Thrown away: a replica whose index file is gone rebuilds knowledge and facts from
        # state_svc and embeds nothing.
        c = await stack.enter_async_context(running_context(settings[2], jwt_key))
        await eventually(
            lambda: (
                has_document(c, "courtyard shed") and c.domain.index.count(Source.FACT, TENANT) == 1
            ),
            "knowledge and facts on the new replica c",
        )
        assert "courtyard shed" in (await knowledge_of(c, "where can I leave my bike?"))[0]

        # Deleted through one replica: gone from every replica and from state_svc.
        await c.stub().DeleteDocument(
            cpb.DeleteDocumentRequest(document_id="handbook"), metadata=md
        )
        await state.stub().DeleteUserData(
            spb.DeleteUserDataRequest(user_id="ana"), metadata=state.metadata(TENANT)
        )

        def nothing_left() -> bool:
            return all(
                h.domain.index.count(Source.KNOWLEDGE, TENANT) == 0
                and h.domain.index.count(Source.FACT, TENANT) == 0
                for h in (a, b, c)
            )

        await eventually(nothing_left, "knowledge and facts deleted on every replica")
        assert c.domain.embedded_for_index == 0
        async for page in state.stub().ListEmbeddings(
            spb.ListEmbeddingsRequest(model=a.domain.embedder.name, page_size=1000),
            metadata=state.metadata(TENANT, "state.index"),
        ):
            assert not [e for e in page.embeddings if e.key.owner == spb.EMBEDDING_OWNER_DOCUMENT]


async def eventually_async(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
