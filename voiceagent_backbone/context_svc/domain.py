"""context_svc's domain: indexing feed changes, knowledge and facts; ranking for Enrich.

No protobuf here: the wire module converts at the edges (requests, replies, the feed).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from voiceagent_backbone.context_svc import metrics
from voiceagent_backbone.context_svc.backfill import DocumentTail
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.embedding import Embedder, EmbeddingError, Vectors
from voiceagent_backbone.context_svc.index import Entry, Index, PartitionKey, Source
from voiceagent_backbone.context_svc.knowledge import KnowledgeBase, chunk_embed_text
from voiceagent_backbone.context_svc.lexical import analyze
from voiceagent_backbone.context_svc.model import (
    AddTurn,
    Chunk,
    DeletionEvent,
    DropConversations,
    EnrichQuery,
    EnrichResult,
    Fact,
    FeedItem,
    FeedOp,
    IndexStatus,
    KnowledgeChanged,
    Turn,
    TurnEvent,
)
from voiceagent_backbone.context_svc.render import date_label, render
from voiceagent_backbone.context_svc.shared_vectors import SharedVectors, VectorKey
from voiceagent_backbone.context_svc.store import IndexStore
from voiceagent_backbone.servicekit.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

EMBED_BATCH = 16
# Transcriptions whose vectors are kept for the message that replaces them.
_TRANSCRIBED_KEPT = 4096
_WORDS = re.compile(r"\w+")
# Time kept back from the caller's deadline for ranking, rendering and the reply's way
# back (the caller's clock started before the request reached us): 5 ms plus 5 %.
DEADLINE_RESERVE_S = 0.005
DEADLINE_RESERVE_SHARE = 0.05
# A memory partition for turns of conversations without a user id: "~<conversation id>".
ANONYMOUS = "~"


def utcnow_us() -> int:
    return int(time.time() * 1_000_000)


@dataclass
class FeedProgress:
    """How far this replica has followed state_svc's feed, and whether it is failing."""

    cursor: str = ""
    backlog: int = 0
    # Server time of the oldest change received but not yet applied (None: none pending).
    pending_since_us: int | None = None
    applied_changes: int = 0
    connected: bool = False
    # Set once everything stored when this replica started was applied (readiness).
    current: asyncio.Event = field(default_factory=asyncio.Event)
    # While the feed fails: when it started failing, and the last failure's status code.
    failing_since_us: int | None = None
    error: str = ""

    def failed(self, error: str) -> None:
        self.connected = False
        self.error = error
        if self.failing_since_us is None:
            self.failing_since_us = utcnow_us()

    def answered(self) -> None:
        self.connected = True
        self.error = ""
        self.failing_since_us = None

    def caught_up(self) -> None:
        """Everything stored was applied once: the replica is ready to answer."""
        self.current.set()


@dataclass
class _Executors:
    # Separate threads so a bulk indexing batch never queues in front of a user's query.
    query: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="embed-query")
    )
    index: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="embed-index")
    )

    def shutdown(self) -> None:
        self.query.shutdown(wait=False, cancel_futures=True)
        self.index.shutdown(wait=True, cancel_futures=True)


def memory_owners(conversation_id: str, user_ids: Sequence[str]) -> list[str]:
    return list(user_ids) if user_ids else [ANONYMOUS + conversation_id]


