"""Knowledge documents and facts: written to state_svc, indexed by every replica.

A write (IngestDocument, UpsertFacts, DeleteDocument, DeleteFact) goes to state_svc first,
then to this replica's index, so its caller reads its own write from this replica at once.
state_svc announces it on its feed; every replica (this one too) then fetches the current
version and indexes it unless it has it already (the version is state_svc's stored_at).
Fetching the current state, not replaying the change, makes applying a change idempotent
and independent of how many changes were missed: a deleted document or fact is simply not
found.

A passage's vector is computed once for the deployment, through state_svc's shared
embeddings (the passage's digest is its key): the ingesting replica computes what it can
within the sync budget; the rest, and every passage another replica indexes, goes through
the background embedding, which loads stored vectors, computes unclaimed ones and waits for
claimed ones. A fact's vector is computed by the replica that writes it and stored with the
fact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from voiceagent_backbone.context_svc import metrics
from voiceagent_backbone.context_svc.backfill import DocumentTail, KnowledgeBackfill
from voiceagent_backbone.context_svc.chunking import chunk_text
from voiceagent_backbone.context_svc.embedding import Vectors
from voiceagent_backbone.context_svc.index import Source
from voiceagent_backbone.context_svc.lexical import analyze
from voiceagent_backbone.context_svc.model import (
    Chunk,
    Document,
    DocumentStatus,
    Fact,
    KnowledgeChanged,
    NewDocument,
    NewFact,
    StoredDocument,
    StoredFact,
)
from voiceagent_backbone.context_svc.records import KnowledgeRecords
from voiceagent_backbone.context_svc.shared_vectors import VectorKey
from voiceagent_backbone.servicekit.errors import InvalidArgument, NotFound, Unavailable

if TYPE_CHECKING:
    from voiceagent_backbone.context_svc.domain import ContextDomain

EMBED_BATCH = 16


def chunk_embed_text(title: str, text: str) -> str:
    """What a knowledge chunk's vector is computed from: the title gives a passage its
    topic when the passage itself does not name it."""
    return f"{title}: {text}" if title else text


class KnowledgeBase:
    """The documents and facts part of a replica's domain (it shares the domain's index,
    store, write lock and embedding)."""

    def __init__(self, domain: ContextDomain) -> None:
        self._domain = domain
        # Set when the service starts (state_svc's client); None in a domain without one.
        self.records: KnowledgeRecords | None = None
        self.backfill = KnowledgeBackfill(
            self._embed_tail, self._store_chunk_vectors, batch=EMBED_BATCH
        )

    def _records(self) -> KnowledgeRecords:
        if self.records is None:
            raise Unavailable("no state_svc is configured to keep knowledge and facts")
        return self.records

    # -- documents -----------------------------------------------------------------------

    async def ingest_document(self, tenant_id: str, new: NewDocument) -> DocumentStatus:
        """Stores the document in state_svc, then indexes every chunk, searchable by
        keyword, embedding chunks for at most the sync budget (from the call's start); the
        rest are left to the background embedding. A small document is fully indexed when
        this returns."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._domain.settings.ingest_sync_budget_s
        # Chunked first: a document over the chunk limit is refused before it is stored.
        pieces = await self._chunks_of(new.text)
        stored = await self._records().put_document(tenant_id, new)
        embed_texts = [chunk_embed_text(new.title, p) for p in pieces]
        vectors = await self._embed_until(tenant_id, new.document_id, embed_texts, deadline)
        document, chunks, pending = await self._version(stored, pieces, vectors)
        async with self._domain.write_lock:
            await self._write_document(document, chunks, pending)
        return self._status_of(document)

    async def _version(
        self, stored: StoredDocument, pieces: list[str], vectors: dict[str, Vectors]
    ) -> tuple[Document, list[Chunk], dict[str, list[int]]]:
        """A stored version of a document as the index keeps it: the document, its chunks
        (with the vectors of `vectors`, by embedded text), and the chunks still to embed."""
        tenant_id, document_id, title = stored.tenant_id, stored.document_id, stored.title
        terms = await self._domain.on_index_thread(
            lambda: [analyze(f"{title} {p}") for p in pieces]
        )
        at = stored.stored_at_us
        document = stored.indexed_as(len(pieces))
        chunks: list[Chunk] = []
        pending: dict[str, list[int]] = {}
        for i, (piece, piece_terms) in enumerate(zip(pieces, terms, strict=True)):
            embed_text = chunk_embed_text(title, piece)
            vector = vectors.get(embed_text)
            chunks.append(Chunk(tenant_id, document_id, title, i, piece, piece_terms, at, vector))
            if vector is None:
                pending.setdefault(embed_text, []).append(i)
        return document, chunks, pending

    async def _write_document(
        self, document: Document, chunks: list[Chunk], pending: dict[str, list[int]]
    ) -> None:
        """Replaces the indexed version of the document (call under the write lock)."""
        domain = self._domain
        tenant_id, document_id = document.tenant_id, document.document_id
        indexed = await domain.store.document_versions(tenant_id, [document_id])
        version = indexed[document_id][0] if document_id in indexed else None
        if version is not None and version > document.ingested_at_us:
            return  # a newer version is indexed already
        if version == document.ingested_at_us:
            # This version came through the feed first (found by keyword, queued for the
            # background embedding): the vectors the ingest computed meanwhile are its.
            await self._fill_vectors(tenant_id, document_id, document.ingested_at_us, chunks)
            return
        old_count = await domain.store.replace_document(document, chunks)
        for i in range(old_count):
            domain.index.remove((tenant_id, Source.KNOWLEDGE, ""), f"{document_id}#{i}")
        for chunk in chunks:
            domain.index_chunk(chunk)
        # Replaces the previous version's tail, whose texts are then never embedded.
        self.backfill.put(DocumentTail(tenant_id, document_id, document.ingested_at_us, pending))
        domain.update_gauges()

    async def _unindex_document(self, tenant_id: str, document_id: str) -> bool:
        """Drops the document from this replica's index (call under the write lock)."""
        domain = self._domain
        count = await domain.store.delete_document(tenant_id, document_id)
        if count is None:
            return False
        for i in range(count):
            domain.index.remove((tenant_id, Source.KNOWLEDGE, ""), f"{document_id}#{i}")
        self.backfill.drop(tenant_id, document_id)
        domain.update_gauges()
        return True

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        deleted = await self._records().delete_document(tenant_id, document_id)
        async with self._domain.write_lock:
            await self._unindex_document(tenant_id, document_id)
        return deleted

    async def list_documents(
        self, tenant_id: str, page_token: str, page_size: int
    ) -> tuple[list[DocumentStatus], str]:
        """A page of the tenant's documents (without text), with this replica's chunk
        counts, and the next page's token."""
        stored, next_token = await self._records().list_documents(tenant_id, page_token, page_size)
        indexed = await self._domain.store.document_versions(
            tenant_id, [d.document_id for d in stored]
        )
        return [self._status_of_stored(d, indexed.get(d.document_id)) for d in stored], next_token

    async def get_document(self, tenant_id: str, document_id: str) -> DocumentStatus | None:
        stored = await self._records().get_document(tenant_id, document_id)
        if stored is None:
            return None
        indexed = await self._domain.store.document_versions(tenant_id, [document_id])
        return self._status_of_stored(stored, indexed.get(document_id))

    def _status_of_stored(
        self, stored: StoredDocument, indexed: tuple[int, int] | None
    ) -> DocumentStatus:
        """The chunk counts are this replica's: 0 while it has not indexed the version."""
        chunks = indexed[1] if indexed is not None and indexed[0] == stored.stored_at_us else 0
        document = stored.indexed_as(chunks)
        return self._status_of(document) if chunks else DocumentStatus(document, 0)

    def _status_of(self, document: Document) -> DocumentStatus:
        pending = self.backfill.pending_of(
            document.tenant_id, document.document_id, document.ingested_at_us
        )
        return DocumentStatus(document, document.chunk_count - pending)

    async def _chunks_of(self, text: str, limit: bool = True) -> list[str]:
        """The document's chunks; over the chunk limit it is refused (`limit`: a stored
        document is indexed whatever this replica's limit)."""
        settings = self._domain.settings
        pieces = await self._domain.on_index_thread(lambda: chunk_text(text, settings.chunk_words))
        if limit and len(pieces) > settings.max_chunks_per_document:
            raise InvalidArgument.single(
                "document.text",
                f"makes {len(pieces)} chunks, more than the limit of "
                f"{settings.max_chunks_per_document}",
            )
        return pieces

    # -- passage vectors -------------------------------------------------------------------

    async def _passage_vectors(
        self, tenant_id: str, document_id: str, texts: Sequence[str]
    ) -> Vectors:
        shared = self._domain.shared_vectors
        if shared is None:
            return await self._domain.embed_for_index(texts)
        keys = [VectorKey.passage(tenant_id, document_id, t) for t in texts]
        return await shared.vectors(keys, texts, self._domain.embed_for_index)

    async def _embed_until(
        self, tenant_id: str, document_id: str, texts: Sequence[str], deadline: float
    ) -> dict[str, Vectors]:
        """Embeds the distinct texts in order, a batch at a time, until the loop's clock
        passes `deadline` (so at most one batch after it); returns the vectors of those it
        embedded. Batches of 16 chunks took 11 % less CPU per chunk than one at a time
        (measured on 2 busy cores)."""
        loop = asyncio.get_running_loop()
        distinct = list(dict.fromkeys(texts))
        vectors: dict[str, Vectors] = {}
        for start in range(0, len(distinct), EMBED_BATCH):
            if loop.time() >= deadline:
                break
            batch = distinct[start : start + EMBED_BATCH]
            computed = await self._passage_vectors(tenant_id, document_id, batch)
            vectors.update(zip(batch, computed, strict=True))
        return vectors

    async def _embed_tail(self, tail: DocumentTail, texts: list[str]) -> Vectors:
        return await self._passage_vectors(tail.tenant_id, tail.document_id, texts)

    async def _store_chunk_vectors(
        self, tail: DocumentTail, texts: list[str], vectors: Vectors
    ) -> None:
        """The background embedding's write: only while `tail` is still its document's."""
        async with self._domain.write_lock:
            if self.backfill.is_current(tail):  # not deleted or ingested again since
                await self._set_vectors(tail, texts, vectors)

    async def _set_vectors(self, tail: DocumentTail, texts: list[str], vectors: Vectors) -> None:
        """Stores the vectors of texts of the current `tail` (call under the write lock)."""
        domain = self._domain
        by_chunk = {
            i: vector for text, vector in zip(texts, vectors, strict=True) for i in tail.texts[text]
        }
        await domain.store.set_chunk_vectors(tail.tenant_id, tail.document_id, by_chunk)
        key = (tail.tenant_id, Source.KNOWLEDGE, "")
        for i, vector in by_chunk.items():
            domain.index.set_vector(key, f"{tail.document_id}#{i}", vector)
        self.backfill.done(tail, texts)
        metrics.KNOWLEDGE_PENDING_CHUNKS.set(self.backfill.total)

    async def _fill_vectors(
        self, tenant_id: str, document_id: str, version: int, chunks: list[Chunk]
    ) -> None:
        """Gives the indexed `version` of a document the vectors of `chunks` it still lacks
        (call under the write lock)."""
        tail = self.backfill.tail_of(tenant_id, document_id)
        if tail is None or tail.ingested_at_us != version:
            return
        vector_of = {
            chunk_embed_text(c.title, c.text): c.vector for c in chunks if c.vector is not None
        }
        texts = [t for t in tail.texts if t in vector_of]
        if texts:
            await self._set_vectors(tail, texts, np.stack([vector_of[t] for t in texts]))

    # -- facts ---------------------------------------------------------------------------

    async def upsert_facts(self, tenant_id: str, user_id: str, facts: list[NewFact]) -> list[Fact]:
        domain = self._domain
        limit = domain.settings.max_facts_per_user
        # state_svc keeps its own bound; this one answers in context_svc's terms.
        known = await domain.store.fact_ids(tenant_id, user_id)
        if len(known | {f.fact_id for f in facts}) > limit:
            raise InvalidArgument.single("facts", f"a user can have at most {limit} facts")
        vectors = await domain.embed_for_index([f.text for f in facts])
        little = np.asarray(vectors, dtype="<f4")
        model = domain.embedder.name
        stored = await self._records().put_facts(
            tenant_id,
            user_id,
            [(f, model, v.tobytes()) for f, v in zip(facts, little, strict=True)],
        )
        async with domain.write_lock:
            current = await self._records().list_facts(tenant_id, user_id)
            await self._write_facts(tenant_id, user_id, current)
        return [self._fact(tenant_id, user_id, f) for f in stored]

    async def list_facts(self, tenant_id: str, user_id: str) -> list[Fact]:
        stored = await self._records().list_facts(tenant_id, user_id)
        return [self._fact(tenant_id, user_id, f) for f in stored]

    async def delete_fact(self, tenant_id: str, user_id: str, fact_id: str) -> None:
        if not await self._records().delete_fact(tenant_id, user_id, fact_id):
            raise NotFound(f"fact {fact_id!r} of user {user_id!r} not found")
        async with self._domain.write_lock:
            current = await self._records().list_facts(tenant_id, user_id)
            await self._write_facts(tenant_id, user_id, current)

    def _fact(self, tenant_id: str, user_id: str, stored: StoredFact) -> Fact:
        """A stored fact without its vector (for replies)."""
        return Fact(
            tenant_id,
            user_id,
            stored.fact_id,
            stored.text,
            [],
            stored.updated_at_us,
            np.zeros(0, np.float32),
        )

    async def _write_facts(self, tenant_id: str, user_id: str, stored: list[StoredFact]) -> None:
        """Makes the user's indexed facts `stored` (call under the write lock). A vector
        of another model than this replica's is computed again here."""
        domain = self._domain
        name, dim = domain.embedder.name, domain.embedder.dim
        vectors = np.zeros((len(stored), dim), np.float32)
        missing = []
        for row, f in enumerate(stored):
            if f.model == name and len(f.vector) == 4 * dim:
                vectors[row] = np.frombuffer(f.vector, dtype="<f4")
            else:
                missing.append(row)
        if missing:
            vectors[missing] = await domain.embed_for_index([stored[r].text for r in missing])
        facts = [
            Fact(tenant_id, user_id, f.fact_id, f.text, analyze(f.text), f.updated_at_us, v)
            for f, v in zip(stored, vectors, strict=True)
        ]
        removed = await domain.store.replace_facts(tenant_id, user_id, facts)
        for fact_id in removed:
            domain.index.remove((tenant_id, Source.FACT, user_id), fact_id)
        for fact in facts:
            domain.index_fact(fact)
        domain.update_gauges()

    # -- the feed ------------------------------------------------------------------------

    async def apply_changes(self, changes: Sequence[KnowledgeChanged]) -> None:
        """Fetches and indexes the current state of what the feed says changed (call under
        the write lock): each document and each user's facts once per batch."""
        documents = dict.fromkeys((c.tenant_id, c.document_id) for c in changes if c.document_id)
        users = dict.fromkeys((c.tenant_id, c.user_id) for c in changes if c.user_id)
        records = self._records()
        for tenant_id, document_id in documents:
            stored = await records.get_document(tenant_id, document_id)
            if stored is None:
                await self._unindex_document(tenant_id, document_id)
                continue
            pieces = await self._chunks_of(stored.text, limit=False)
            # Found by keyword at once; embedded in the background, mostly by loading the
            # vectors the ingesting replica stored.
            await self._write_document(*await self._version(stored, pieces, {}))
        for tenant_id, user_id in users:
            await self._write_facts(
                tenant_id, user_id, await records.list_facts(tenant_id, user_id)
            )
        metrics.FEED_APPLIED.labels(change="knowledge").inc(len(documents) + len(users))
