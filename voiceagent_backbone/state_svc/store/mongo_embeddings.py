"""MongoStore's embeddings: stored vectors and the claims on vectors not computed yet.

Two collections, both keyed by `embedding_id(model, key)`:

- `embeddings`: one document per stored vector, only ever inserted (and deleted with its
  owner). The unique _id makes "the first vector wins" atomic without a conditional
  update: a second put of a key fails with a duplicate key and is reported as one.
- `embedding_claims`: one document per key being computed (holder, claimed_until), removed
  when the vector is stored. It stays small: what is in flight, and what crashed claimers
  left behind (taken over once expired).

Why not one collection with the vector and the claim in one document: FerretDB (v1.24 on
SQLite, what the tests and benchmarks run) answers only a find by exact _id from its index.
Measured with 20,000 stored vectors: find by _id 5 ms, by _id plus a condition 31 ms, but
an update by _id plus a condition (the claim-then-store of one document) 2.5 s, an $in of
1,000 _ids 4.2 s, a sorted range of 1,000 2.5 s (each a scan of the whole collection).
Inserts that collide on _id and lookups by _id stay cheap, so the common path is made of
those: a claim inserts, a put inserts, the conditional updates (taking over an expired
claim) touch only the small claims collection.

On MongoDB a set of keys is read with one `$in` (one round trip); on FerretDB with a lookup
per key (concurrently), which is the index there. ListEmbeddings reads one cursor, sorted
by _id: an index range on MongoDB, and on FerretDB one scan for the whole stream instead
of one per page.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

from bson.binary import Binary
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from voiceagent_backbone.state_svc.model import (
    EmbeddingClaim,
    EmbeddingKey,
    EmbeddingOwner,
    StoredEmbedding,
)
from voiceagent_backbone.state_svc.store import codec

Doc = dict[str, Any]

# Key parts hold no control characters (checked at the edge): the separator keeps the
# _ids of one model a contiguous range, ordered like the keys.
SEPARATOR = "\x1f"
DUPLICATE_KEY = 11000
# Rounds of a claim before a key that keeps changing under it is reported as held.
CLAIM_ROUNDS = 5
# Concurrent lookups by _id on FerretDB.
POINT_READS = 16
IN_CHUNK = 1000


def embedding_id(model: str, key: EmbeddingKey) -> str:
    return SEPARATOR.join((model, key.tenant_id, key.owner.value, key.owner_id, key.item_id))


def model_range(model: str) -> tuple[str, str]:
    """[low, high) of the model's _ids: every one starts with model + SEPARATOR."""
    return model + SEPARATOR, model + chr(ord(SEPARATOR) + 1)


def _key(doc: Doc) -> EmbeddingKey:
    return EmbeddingKey(
        doc["tenant_id"], EmbeddingOwner(doc["owner"]), doc["owner_id"], doc["item_id"]
    )