class ContextDomain:
    def __init__(
        self,
        settings: ContextSettings,
        store: IndexStore,
        embedder: Embedder,
        query_embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        # Enrich's: the same model (its name and dimension are checked), its own threads.
        self.query_embedder = query_embedder or embedder
        if (self.query_embedder.name, self.query_embedder.dim) != (embedder.name, embedder.dim):
            raise ValueError("the query embedder must be the index embedder's model")
        self.index = Index(embedder.dim)
        self.progress = FeedProgress()
        self.turn_count = 0
        # Texts this domain embedded for the index (restarts must not re-embed).
        self.embedded_for_index = 0
        self.turns_by_tenant: collections.Counter[str] = collections.Counter()
        # Vectors of recent final transcriptions, by the text they were embedded from: the
        # message that replaces a transcription moments later (the same words, the same
        # speaker) takes its vector instead of being embedded again. Bounded; after a
        # restart such a message is embedded once more.
        self._transcribed: collections.OrderedDict[str, Vectors] = collections.OrderedDict()
        # Set by the feed follower when state_svc shares turn vectors between replicas.
        self.shared_vectors: SharedVectors | None = None
        self._executors = _Executors()
        # Feed batches and knowledge writes change the index one at a time.
        self.write_lock = asyncio.Lock()
        self.knowledge = KnowledgeBase(self)

    # -- start-up ------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuilds the in-memory index from the store; re-embeds only after a model change."""
        started = time.perf_counter()
        model = await self.store.get_meta("embedding_model")
        turns = await self.store.load_turns()
        chunks = await self.store.load_chunks()
        facts = await self.store.load_facts()
        if model is not None and model != self.embedder.name:
            log.warning(
                "embedding model changed: re-embedding stored items",
                extra={"from": model, "to": self.embedder.name},
            )
            turns, chunks, facts = await self._reembed(turns, chunks, facts)
        await self.store.set_meta("embedding_model", self.embedder.name)
        for turn in turns:
            self._index_turn(turn)
            self.turns_by_tenant[turn.tenant_id] += 1
        self.turn_count = len(turns)
        for chunk in chunks:
            self.index_chunk(chunk)
        # Chunks stored before they were embedded (the replica stopped first) are queued
        # again: an ingest interrupted by a restart finishes after it.
        for tail in _tails_of(chunks):
            self.knowledge.backfill.put(tail)
        for fact in facts:
            self.index_fact(fact)
        self.progress.cursor = await self.store.get_meta("cursor") or ""
        self.update_gauges()
        self.knowledge.backfill.start()
        log.info(
            "index loaded",
            extra={
                "turns": len(turns),
                "chunks": len(chunks),
                "pending_chunks": self.knowledge.backfill.total,
                "facts": len(facts),
                "cursor": self.progress.cursor,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )

    async def _reembed(
        self, turns: list[Turn], chunks: list[Chunk], facts: list[Fact]
    ) -> tuple[list[Turn], list[Chunk], list[Fact]]:
        # Chunks not embedded yet stay so: the background embedding uses the new model.
        embedded = [c for c in chunks if c.vector is not None]
        tv = await self.embed_for_index([t.embed_text for t in turns])
        cv = await self.embed_for_index([chunk_embed_text(c.title, c.text) for c in embedded])
        fv = await self.embed_for_index([f.text for f in facts])
        await self.store.replace_vectors("turns", [(t.tenant_id, t.event_id) for t in turns], tv)
        await self.store.replace_vectors(
            "chunks", [(c.tenant_id, c.document_id, str(c.chunk_index)) for c in embedded], cv
        )
        await self.store.replace_vectors(
            "facts", [(f.tenant_id, f.user_id, f.fact_id) for f in facts], fv
        )
        vector_of = {
            (c.tenant_id, c.document_id, c.chunk_index): v
            for c, v in zip(embedded, cv, strict=True)
        }
        return (
            [dataclasses.replace(t, vector=v) for t, v in zip(turns, tv, strict=True)],
            [
                dataclasses.replace(
                    c, vector=vector_of.get((c.tenant_id, c.document_id, c.chunk_index))
                )
                for c in chunks
            ],
            [dataclasses.replace(f, vector=v) for f, v in zip(facts, fv, strict=True)],
        )

    def close(self) -> None:
        self.knowledge.backfill.stop()
        self._executors.shutdown()

    # -- embedding -----------------------------------------------------------------------

    async def embed_for_index(self, texts: Sequence[str]) -> Vectors:
        """Embeds each distinct text once. Embedding is nearly all of an ingest's time (about
        20 ms per 90-word chunk on 2 cores), and documents repeat text: boilerplate, or a
        paragraph repeated up to the size limit (512 KiB of lorem ipsum makes 1,057 chunks,
        2 of them distinct)."""
        distinct = list(dict.fromkeys(texts))
        vectors = await self._embed_in_batches(distinct)
        metrics.EMBEDDINGS.labels(path="index").inc(len(distinct))
        self.embedded_for_index += len(distinct)
        if len(distinct) == len(texts):
            return vectors
        row_of = {text: row for row, text in enumerate(distinct)}
        return vectors[[row_of[text] for text in texts]]

    async def _turn_vectors(self, turns: Sequence[TurnEvent]) -> Vectors:
        """One vector per turn; a message reuses the vector of the transcription it
        replaces when their texts are the same (each spoken turn is embedded once)."""
        texts = [f"[{date_label(t.occurred_at_us)}] {t.speaker}: {t.text}" for t in turns]
        # The committed message may differ from the transcript in case and punctuation
        # only; the model reads neither case nor much punctuation.
        keys = [" ".join(_WORDS.findall(text.lower())) for text in texts]
        vectors = np.zeros((len(turns), self.embedder.dim), dtype=np.float32)
        missing: list[int] = []
        reused_rows: list[int] = []
        for row, turn in enumerate(turns):
            reused = self._transcribed.pop(keys[row], None) if turn.kind == "message" else None
            if reused is None:
                missing.append(row)
            else:
                vectors[row] = reused
                reused_rows.append(row)
        shared = self.shared_vectors
        if missing and shared is not None:
            vectors[missing] = await shared.vectors(
                [_turn_key(turns[row]) for row in missing],
                [texts[row] for row in missing],
                self.embed_for_index,
            )
        elif missing:
            vectors[missing] = await self.embed_for_index([texts[row] for row in missing])
        if reused_rows and shared is not None:
            await shared.put([_turn_key(turns[row]) for row in reused_rows], vectors[reused_rows])
        for row, turn in enumerate(turns):
            if turn.kind == "transcription":
                self._transcribed[keys[row]] = vectors[row]
                while len(self._transcribed) > _TRANSCRIBED_KEPT:
                    self._transcribed.popitem(last=False)
        return vectors

    async def on_index_thread(self, work: Callable[[], T]) -> T:
        """Runs CPU-bound Python (chunking, analysis: a few hundred ms for 512 KiB) on the
        indexing thread: the event loop gets the interpreter back every few milliseconds
        and keeps answering Enrich and health checks meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._executors.index, work)

    async def _embed_in_batches(self, texts: Sequence[str]) -> Vectors:
        """Small batches of similar length: a batch is padded to its longest text, and
        padding costs as much as text (measured: batches of 32 in arrival order took 26 ms
        per turn, sorted by length 14 ms, one by one 14 ms). Each batch is its own task on
        the indexing thread, so a feed batch waits for one batch of a document, not all."""
        out = np.zeros((len(texts), self.embedder.dim), np.float32)
        loop = asyncio.get_running_loop()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), EMBED_BATCH):
            rows = order[start : start + EMBED_BATCH]
            try:
                out[rows] = await loop.run_in_executor(
                    self._executors.index, self.embedder.embed, [texts[i] for i in rows]
                )
            except EmbeddingError as exc:
                metrics.EMBEDDING_ERRORS.inc()
                raise Unavailable(f"the embedding backend failed: {exc}") from exc
        return out

    # -- indexing ------------------------------------------------------------------------

    def _index_turn(self, turn: Turn) -> None:
        entry = Entry(
            key=turn.event_id,
            source=Source.MEMORY,
            text=turn.text,
            occurred_at_us=turn.occurred_at_us,
            conversation_id=turn.conversation_id,
            event_id=turn.event_id,
            seq=turn.seq,
            speaker=turn.speaker,
        )
        for owner in turn.owners:
            self.index.add((turn.tenant_id, Source.MEMORY, owner), entry, turn.terms, turn.vector)

    def index_chunk(self, chunk: Chunk) -> None:
        entry = Entry(
            key=f"{chunk.document_id}#{chunk.chunk_index}",
            source=Source.KNOWLEDGE,
            text=chunk.text,
            occurred_at_us=chunk.ingested_at_us,
            document_id=chunk.document_id,
            title=chunk.title,
            chunk_index=chunk.chunk_index,
        )
        self.index.add((chunk.tenant_id, Source.KNOWLEDGE, ""), entry, chunk.terms, chunk.vector)

    def index_fact(self, fact: Fact) -> None:
        entry = Entry(
            key=fact.fact_id,
            source=Source.FACT,
            text=fact.text,
            occurred_at_us=fact.updated_at_us,
            fact_id=fact.fact_id,
        )
        self.index.add((fact.tenant_id, Source.FACT, fact.user_id), entry, fact.terms, fact.vector)

    async def apply_feed(self, items: list[FeedItem], cursor: str) -> None:
        """Applies one batch of feed changes and stores the cursor after it, atomically."""
        async with self.write_lock:
            # Knowledge first: its writes are idempotent, so a crash before the cursor
            # below is stored only repeats them.
            changed = [i for i in items if isinstance(i, KnowledgeChanged)]
            if changed:
                await self.knowledge.apply_changes(changed)
            turns = [i for i in items if isinstance(i, TurnEvent)]
            vectors = await self._turn_vectors(turns)
            previous: dict[tuple[str, str], str] = {}
            ops: list[FeedOp] = []
            vector_of = {t.event_id: v for t, v in zip(turns, vectors, strict=True)}
            for item in items:
                if isinstance(item, DeletionEvent):
                    ops.append(
                        DropConversations(item.tenant_id, item.conversation_ids, item.user_id)
                    )
                    for conversation_id in item.conversation_ids:
                        previous.pop((item.tenant_id, conversation_id), None)
                    continue
                if not isinstance(item, TurnEvent):
                    continue
                key = (item.tenant_id, item.conversation_id)
                if key not in previous:
                    previous[key] = await self.store.previous_turn_text(
                        item.tenant_id, item.conversation_id, item.seq
                    )
                date = date_label(item.occurred_at_us)
                # The lexical text adds the turn before (answers often continue a question)
                # and the date (questions ask "when").
                terms = analyze(f"{date} {previous[key]} {item.speaker}: {item.text}")
                previous[key] = item.text
                ops.append(
                    AddTurn(
                        Turn(
                            tenant_id=item.tenant_id,
                            event_id=item.event_id,
                            conversation_id=item.conversation_id,
                            seq=item.seq,
                            kind=item.kind,
                            role=item.role,
                            speaker=item.speaker,
                            text=item.text,
                            embed_text=f"[{date}] {item.speaker}: {item.text}",
                            terms=terms,
                            occurred_at_us=item.occurred_at_us,
                            owners=memory_owners(item.conversation_id, item.user_ids),
                            vector=vector_of[item.event_id],
                        )
                    )
                )
            result = await self.store.apply_feed_batch(ops, cursor)
            for removed in result.removed:
                for owner in removed.owners:
                    self.index.remove((removed.tenant_id, Source.MEMORY, owner), removed.event_id)
            for turn in result.added:
                self._index_turn(turn)
                self.turns_by_tenant[turn.tenant_id] += 1
            for removed in result.removed:
                self.turns_by_tenant[removed.tenant_id] -= 1
            self.turn_count += len(result.added) - len(result.removed)
            for tenant_id, user_id, fact_id in result.removed_facts:
                self.index.remove((tenant_id, Source.FACT, user_id), fact_id)
            self.progress.cursor = cursor
            metrics.FEED_APPLIED.labels(change="turn").inc(len(result.added))
            metrics.FEED_APPLIED.labels(change="removed_turn").inc(len(result.removed))
            self.update_gauges()

    def update_gauges(self) -> None:
        metrics.INDEXED_TURNS.set(self.turn_count)
        metrics.KNOWLEDGE_PENDING_CHUNKS.set(self.knowledge.backfill.total)
        for source in Source:
            metrics.INDEX_ENTRIES.labels(source=source.value).set(self.index.count(source))
        metrics.INDEX_BYTES.set(self.index.nbytes())

    # -- Enrich --------------------------------------------------------------------------

    def partitions_for(
        self, tenant_id: str, user_id: str, conversation_id: str, sources: frozenset[Source]
    ) -> list[PartitionKey]:
        keys: list[PartitionKey] = []
        if Source.MEMORY in sources:
            if user_id:
                keys.append((tenant_id, Source.MEMORY, user_id))
            if conversation_id:
                keys.append((tenant_id, Source.MEMORY, ANONYMOUS + conversation_id))
        if Source.KNOWLEDGE in sources:
            keys.append((tenant_id, Source.KNOWLEDGE, ""))
        if Source.FACT in sources and user_id:
            keys.append((tenant_id, Source.FACT, user_id))
        return keys

    async def enrich(
        self, tenant_id: str, query: EnrichQuery, time_left_s: float | None
    ) -> EnrichResult:
        """Ranks context for a turn. With `time_left_s` too short for the embedding, the
        lexical ranking alone is returned and marked partial: late answers are useless to a
        voice agent, which has already moved on. Items less relevant than the setting
        `min_relevance` are left out: a turn nothing answers gets no context at all."""
        loop = asyncio.get_running_loop()
        budget = (
            self.settings.enrich_max_s
            if time_left_s is None
            else min(time_left_s, self.settings.enrich_max_s)
        )
        deadline = loop.time() + budget * (1 - DEADLINE_RESERVE_SHARE) - DEADLINE_RESERVE_S
        keys = [
            k
            for k in self.partitions_for(
                tenant_id, query.user_id, query.conversation_id, query.sources
            )
            if k in self.index.partitions
        ]
        lag_events, lag_seconds = self.lag()
        if not keys or not query.text.strip():
            return EnrichResult([], "", 0, False, lag_events, lag_seconds)
        terms = analyze(query.text)
        partial = False
        query_vector: np.ndarray[Any, np.dtype[np.float32]] | None = None
        remaining = deadline - loop.time()
        if remaining > 0:
            future = loop.run_in_executor(
                self._executors.query, self.query_embedder.embed, [query.text]
            )
            try:
                vectors = await asyncio.wait_for(asyncio.shield(future), remaining)
                query_vector = vectors[0]
                metrics.EMBEDDINGS.labels(path="query").inc()
            except TimeoutError:
                partial = True
            except EmbeddingError:
                # Fail open: the lexical ranking still answers.
                log.warning(
                    "query embedding failed; answering from the lexical ranking", exc_info=True
                )
                metrics.EMBEDDING_ERRORS.inc()
                partial = True
        else:
            partial = True
        if partial:
            metrics.ENRICH_PARTIAL.inc()
        hits = self.index.search(
            keys,
            terms,
            query_vector,
            query.max_items,
            self.settings.lexical_weight,
            self.settings.min_relevance,
        )
        block, tokens, kept = render(hits, query.token_budget)
        return EnrichResult(kept, block, tokens, partial, lag_events, lag_seconds)

    # -- status --------------------------------------------------------------------------

    def lag(self) -> tuple[int, float]:
        """Changes received and not applied, and the seconds since the oldest moment
        something may have been waiting: such a change, or the first failure of a feed that
        is failing now."""
        progress = self.progress
        since = [t for t in (progress.pending_since_us, progress.failing_since_us) if t]
        lag_seconds = max(0.0, (utcnow_us() - min(since)) / 1e6) if since else 0.0
        return progress.backlog, lag_seconds

    def status(self, tenant_id: str | None = None) -> IndexStatus:
        """Feed progress is the replica's; counts are the tenant's (all when None)."""
        progress = self.progress
        lag_events, lag_seconds = self.lag()
        return IndexStatus(
            cursor=progress.cursor,
            indexed_turns=(
                self.turn_count if tenant_id is None else self.turns_by_tenant.get(tenant_id, 0)
            ),
            lag_events=lag_events,
            lag_seconds=lag_seconds,
            knowledge_chunks=self.index.count(Source.KNOWLEDGE, tenant_id),
            facts=self.index.count(Source.FACT, tenant_id),
            feed_connected=progress.connected,
            feed_error=progress.error,
            pending_chunks=self.knowledge.backfill.count(tenant_id),
        )


def _turn_key(turn: TurnEvent) -> VectorKey:
    return VectorKey.turn(turn.tenant_id, turn.conversation_id, turn.event_id)


def _tails_of(chunks: Sequence[Chunk]) -> list[DocumentTail]:
    """The stored chunks without a vector, as one tail per document, in stored order."""
    pending: dict[tuple[str, str, int], dict[str, list[int]]] = {}
    for c in chunks:
        if c.vector is None:
            texts = pending.setdefault((c.tenant_id, c.document_id, c.ingested_at_us), {})
            texts.setdefault(chunk_embed_text(c.title, c.text), []).append(c.chunk_index)
    return [DocumentTail(t, d, at, texts) for (t, d, at), texts in pending.items()]
