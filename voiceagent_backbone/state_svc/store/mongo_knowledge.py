"""MongoStore's knowledge documents and user facts, and which owners of embeddings exist.

Every lookup goes by exact `_id`, the one query FerretDB (v1.24 on SQLite) answers from an
index (see mongo_embeddings.py for what the others cost there):

- `documents`: one document per knowledge document, `_id` = tenant + SEPARATOR + document
  id (ids hold no control characters, checked at the edge), so a tenant's documents are
  one `_id` range in id order. stored_at is kept as integer microseconds (`stored_at_us`;
  a BSON date has milliseconds).
- `facts`: one document per user, `_id` = tenant + SEPARATOR + user id, holding every fact
  of the user under a key made of the fact id's hex (a fact id may hold '.' or '$', which
  MongoDB reads as paths and operators). ListFacts reads it by `_id`. A user's facts fit in
  one ListFacts reply (at most 8 MiB), well inside a document's 16 MiB.

A write that reads before it writes (a document's next stored_at, the fact limits) holds
a lock on its document or user (KeyLocks): FerretDB applies every update as a read and a
write of the whole document, without isolation, so two concurrent updates of one document
lose one (measured: of 50 concurrent `$inc`, 27 counted; of 50 `$set`s of distinct keys,
2 kept). On MongoDB the lock makes the fact limits exact.

ListDocuments is the one range read: an index range on MongoDB, a scan of the collection
on FerretDB (like listing conversations there), for a listing that is rare (a new replica,
a reconciliation) beside GetDocument by `_id` after every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bson.binary import Binary
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from voiceagent_backbone.state_svc.model import (
    EmbeddingKey,
    EmbeddingOwner,
    FactLimits,
    KnowledgeDocument,
    UserFact,
    fact_bytes,
)
from voiceagent_backbone.state_svc.store import codec
from voiceagent_backbone.state_svc.store.base import StoreError, plan_facts
from voiceagent_backbone.state_svc.store.mongo_embeddings import SEPARATOR, find_by_ids

Doc = dict[str, Any]
Owner = tuple[str, EmbeddingOwner, str]
# A lock's holder writes within milliseconds; one left by a crashed writer is taken over
# after LOCK_LEASE. A writer waits for a lock at most LOCK_WAIT_S (then UNAVAILABLE).
LOCK_LEASE = timedelta(seconds=5)
LOCK_WAIT_S = 8.0


def document_key(tenant_id: str, document_id: str) -> str:
    return tenant_id + SEPARATOR + document_id


def user_key(tenant_id: str, user_id: str) -> str:
    return tenant_id + SEPARATOR + user_id


def fact_field(fact_id: str) -> str:
    return fact_id.encode().hex()


def _document(doc: Doc) -> KnowledgeDocument:
    return KnowledgeDocument(
        document_id=doc["document_id"],
        title=doc.get("title") or "",
        text=doc.get("text") or "",
        metadata=dict(doc.get("metadata") or {}),
        stored_at=codec.from_us(int(doc["stored_at_us"])),
        text_bytes=int(doc.get("text_bytes") or 0),
    )


def _fact(d: Doc) -> UserFact:
    return UserFact(
        fact_id=d["fact_id"],
        text=d["text"],
        embedding_model=d.get("embedding_model") or "",
        vector=bytes(d.get("vector") or b""),
        updated_at=codec.aware(d.get("updated_at")),
    )


def _fact_doc(fact: UserFact) -> Doc:
    return {
        "fact_id": fact.fact_id,
        "text": fact.text,
        "embedding_model": fact.embedding_model,
        "vector": Binary(fact.vector),
        "size": fact_bytes(fact),
        "updated_at": fact.updated_at,
    }


class KeyLocks:
    """One writer at a time per key, across replicas: a lock is a document inserted under
    the key's `_id` (an insert that collides is atomic on FerretDB too) and deleted when
    the write is done. The collection holds only the locks in flight."""

    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.locks = collection

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT_S
        delay = 0.002
        while True:
            now = datetime.now(UTC)
            try:
                await self.locks.insert_one({"_id": key, "until": now + LOCK_LEASE, "t": token})
                break
            except DuplicateKeyError:
                pass
            held = await self.locks.find_one({"_id": key})
            until = codec.aware(held["until"]) if held is not None else None
            if held is not None and until is not None and until <= now:
                # Its writer died holding it: take it over.
                await self.locks.delete_one({"_id": key, "t": held["t"]})
                continue
            if loop.time() > deadline:
                raise StoreError("mongodb: another write of the same record is under way; retry")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            await self.locks.delete_one({"_id": key, "t": token})


class MongoKnowledge:
    def __init__(self, db: Any, conversation_doc_id: Callable[[str, str], str]) -> None:
        self.documents: AsyncCollection[Doc] = db["documents"]
        self.facts: AsyncCollection[Doc] = db["facts"]
        self.conversations: AsyncCollection[Doc] = db["conversations"]
        self._locks = KeyLocks(db["knowledge_locks"])
        self._conversation_doc_id = conversation_doc_id
        # Whether sets of _ids are read with lookups (FerretDB) rather than one $in.
        self.point_reads = False

    def ensure_schema(self, ferretdb: bool) -> None:
        """No index to make: nothing but `_id` is queried, and it is unique by (tenant,
        document) and by (tenant, user) by construction."""
        self.point_reads = ferretdb

    # -- documents ------------------------------------------------------------------------

    async def put_document(
        self, tenant_id: str, document: KnowledgeDocument, now: datetime
    ) -> KnowledgeDocument:
        doc_id = document_key(tenant_id, document.document_id)
        now_us = codec.to_us(now)
        assert now_us is not None
        text_bytes = len(document.text.encode())
        async with self._locks.hold("document" + SEPARATOR + doc_id):
            previous = await self.documents.find_one({"_id": doc_id}, {"stored_at_us": 1})
            # Later than the version it replaces, even within one microsecond.
            stored_us = now_us
            if previous is not None:
                stored_us = max(now_us, int(previous["stored_at_us"]) + 1)
            await self.documents.replace_one(
                {"_id": doc_id},
                {
                    "tenant_id": tenant_id,
                    "document_id": document.document_id,
                    "title": document.title,
                    "text": document.text,
                    "metadata": document.metadata,
                    "text_bytes": text_bytes,
                    "stored_at_us": stored_us,
                },
                upsert=True,
            )
        return document.as_stored(codec.from_us(stored_us))

    async def get_document(self, tenant_id: str, document_id: str) -> KnowledgeDocument | None:
        doc = await self.documents.find_one({"_id": document_key(tenant_id, document_id)})
        return _document(doc) if doc is not None else None

    async def list_documents(
        self, tenant_id: str, after: str, limit: int
    ) -> list[KnowledgeDocument]:
        low = document_key(tenant_id, after)
        high = tenant_id + chr(ord(SEPARATOR) + 1)
        cursor = self.documents.find(
            {"_id": {"$gt": low, "$lt": high}},
            {"text": 0},
            sort=[("_id", ASCENDING)],
            limit=limit,
        )
        return [_document(d) for d in await cursor.to_list()]

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        result = await self.documents.delete_one({"_id": document_key(tenant_id, document_id)})
        return bool(result.deleted_count)

    # -- facts ----------------------------------------------------------------------------

    async def put_facts(
        self,
        tenant_id: str,
        user_id: str,
        facts: Sequence[UserFact],
        now: datetime,
        limits: FactLimits,
    ) -> tuple[list[UserFact], list[UserFact]]:
        """(the facts as stored, in request order; the ones written)."""
        doc_id = user_key(tenant_id, user_id)
        async with self._locks.hold("facts" + SEPARATOR + doc_id):
            doc = await self.facts.find_one({"_id": doc_id})
            held: dict[str, Doc] = (doc or {}).get("facts") or {}
            total = sum(int(d.get("size") or 0) for d in held.values())
            current = {
                f.fact_id: _fact(held[fact_field(f.fact_id)])
                for f in facts
                if fact_field(f.fact_id) in held
            }
            stored, changed = plan_facts(current, len(held), total, facts, now, limits)
            if changed:
                update = {
                    "$set": {f"facts.{fact_field(f.fact_id)}": _fact_doc(f) for f in changed},
                    "$setOnInsert": {"tenant_id": tenant_id, "user_id": user_id},
                }
                await self.facts.update_one({"_id": doc_id}, update, upsert=True)
        return stored, changed

    async def list_facts(self, tenant_id: str, user_id: str) -> list[UserFact]:
        doc = await self.facts.find_one({"_id": user_key(tenant_id, user_id)})
        held: dict[str, Doc] = (doc or {}).get("facts") or {}
        return sorted((_fact(d) for d in held.values()), key=lambda f: f.fact_id)

    async def delete_fact(self, tenant_id: str, user_id: str, fact_id: str) -> bool:
        doc_id = user_key(tenant_id, user_id)
        # Locked too: an unlocked update could undo a put's (FerretDB), or be undone.
        async with self._locks.hold("facts" + SEPARATOR + doc_id):
            # Modified only when the fact was there: no read first.
            result = await self.facts.update_one(
                {"_id": doc_id}, {"$unset": {f"facts.{fact_field(fact_id)}": ""}}
            )
        return bool(result.modified_count)

    async def delete_user_facts(self, tenant_id: str, user_id: str) -> int:
        doc = await self.facts.find_one_and_delete({"_id": user_key(tenant_id, user_id)})
        return len((doc or {}).get("facts") or {})

    # -- owners of embeddings -------------------------------------------------------------

    async def gone_owners(self, keys: Iterable[EmbeddingKey]) -> set[Owner]:
        """(tenant, owner, owner id) of the keys whose conversation or document does not
        exist, each looked up once. A user always exists."""
        conversations: set[tuple[str, str]] = set()
        documents: set[tuple[str, str]] = set()
        for key in keys:
            if key.owner is EmbeddingOwner.CONVERSATION:
                conversations.add((key.tenant_id, key.owner_id))
            elif key.owner is EmbeddingOwner.DOCUMENT:
                documents.add((key.tenant_id, key.owner_id))
        found_conversations, found_documents = await asyncio.gather(
            self._existing_conversations(conversations), self._existing_documents(documents)
        )
        gone = {(t, EmbeddingOwner.CONVERSATION, c) for t, c in conversations - found_conversations}
        gone |= {(t, EmbeddingOwner.DOCUMENT, d) for t, d in documents - found_documents}
        return gone

    async def _existing_conversations(self, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Not from MongoStore's conversation cache: a conversation deleted on another
        replica may stay in it for seconds, and this is what keeps its vectors out."""
        ids = {self._conversation_doc_id(t, c): (t, c) for t, c in wanted}
        docs = await find_by_ids(self.conversations, list(ids), self.point_reads, {"_id": 1})
        found = {ids[doc_id] for doc_id in docs}
        # Conversations stored by schema 1 keep their bare id as _id.
        rest = {c for _, c in wanted - found}
        legacy = await find_by_ids(
            self.conversations, list(rest), self.point_reads, {"tenant_id": 1}
        )
        found |= {(d["tenant_id"], c) for c, d in legacy.items()} & wanted
        return found

    async def _existing_documents(self, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
        ids = {document_key(t, d): (t, d) for t, d in wanted}
        docs = await find_by_ids(self.documents, list(ids), self.point_reads, {"_id": 1})
        return {ids[doc_id] for doc_id in docs}