class MongoEmbeddings:
    def __init__(self, db: Any) -> None:
        self.vectors: AsyncCollection[Doc] = db["embeddings"]
        self.claims: AsyncCollection[Doc] = db["embedding_claims"]
        # Set by ensure_schema: whether `$in` is a scan (FerretDB) and lookups by _id are
        # the way to read a set of keys.
        self.point_reads = False

    async def ensure_schema(self, ferretdb: bool) -> None:
        self.point_reads = ferretdb
        for collection in (self.vectors, self.claims):
            await collection.create_index(
                [("tenant_id", ASCENDING), ("owner", ASCENDING), ("owner_id", ASCENDING)],
                name="owner",
            )

    async def _by_ids(
        self, collection: AsyncCollection[Doc], ids: Sequence[str], point: bool
    ) -> dict[str, Doc]:
        return await find_by_ids(collection, ids, point)

    async def claim(
        self,
        model: str,
        keys: Sequence[EmbeddingKey],
        holder: str,
        now: datetime,
        until: datetime,
    ) -> list[EmbeddingClaim]:
        ids = {embedding_id(model, k): k for k in keys}
        out: dict[str, EmbeddingClaim] = {}
        pending = list(ids)
        for _ in range(CLAIM_ROUNDS):
            if not pending:
                break
            stored = await self._by_ids(self.vectors, pending, self.point_reads)
            for doc_id, doc in stored.items():
                out[doc_id] = EmbeddingClaim(ids[doc_id], vector=bytes(doc["vector"]))
            pending = [i for i in pending if i not in stored]
            # The claims collection is small: one $in, a scan of little on FerretDB.
            claims = await self._by_ids(self.claims, pending, False)
            fresh: list[str] = []
            taken: list[tuple[str, Doc]] = []
            for doc_id in pending:
                found = claims.get(doc_id)
                if found is None:
                    fresh.append(doc_id)
                    continue
                held_until = codec.aware(found["claimed_until"])
                assert held_until is not None
                if found["holder"] == holder or held_until <= now:
                    taken.append((doc_id, found))
                else:
                    out[doc_id] = EmbeddingClaim(ids[doc_id], held_until=held_until)
            retry = await self._insert_claims(
                [self._claim_doc(doc_id, ids[doc_id], holder, until) for doc_id in fresh]
            )
            retry += await self._take_over(taken, holder, until)
            for doc_id in fresh + [t[0] for t in taken]:
                if doc_id not in retry:
                    out[doc_id] = EmbeddingClaim(ids[doc_id], owned=True, held_until=until)
            # Lost a race (another claimer inserted or took it first, or the vector was
            # stored meanwhile): look again.
            pending = retry
        for doc_id in pending:  # still changing after every round: someone else's for now
            out[doc_id] = EmbeddingClaim(ids[doc_id], held_until=now)
        return [out[embedding_id(model, k)] for k in keys]

    @staticmethod
    def _claim_doc(doc_id: str, key: EmbeddingKey, holder: str, until: datetime) -> Doc:
        return {
            "_id": doc_id,
            "tenant_id": key.tenant_id,
            "owner": key.owner.value,
            "owner_id": key.owner_id,
            "holder": holder,
            "claimed_until": until,
        }

    async def _insert_claims(self, docs: list[Doc]) -> list[str]:
        """The _ids that another claimer inserted first."""
        if not docs:
            return []
        try:
            await self.claims.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            return _duplicates(exc, docs)
        return []

    async def _take_over(
        self, taken: list[tuple[str, Doc]], holder: str, until: datetime
    ) -> list[str]:
        """Expired claims and the holder's own: each updated only if it is still what was
        read (a compare-and-set), so of two claimers taking one over, one wins. The
        _ids whose claim changed in between."""

        async def one(doc_id: str, seen: Doc) -> str | None:
            result = await self.claims.update_one(
                {"_id": doc_id, "holder": seen["holder"], "claimed_until": seen["claimed_until"]},
                {"$set": {"holder": holder, "claimed_until": until}},
            )
            return None if result.matched_count else doc_id

        lost = await asyncio.gather(*(one(doc_id, seen) for doc_id, seen in taken))
        return [doc_id for doc_id in lost if doc_id is not None]

    async def put(
        self, model: str, embeddings: Sequence[StoredEmbedding], holder: str, now: datetime
    ) -> list[bool]:
        docs = [
            {
                "_id": embedding_id(model, e.key),
                "model": model,
                "tenant_id": e.key.tenant_id,
                "owner": e.key.owner.value,
                "owner_id": e.key.owner_id,
                "item_id": e.key.item_id,
                "vector": Binary(e.vector),
                "holder": holder,
                "stored_at": now,
            }
            for e in embeddings
        ]
        duplicates: set[str] = set()
        try:
            await self.vectors.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            duplicates = set(_duplicates(exc, docs))
        # Their claims are over (a claim of a stored key is never read again: this keeps
        # the claims collection small).
        await self.claims.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
        return [d["_id"] in duplicates for d in docs]

    async def get(self, model: str, keys: Sequence[EmbeddingKey]) -> dict[EmbeddingKey, bytes]:
        ids = {embedding_id(model, k): k for k in keys}
        found = await self._by_ids(self.vectors, list(ids), self.point_reads)
        return {ids[doc_id]: bytes(doc["vector"]) for doc_id, doc in found.items()}

    async def list(
        self, model: str, after: EmbeddingKey | None, page_size: int
    ) -> AsyncGenerator[list[StoredEmbedding], None]:
        low, high = model_range(model)
        bound: Doc = {"$gt": embedding_id(model, after)} if after else {"$gte": low}
        cursor = self.vectors.find(
            {"_id": {**bound, "$lt": high}},
            {"tenant_id": 1, "owner": 1, "owner_id": 1, "item_id": 1, "vector": 1},
            sort=[("_id", ASCENDING)],
            batch_size=page_size,
        )
        page: list[StoredEmbedding] = []
        try:
            async for doc in cursor:
                page.append(StoredEmbedding(_key(doc), bytes(doc["vector"])))
                if len(page) == page_size:
                    yield page
                    page = []
            if page:
                yield page
        finally:
            await cursor.close()

    async def delete(self, tenant_id: str, owner: EmbeddingOwner, owner_ids: Sequence[str]) -> int:
        ids = list(owner_ids)
        if not ids:
            return 0
        scope = {"tenant_id": tenant_id, "owner": owner.value, "owner_id": {"$in": ids}}
        removed = await self.vectors.delete_many(scope)
        await self.claims.delete_many(scope)
        return int(removed.deleted_count)


async def find_by_ids(
    collection: AsyncCollection[Doc],
    ids: Sequence[str],
    point: bool,
    projection: Doc | None = None,
) -> dict[str, Doc]:
    """The documents of those _ids that exist: with lookups by _id, concurrently, when
    `point` (FerretDB, where an $in is a scan), else with one $in per IN_CHUNK ids."""
    if not ids:
        return {}
    if point:
        gate = asyncio.Semaphore(POINT_READS)

        async def one(doc_id: str) -> Doc | None:
            async with gate:
                return await collection.find_one({"_id": doc_id}, projection)

        docs = await asyncio.gather(*(one(i) for i in ids))
        return {d["_id"]: d for d in docs if d is not None}
    found: dict[str, Doc] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = list(ids[start : start + IN_CHUNK])
        async for doc in collection.find({"_id": {"$in": chunk}}, projection):
            found[doc["_id"]] = doc
    return found


def _duplicates(exc: BulkWriteError, docs: list[Doc]) -> list[str]:
    """The _ids of an unordered insert that collided; any other failure is raised."""
    errors = exc.details.get("writeErrors", [])
    if any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return [docs[e["index"]]["_id"] for e in errors]
