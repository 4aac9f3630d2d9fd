"""Embeds, in the background, the knowledge chunks an ingest stored without a vector.

IngestDocument embeds for at most CONTEXT_INGEST_SYNC_BUDGET_S and answers: a 512 KiB
document of distinct text is about 1,280 chunks at about 20 ms each on 2 cores, longer than
callers wait (they time out and retry, repeating the work). The chunks left over, a
document's "tail", are stored and found by keyword at once; this worker embeds them one
batch of distinct texts at a time, oldest document first, in document order, so a feed
batch or another ingest waits for one batch, not for a document.

A tail belongs to one ingested version of a document: ingesting the document again replaces
it, deleting the document drops it. The domain writes a vector only while the tail it was
taken from is still the document's (checked under its write lock), so a deleted or replaced
document never gets a chunk or a stale vector back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from voiceagent_backbone.context_svc.embedding import Vectors

log = logging.getLogger(__name__)

# Backoff after a failed embedding (a hosted backend down or over quota): retried, never
# dropped, since the chunk is stored and only its vector is missing.
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0


@dataclass(eq=False)
class DocumentTail:
    """The chunks of one ingested version of a document that have no vector yet."""

    tenant_id: str
    document_id: str
    ingested_at_us: int
    # The text to embed -> the indexes of the chunks with that text, in document order.
    texts: dict[str, list[int]]
    chunks: int = field(init=False)

    def __post_init__(self) -> None:
        self.chunks = sum(len(indexes) for indexes in self.texts.values())


# Vectors of texts of a tail (the domain: loaded from the shared vectors or computed).
EmbedTexts = Callable[[DocumentTail, list[str]], Awaitable[Vectors]]
# Stores the vectors of texts of a tail (the domain: under its write lock, if current).
StoreVectors = Callable[[DocumentTail, list[str], Vectors], Awaitable[None]]


class KnowledgeBackfill:
    """The tails of this replica's documents, and the task that works them off."""

    def __init__(self, embed: EmbedTexts, store: StoreVectors, batch: int) -> None:
        self._embed = embed
        self._store = store
        self._batch = batch
        # Insertion order is the work order: the oldest ingest first.
        self._tails: dict[tuple[str, str], DocumentTail] = {}
        self.total = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the queue (event loop only) -----------------------------------------------------

    def put(self, tail: DocumentTail) -> None:
        """The document's new version: its tail (possibly empty) replaces the old one's."""
        self.drop(tail.tenant_id, tail.document_id)
        if tail.texts:
            self._tails[(tail.tenant_id, tail.document_id)] = tail
            self.total += tail.chunks
            self._wake.set()

    def drop(self, tenant_id: str, document_id: str) -> None:
        old = self._tails.pop((tenant_id, document_id), None)
        if old is not None:
            self.total -= old.chunks

    def tail_of(self, tenant_id: str, document_id: str) -> DocumentTail | None:
        return self._tails.get((tenant_id, document_id))

    def is_current(self, tail: DocumentTail) -> bool:
        return self._tails.get((tail.tenant_id, tail.document_id)) is tail

    def done(self, tail: DocumentTail, texts: list[str]) -> None:
        """The chunks of `texts` have their vector (call only while `tail` is current)."""
        count = sum(len(tail.texts.pop(text)) for text in texts)
        tail.chunks -= count
        self.total -= count
        if not tail.texts:
            del self._tails[(tail.tenant_id, tail.document_id)]

    def pending_of(self, tenant_id: str, document_id: str, ingested_at_us: int) -> int:
        """Chunks of that version of the document without a vector."""
        tail = self._tails.get((tenant_id, document_id))
        return tail.chunks if tail is not None and tail.ingested_at_us == ingested_at_us else 0

    def count(self, tenant_id: str | None = None) -> int:
        if tenant_id is None:
            return self.total
        return sum(t.chunks for t in self._tails.values() if t.tenant_id == tenant_id)

    def _next(self) -> tuple[DocumentTail, list[str]] | None:
        for tail in self._tails.values():
            return tail, list(itertools.islice(tail.texts, self._batch))
        return None

    # -- the worker ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="knowledge-backfill")

    def stop(self) -> None:
        """Cancels the worker; what it has not stored is queued again at the next start."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        delay = RETRY_MIN_S
        while True:
            item = self._next()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            tail, texts = item
            try:
                vectors = await self._embed(tail, texts)
                await self._store(tail, texts, vectors)
            except Exception:
                log.exception(
                    "embedding stored knowledge chunks failed; retrying",
                    extra={"document_id": tail.document_id, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            else:
                delay = RETRY_MIN_S
