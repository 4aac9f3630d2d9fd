"""The production store: MongoDB through PyMongo's async API (AsyncMongoClient).

One document per event in `events`, whose `_id` is the event's global feed position.
Three unique indexes make concurrent writers safe without transactions (FerretDB and
sharded clusters both lack cheap ones):

- (tenant_id, event_id): an event is stored once, whoever sends it how often;
- (tenant_id, conversation_id, seq): two writers cannot take the same sequence number;
- _id: two writers cannot take the same feed position.

A writer inserts a batch at positions right after the current maxima, in order
(`insert_many(ordered=True)` stops at the first failure). A position is only ever taken
right after an existing one, so sequences and the feed are gapless and a reader can never
see position n+1 before n exists. A collision means another replica won: re-read the
maxima and insert the rest again. Concurrent requests inside one replica are grouped into
one insert (GroupCommitter), so collisions only happen between replicas.

Conversation ids are a keyspace per tenant. A conversation's document, and its snapshot's,
has the _id `conversation_doc_id(tenant, conversation)`, unique across tenants, which is
what every lookup goes by (the one query FerretDB answers from an index). Documents stored
by schema 1 keep their bare conversation id as _id (the upgrade rewrites none): lookups by
id fall back to it, and creating a conversation first looks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson.errors import InvalidDocument
from pymongo import (
    ASCENDING,
    DESCENDING,
    AsyncMongoClient,
    ReplaceOne,
    ReturnDocument,
    UpdateOne,
)
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from voiceagent_backbone.servicekit.ids import uuid7
from voiceagent_backbone.state_svc.model import (
    AppendResult,
    Change,
    Conversation,
    ConversationStatus,
    Deletion,
    EmbeddingClaim,
    EmbeddingKey,
    EmbeddingOwner,
    Event,
    EventType,
    FactLimits,
    KnowledgeChange,
    KnowledgeDocument,
    NewEvent,
    PutOutcome,
    Snapshot,
    StoredEmbedding,
    UserFact,
    UserProfile,
)
from voiceagent_backbone.state_svc.store import codec
from voiceagent_backbone.state_svc.store.base import (
    SCHEMA_VERSION,
    AppendRequest,
    ConversationMissing,
    EventIdConflict,
    GroupCommitter,
    StoreError,
    StoreRejected,
)
from voiceagent_backbone.state_svc.store.mongo_embeddings import MongoEmbeddings
from voiceagent_backbone.state_svc.store.mongo_knowledge import MongoKnowledge

log = logging.getLogger(__name__)

# What the driver raises when the database fails (retryable), or refuses a document it
# cannot store: InvalidDocument is the driver's own refusal before sending.
_DB_ERRORS = (PyMongoError, InvalidDocument)
# Server error codes that mean "this value can never be stored", whatever the retries:
# BadValue, FailedToParse, TypeMismatch, DollarPrefixedFieldName, InvalidDBRef,
# EmptyFieldName, DottedFieldName, BSONObjectTooLarge, KeyTooLong.
_REFUSED_CODES = frozenset({2, 9, 14, 52, 55, 56, 57, 10334, 17280})


def _failure(exc: Exception) -> StoreError:
    if isinstance(exc, InvalidDocument) or (
        isinstance(exc, OperationFailure) and exc.code in _REFUSED_CODES
    ):
        return StoreRejected(f"mongodb refused the document: {exc}")
    return StoreError(f"mongodb: {exc}")


# Feed markers: documents of the events collection that are not events.
DELETION = "deletion"
KNOWLEDGE = "knowledge"
HEAD_ID = "feed_head"
# Pauses before concluding that a writer died between storing and announcing events.
ANNOUNCE_WAITS_S = (0.005, 0.02, 0.05)
# What a deleted event's document becomes: its position stays taken, nothing else is left.
TOMBSTONE = "tombstone"
# How often a feed reader refreshes its view of the head (to step over holes).
FRESH_S = 30.0
# Documents read per query while catching up with the head.
CATCH_UP_BATCH = 500
DUPLICATE_KEY = 11000
INDEX_NOT_FOUND = 27
NOT_IMPLEMENTED = 238
MAX_ATTEMPTS = 100
INSERT_CHUNK = 100
SEQ_CACHE_SIZE = 10_000
RECENT_IDS = 100_000
# Conversations never change tenant; a deleted one may take this long to be noticed by
# other replicas (appends in that window are refused by no one: keep it short).
CONVERSATION_CACHE_S = 5.0

Doc = dict[str, Any]
# (tenant id, conversation id): what names a conversation.
ConversationKey = tuple[str, str]
# Conversation document _id -> (the highest seq a round wrote, the last request writing it).
LastSeqs = dict[str, tuple[int, AppendRequest]]


@dataclass
class _Slot:
    """One new event waiting for its positions."""

    request: int
    event: NewEvent


def position_id(position: int) -> str:
    """Feed positions are zero-padded strings: string _ids are what FerretDB looks up by
    index (it scans for integer ones), and the padding keeps their order numeric."""
    return f"{position:016d}"


def idempotency_id(tenant_id: str, event_id: str) -> str:
    return f"{tenant_id}\x1f{event_id}"


def position_of(value: str) -> int:
    return int(value)


def conversation_doc_id(tenant_id: str, conversation_id: str) -> str:
    """The conversation id first: within a tenant these _ids sort like the ids, also
    among schema 1's bare ids (list paging compares them). Conversation ids are canonical
    UUIDs, without the separator: no two tenants' _ids, and no _id and a bare id, match."""
    return f"{conversation_id}\x1f{tenant_id}"


def _key(r: AppendRequest) -> ConversationKey:
    return (r.tenant_id, r.conversation_id)


def _conversation_id(d: Doc) -> str:
    # Schema 1 documents hold the conversation id only as their _id.
    return str(d.get("conversation_id") or d["_id"])


def _conversation(d: Doc) -> Conversation:
    return codec.conversation_from({**d, "conversation_id": _conversation_id(d)})


def _event(d: Doc) -> Event:
    return codec.event_from({**d, "feed_seq": position_of(d["_id"])})


def _change(d: Doc) -> Change:
    position = position_of(d["_id"])
    if d["type"] == DELETION:
        return Change(feed_seq=position, deletion=codec.deletion_from(d["tenant_id"], d["payload"]))
    if d["type"] == KNOWLEDGE:
        change = codec.knowledge_from(d["tenant_id"], d["payload"])
        return Change(feed_seq=position, knowledge=change)
    if d["type"] == TOMBSTONE:
        return Change(feed_seq=position)
    return Change(feed_seq=position, event=_event(d))


class MongoStore:
    name = "mongodb"

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        write_concern: str = "majority",
        timeout_ms: int = 5000,
        ttl_backstop_s: int = 86400,
    ) -> None:
        w: int | str = int(write_concern) if write_concern.isdigit() else write_concern
        self._client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri,
            tz_aware=True,
            retryWrites=True,
            serverSelectionTimeoutMS=timeout_ms,
            timeoutMS=timeout_ms * 2,
            appname="state_svc",
        )
        self._db = self._client.get_database(database, write_concern=WriteConcern(w=w))
        self._conversations: AsyncCollection[Doc] = self._db["conversations"]
        self._events: AsyncCollection[Doc] = self._db["events"]
        self._snapshots: AsyncCollection[Doc] = self._db["snapshots"]
        self._users: AsyncCollection[Doc] = self._db["users"]
        self._tenants: AsyncCollection[Doc] = self._db["tenants"]
        self._meta: AsyncCollection[Doc] = self._db["meta"]
        self._event_ids: AsyncCollection[Doc] = self._db["event_ids"]
        self._embeddings = MongoEmbeddings(self._db)
        self._knowledge = MongoKnowledge(self._db, conversation_doc_id)
        self._ttl_backstop = timedelta(seconds=ttl_backstop_s)
        self._seq_cache: OrderedDict[ConversationKey, int] = OrderedDict()
        self._feed_last: int | None = None
        # The highest head announced that this replica read (positions up to it exist).
        self._announced = 0
        self._announcing: asyncio.Task[None] | None = None
        self._unannounced: list[tuple[list[AppendRequest], LastSeqs, list[Doc]]] = []
        self._hint, self._hint_at = 0, -FRESH_S - 1
        # (tenant, event id) -> {conversation_id, seq} of events stored recently here.
        self._recent: OrderedDict[tuple[str, str], Doc] = OrderedDict()
        self._conversation_cache: dict[ConversationKey, tuple[Doc, float]] = {}
        self._appends: GroupCommitter[AppendRequest, list[AppendResult]] = GroupCommitter(
            self._append_batch
        )

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._client.admin.command("ping")
            await self._ensure_schema()
        except _DB_ERRORS as exc:
            raise _failure(exc) from exc
        self._appends.start()

    async def _ensure_schema(self) -> None:
        meta = await self._meta.find_one({"_id": "schema"})
        if meta is not None and int(meta["version"]) > SCHEMA_VERSION:
            raise StoreError(
                f"database schema {meta['version']} is newer than this build "
                f"({SCHEMA_VERSION}); upgrade state_svc"
            )
        await self._events.create_index(
            [("tenant_id", ASCENDING), ("event_id", ASCENDING)], unique=True, name="tenant_event"
        )
        await self._events.create_index(
            [("tenant_id", ASCENDING), ("conversation_id", ASCENDING), ("seq", ASCENDING)],
            unique=True,
            name="tenant_conv_seq",
        )
        # Schema 1's (conversation_id, seq) would make two tenants' conversations of one id
        # share seqs. Dropped only once its successor exists, so seqs are never unguarded;
        # on every open whatever the recorded version (gone already: a no-op), so an upgrade
        # that stopped halfway or raced another replica's is completed.
        try:
            await self._events.drop_index("conv_seq")
        except OperationFailure as exc:
            if exc.code != INDEX_NOT_FOUND:
                raise
        await self._events.create_index(
            [("tenant_id", ASCENDING), ("_id", ASCENDING)], name="tenant_feed"
        )
        await self._conversations.create_index(
            [
                ("tenant_id", ASCENDING),
                ("room_name", ASCENDING),
                ("status", ASCENDING),
                ("started_at", DESCENDING),
            ],
            name="room_open",
        )
        await self._conversations.create_index(
            [
                ("tenant_id", ASCENDING),
                ("user_ids", ASCENDING),
                ("started_at", DESCENDING),
                ("_id", DESCENDING),
            ],
            name="user_conversations",
        )
        await self._conversations.create_index(
            [("tenant_id", ASCENDING), ("updated_at", ASCENDING)], name="activity"
        )
        await self._users.create_index(
            [("tenant_id", ASCENDING), ("user_id", ASCENDING)], unique=True, name="tenant_user"
        )
        await self._snapshots.create_index([("tenant_id", ASCENDING)], name="tenant")
        # Backstops behind the retention sweeper: documents whose expire_at passed are
        # removed by the server even if no sweeper ran.
        for collection in (self._events, self._conversations, self._snapshots):
            try:
                await collection.create_index("expire_at", expireAfterSeconds=0, name="ttl")
            except OperationFailure as exc:
                if exc.code != NOT_IMPLEMENTED:
                    raise
                # FerretDB v1 has no TTL indexes: the sweeper alone enforces retention.
                log.warning(
                    "this server has no TTL indexes; only the retention sweeper removes data",
                    extra={"collection": collection.name},
                )
                break
        build = await self._client.admin.command("buildInfo")
        await self._embeddings.ensure_schema(ferretdb="ferretdbVersion" in build)
        self._knowledge.ensure_schema(ferretdb="ferretdbVersion" in build)
        await self._meta.update_one(
            {"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True
        )

    async def shared_secret(self, name: str, size: int) -> bytes:
        doc_id = f"secret:{name}"
        try:
            # $setOnInsert: the first replica's value wins; later ones read it back.
            with contextlib.suppress(DuplicateKeyError):
                await self._meta.update_one(
                    {"_id": doc_id},
                    {"$setOnInsert": {"value": secrets.token_bytes(size)}},
                    upsert=True,
                )
            found = await self._meta.find_one({"_id": doc_id})
        except _DB_ERRORS as exc:
            raise _failure(exc) from exc
        if found is None or not isinstance(found.get("value"), bytes):
            raise StoreError(f"the meta document {doc_id!r} holds no secret")
        return bytes(found["value"])

    async def close(self) -> None:
        await self._appends.stop()
        if self._announcing is not None:
            with contextlib.suppress(Exception):
                await self._announcing
        await self._client.close()

    async def drop_database(self) -> None:
        """Tests only: remove everything this store created."""
        await self._client.drop_database(self._db.name)

    # -- conversations ----------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        c = conversation
        doc = {
            "_id": conversation_doc_id(c.tenant_id, c.conversation_id),
            **codec.conversation_fields(c),
        }
        try:
            # A schema 1 document of the tenant's with this id is this conversation. Only
            # schema 1 stored bare _ids, so none can appear between this look and the insert.
            legacy = await self._conversations.find_one({"_id": c.conversation_id})
            if legacy is not None and legacy["tenant_id"] == c.tenant_id:
                return _conversation(legacy), False
            await self._conversations.insert_one(doc)
            return conversation, True
        except DuplicateKeyError:
            existing = await self._guard(self._conversations.find_one({"_id": doc["_id"]}))
            if existing is None:  # deleted since: create it again
                return await self.create_conversation(conversation)
            return _conversation(existing), False
        except _DB_ERRORS as exc:
            raise _failure(exc) from exc

    async def _find_conversation(
        self, tenant_id: str, conversation_id: str, projection: Doc | None = None
    ) -> Doc | None:
        """The tenant's conversation document, by _id alone (FerretDB scans for any other
        filter): under its own _id, else under a schema 1 bare one."""
        fields = None if projection is None else {**projection, "tenant_id": 1}
        for doc_id in (conversation_doc_id(tenant_id, conversation_id), conversation_id):
            doc = await self._conversations.find_one({"_id": doc_id}, fields)
            if doc is not None and doc["tenant_id"] == tenant_id:
                return doc
        return None

    async def _conversation_doc_id(self, tenant_id: str, conversation_id: str) -> str:
        """The _id of the conversation's document (and of its snapshot's), also for a
        conversation that no longer exists: then it names no document."""
        key = (tenant_id, conversation_id)
        found = (await self._conversation_info({key})).get(key)
        if found is None:
            return conversation_doc_id(tenant_id, conversation_id)
        return str(found["_id"])

    def _conversation(self, doc: Doc) -> Conversation:
        """last_seq is announced after the append returns: add what this replica knows."""
        conversation = _conversation(doc)
        known = self._seq_cache.get((conversation.tenant_id, conversation.conversation_id))
        if known is not None:
            conversation.last_seq = max(conversation.last_seq, known)
        return conversation

    async def get_conversation(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        doc = await self._guard(self._find_conversation(tenant_id, conversation_id))
        return self._conversation(doc) if doc is not None else None

    async def find_open_conversation(self, tenant_id: str, room_name: str) -> Conversation | None:
        doc = await self._guard(
            self._conversations.find_one(
                {
                    "tenant_id": tenant_id,
                    "room_name": room_name,
                    "status": ConversationStatus.OPEN.value,
                },
                sort=[("started_at", DESCENDING), ("_id", DESCENDING)],
            )
        )
        return self._conversation(doc) if doc is not None else None

    async def list_conversations(
        self, tenant_id: str, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        query: Doc = {"tenant_id": tenant_id, "user_ids": user_id}
        if after is not None:
            at, last_id = after
            # A bare id compares with both kinds of _id as the ids would (conversation_doc_id).
            query["$or"] = [
                {"started_at": {"$lt": at}},
                {"started_at": at, "_id": {"$lt": last_id}},
            ]
        cursor = self._conversations.find(
            query, sort=[("started_at", DESCENDING), ("_id", DESCENDING)], limit=limit
        )
        docs = await self._guard(cursor.to_list())
        return [self._conversation(d) for d in docs]

    async def end_conversation(
        self, tenant_id: str, conversation_id: str, reason: str, now: datetime
    ) -> Conversation | None:
        doc_id = await self._guard(self._conversation_doc_id(tenant_id, conversation_id))
        await self._guard(
            self._conversations.update_one(
                {"_id": doc_id, "status": ConversationStatus.OPEN.value},
                {
                    "$set": {
                        "status": ConversationStatus.ENDED.value,
                        "ended_at": now,
                        "end_reason": reason,
                        "updated_at": now,
                    }
                },
            )
        )
        doc = await self._guard(self._conversations.find_one({"_id": doc_id}))
        return self._conversation(doc) if doc is not None else None

    # -- events -----------------------------------------------------------------------

    async def append_events(self, request: AppendRequest) -> list[AppendResult]:
        return await self._appends.submit(request)

    async def _append_batch(
        self, requests: list[AppendRequest]
    ) -> list[list[AppendResult] | BaseException]:
        try:
            return await self._append_group(requests)
        except _DB_ERRORS as exc:
            # A failed round may have stored part of the group: callers retry, and the
            # stored events come back with their first sequence numbers.
            self._lose_track()
            raise _failure(exc) from exc

    async def _append_group(
        self, requests: list[AppendRequest]
    ) -> list[list[AppendResult] | BaseException]:
        errors: dict[int, BaseException] = {}
        results: list[dict[str, AppendResult]] = [{} for _ in requests]

        conversations = await self._conversation_info({_key(r) for r in requests})
        for i, r in enumerate(requests):
            if _key(r) not in conversations:
                errors[i] = ConversationMissing(r.conversation_id)

        slots: list[_Slot] = []
        claimed: set[tuple[str, str]] = set()
        for i, r in enumerate(requests):
            if i in errors:
                continue
            for event in r.events:
                key = (r.tenant_id, event.event_id)
                if key not in claimed:
                    claimed.add(key)
                    slots.append(_Slot(i, event))

        inserted: list[Doc] = []
        last_seqs = await self._insert_slots(
            requests, conversations, slots, results, errors, inserted
        )
        if inserted:
            # Callers get their answer once the events are stored; the announcements run
            # behind it (one round at a time), so they add nothing to append latency.
            self._unannounced.append((requests, last_seqs, inserted))
            if self._announcing is None or self._announcing.done():
                self._announcing = asyncio.create_task(self._announce())

        out: list[list[AppendResult] | BaseException] = []
        for i, r in enumerate(requests):
            if i in errors:
                out.append(errors[i])
                continue
            per_event: list[AppendResult] = []
            for event in r.events:
                result = results[i].get(event.event_id)
                if result is None:
                    # The same id twice in one group: the later copy is the duplicate.
                    first = next(res[event.event_id] for res in results if event.event_id in res)
                    result = AppendResult(event.event_id, first.seq, True)
                per_event.append(result)
            out.append(per_event)
        return out

    def _settle_known(
        self,
        requests: list[AppendRequest],
        slots: list[_Slot],
        results: list[dict[str, AppendResult]],
        errors: dict[int, BaseException],
    ) -> list[_Slot]:
        """Slots whose event is known to be stored already get their first seq back."""
        remaining = []
        for slot in slots:
            if slot.request in errors:
                continue
            r = requests[slot.request]
            known = self._recent.get((r.tenant_id, slot.event.event_id))
            if known is None:
                remaining.append(slot)
            elif known["conversation_id"] != r.conversation_id:
                errors[slot.request] = EventIdConflict(slot.event.event_id)
            else:
                results[slot.request][slot.event.event_id] = AppendResult(
                    slot.event.event_id, int(known["seq"]), True
                )
        return [s for s in remaining if s.request not in errors]

    async def _insert_slots(
        self,
        requests: list[AppendRequest],
        conversations: dict[ConversationKey, Doc],
        slots: list[_Slot],
        results: list[dict[str, AppendResult]],
        errors: dict[int, BaseException],
        inserted: list[Doc],
    ) -> LastSeqs:
        """Insert in order at the next free positions; returns what to announce."""
        last_seq_written: LastSeqs = {}
        for _ in range(MAX_ATTEMPTS):
            slots = self._settle_known(requests, slots, results, errors)
            if not slots:
                return last_seq_written
            feed = await self._feed_position()
            seqs: dict[ConversationKey, int] = {}
            docs: list[Doc] = []
            for slot in slots:
                r = requests[slot.request]
                key = _key(r)
                if key not in seqs:
                    seqs[key] = await self._seq_position(key, conversations[key]["_id"])
                seqs[key] += 1
                feed += 1
                docs.append(self._event_doc(r, slot.event, feed, seqs[key], conversations[key]))
            done, failure = await self._insert_ordered(docs)
            for slot, doc in zip(slots[:done], docs[:done], strict=True):
                self._observe(doc)
                results[slot.request][slot.event.event_id] = AppendResult(
                    slot.event.event_id, doc["seq"], False
                )
                r = requests[slot.request]
                last_seq_written[conversations[_key(r)]["_id"]] = (doc["seq"], r)
                inserted.append(doc)
            slots = slots[done:]
            if failure is None:
                return last_seq_written
            await self._after_collision(requests, conversations, slots)
        raise StoreError("mongodb: too much write contention; retry")

    async def _after_collision(
        self,
        requests: list[AppendRequest],
        conversations: dict[ConversationKey, Doc],
        slots: list[_Slot],
    ) -> None:
        """The first remaining slot hit a unique index: another replica took the positions
        (catch up with the feed), or the event was stored before (a client's retry)."""
        head = slots[0]
        r = requests[head.request]
        key = _key(r)
        before = (self._feed_last, self._seq_cache.get(key))
        # 1. What other replicas announced: the head document and conversation documents.
        keys = {_key(requests[s.request]) for s in slots}
        await self._read_announced({k: conversations[k]["_id"] for k in keys})
        if (self._feed_last, self._seq_cache.get(key)) != before:
            return  # positions moved on: try again at the new ones
        # 2. A retry of a request stored before: its idempotency record.
        if slots and await self._read_idempotency(requests, slots):
            return
        # 3. A writer stored events and is about to announce them: give it a moment.
        for delay in ANNOUNCE_WAITS_S:
            await asyncio.sleep(delay)
            await self._read_announced({key: conversations[key]["_id"]})
            if (self._feed_last, self._seq_cache.get(key)) != before:
                return
        # 4. A writer died before announcing: walk the feed from the announced head.
        await self._catch_up()
        if (r.tenant_id, head.event.event_id) in self._recent:
            return
        if (self._feed_last, self._seq_cache.get(key)) != before:
            return
        # Positions were right, so the event id is taken: an older stored event.
        by_tenant: dict[str, list[str]] = {}
        for slot in slots:
            by_tenant.setdefault(requests[slot.request].tenant_id, []).append(slot.event.event_id)
        query = {
            "$or": [{"tenant_id": t, "event_id": {"$in": ids}} for t, ids in by_tenant.items()]
        }
        found = 0
        async for d in self._events.find(
            query, {"tenant_id": 1, "event_id": 1, "conversation_id": 1, "seq": 1}
        ):
            self._remember_event(d)
            found += 1
        if not found:
            # Nothing explains it (a writer died before announcing, and its events are
            # below the head): ask for the true maxima, which is a scan on FerretDB.
            top_seq, top_pos = await asyncio.gather(
                self._events.find_one(
                    {"tenant_id": r.tenant_id, "conversation_id": r.conversation_id},
                    {"seq": 1},
                    sort=[("seq", DESCENDING)],
                ),
                self._events.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)]),
            )
            if top_seq is not None:
                self._seq_cache[key] = int(top_seq["seq"])
            if top_pos is not None:
                self._feed_last = max(self._feed_last or 0, position_of(top_pos["_id"]))

    async def _announce(self) -> None:
        """Announce stored rounds, one write round at a time; rounds stored while one is
        being announced are merged into the next (fewer writes under load)."""
        while self._unannounced:
            rounds, self._unannounced = self._unannounced, []
            requests = [r for round_requests, _, _ in rounds for r in round_requests]
            inserted = [d for _, _, round_inserted in rounds for d in round_inserted]
            last_seqs: LastSeqs = {}
            for _, round_seqs, _ in rounds:
                for doc_id, (seq, request) in round_seqs.items():
                    earlier, _ = last_seqs.get(doc_id, (0, request))
                    last_seqs[doc_id] = (max(seq, earlier), request)
            try:
                await self._record_inserted(requests, last_seqs, inserted)
            except _DB_ERRORS as exc:
                # Nothing is lost: the events are stored; other writers find them by walking.
                log.warning("could not announce stored events", extra={"error": str(exc)})

    async def _record_inserted(
        self, requests: list[AppendRequest], last_seqs: LastSeqs, inserted: list[Doc]
    ) -> None:
        """After events are stored: idempotency records, then conversations, then the head.

        The events' unique indexes already make them safe; these records only let every
        replica find the current positions and earlier events by _id (cheap everywhere).
        A crash before they are written is covered by the slow paths in _after_collision.
        """
        # One record per request, under its first event's id: a client's retry re-sends the
        # same request, and finds all of its events with one lookup. (A retry that
        # regrouped events is found by the slower paths in _after_collision.)
        by_event = {(d["tenant_id"], d["event_id"]): d for d in inserted}
        records = []
        for r in requests:
            stored = [by_event.get((r.tenant_id, e.event_id)) for e in r.events]
            if not r.events or stored[0] is None:
                continue
            records.append(
                {
                    "_id": idempotency_id(r.tenant_id, r.events[0].event_id),
                    "conversation_id": r.conversation_id,
                    # Subdocuments, not pairs: FerretDB v1 refuses nested arrays.
                    "events": [
                        {"e": d["event_id"], "s": d["seq"], "p": position_of(d["_id"])}
                        for d in stored
                        if d is not None
                    ],
                }
            )
        top = max(position_of(d["_id"]) for d in inserted)
        await asyncio.gather(
            self._insert_idempotency(records),
            self._touch_conversations(last_seqs),
            self._meta.update_one({"_id": HEAD_ID}, {"$max": {"pos": top}}, upsert=True),
        )

    async def _insert_idempotency(self, records: list[Doc]) -> None:
        try:
            await self._event_ids.insert_many(records, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def _read_announced(self, doc_ids: dict[ConversationKey, str]) -> None:
        """The announced head, and last seqs of conversations (key -> document _id)."""
        keys = list(doc_ids)
        head, *conversations = await asyncio.gather(
            self._meta.find_one({"_id": HEAD_ID}),
            *(self._conversations.find_one({"_id": doc_ids[k]}, {"last_seq": 1}) for k in keys),
        )
        if head is not None:
            self._feed_last = max(self._feed_last or 0, int(head["pos"]))
        for key, doc in zip(keys, conversations, strict=True):
            if doc is not None and key in self._seq_cache:
                self._seq_cache[key] = max(self._seq_cache[key], int(doc.get("last_seq") or 0))

    async def _read_idempotency(self, requests: list[AppendRequest], slots: list[_Slot]) -> bool:
        """The idempotency record of a request that began with this slot's event; True when
        one was found (its events are then known, with their first seqs)."""
        head = slots[0]
        tenant_id = requests[head.request].tenant_id
        doc = await self._event_ids.find_one(
            {"_id": idempotency_id(tenant_id, head.event.event_id)}
        )
        if doc is None:
            return False
        for item in doc["events"]:
            self._remember_event(
                {
                    "_id": position_id(int(item["p"])),
                    "tenant_id": tenant_id,
                    "event_id": item["e"],
                    "conversation_id": doc["conversation_id"],
                    "seq": item["s"],
                }
            )
        return True

    async def _insert_ordered(self, docs: list[Doc]) -> tuple[int, Doc | None]:
        """Insert in order, stopping at the first failure: (docs stored, the failure).

        Chunks of INSERT_CHUNK: FerretDB v1 keeps inserting after a failure once an ordered
        insert spans more than its internal batch of 100 documents, which would break the
        rule that a position is only taken right after an existing one.
        """
        done = 0
        for start in range(0, len(docs), INSERT_CHUNK):
            chunk = docs[start : start + INSERT_CHUNK]
            try:
                await self._events.insert_many(chunk, ordered=True)
            except BulkWriteError as exc:
                write_errors = exc.details.get("writeErrors") or []
                failure = write_errors[0] if write_errors else None
                if failure is None or failure.get("code") != DUPLICATE_KEY:
                    raise
                return done + int(exc.details.get("nInserted", 0)), failure
            done += len(chunk)
        return done, None

    async def _conversation_info(self, keys: set[ConversationKey]) -> dict[ConversationKey, Doc]:
        """_id and users of existing conversations, from a short-lived cache or lookups."""
        now = time.monotonic()
        out: dict[ConversationKey, Doc] = {}
        missing = []
        for key in keys:
            cached = self._conversation_cache.get(key)
            if cached is not None and now - cached[1] < CONVERSATION_CACHE_S:
                out[key] = cached[0]
            else:
                missing.append(key)
        docs = await asyncio.gather(
            *(self._find_conversation(t, c, {"user_ids": 1}) for t, c in missing)
        )
        for key, doc in zip(missing, docs, strict=True):
            if doc is not None:
                out[key] = doc
                self._conversation_cache[key] = (doc, now)
        while len(self._conversation_cache) > SEQ_CACHE_SIZE:
            self._conversation_cache.pop(next(iter(self._conversation_cache)))
        return out

    def _event_doc(
        self,
        r: AppendRequest,
        e: NewEvent,
        feed: int,
        seq: int,
        conversation: Doc,
    ) -> Doc:
        doc: Doc = {
            "_id": position_id(feed),
            "tenant_id": r.tenant_id,
            "event_id": e.event_id,
            "conversation_id": r.conversation_id,
            "seq": seq,
            "type": e.type.value,
            "role": e.role.value,
            "text": e.text,
            "payload": e.payload,
            "client_time": e.client_time,
            "server_time": r.now,
            "participant_identity": e.participant_identity,
            "detail_kind": e.detail_kind,
            "detail": e.detail,
            "user_ids": conversation.get("user_ids") or [],
        }
        if r.expire_at is not None:
            doc["expire_at"] = r.expire_at + self._ttl_backstop
        return doc

    async def _touch_conversations(self, last_seqs: LastSeqs) -> None:
        updates = []
        for doc_id, (seq, r) in last_seqs.items():
            fields: Doc = {"updated_at": r.now}
            if r.expire_at is not None:
                fields["expire_at"] = r.expire_at + self._ttl_backstop
            updates.append(UpdateOne({"_id": doc_id}, {"$max": {"last_seq": seq}, "$set": fields}))
        await self._conversations.bulk_write(updates, ordered=False)

    # -- following the feed's head --------------------------------------------------------
    #
    # `_feed_last` is the highest position this replica knows, and every document up to it
    # has been applied to `_seq_cache` (for the conversations in it) and `_recent`. Catching
    # up reads the documents above it in feed order, with range queries. Not a walk of point
    # lookups by _id: FerretDB v1.24 with SQLite answers those by scanning the collection
    # too (its query names `_id` by another expression than its index does), so a walk of k
    # positions was k scans plus one per position looked up beyond the head, where a range
    # query is one scan; on MongoDB it is one index range.

    async def _feed_position(self) -> int:
        if self._feed_last is None:
            head = await self._meta.find_one({"_id": HEAD_ID})
            self._feed_last = int(head["pos"]) if head is not None else 0
        return self._feed_last

    async def _catch_up(self) -> None:
        position = await self._feed_position()
        while True:
            cursor = self._events.find(
                {"_id": {"$gt": position_id(position)}},
                # What _observe reads: everything but the texts.
                {"text": 0, "detail": 0},
                sort=[("_id", ASCENDING)],
                limit=CATCH_UP_BATCH,
            )
            docs = await cursor.to_list()
            for doc in docs:
                self._observe(doc)
            if len(docs) < CATCH_UP_BATCH:
                return
            position = position_of(docs[-1]["_id"])

    def _observe(self, doc: Doc) -> None:
        """Apply one document at the head of the feed to the caches."""
        position = position_of(doc["_id"])
        kind = doc.get("type")
        if kind == DELETION:
            for conversation_id in (doc.get("payload") or {}).get("conversation_ids", []):
                self._seq_cache.pop((doc["tenant_id"], conversation_id), None)
                self._conversation_cache.pop((doc["tenant_id"], conversation_id), None)
            self._recent.clear()
        elif kind not in (TOMBSTONE, KNOWLEDGE):
            self._remember_event(doc)
            key = (doc["tenant_id"], doc["conversation_id"])
            if key in self._seq_cache:
                self._seq_cache[key] = max(self._seq_cache[key], int(doc["seq"]))
        self._feed_last = max(self._feed_last or 0, position)

    def _remember_event(self, doc: Doc) -> None:
        self._recent[(doc["tenant_id"], doc["event_id"])] = {
            "conversation_id": doc["conversation_id"],
            "seq": int(doc["seq"]),
            "pos": position_of(doc["_id"]),
        }
        self._recent.move_to_end((doc["tenant_id"], doc["event_id"]))
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)

    async def _seq_position(self, key: ConversationKey, doc_id: str) -> int:
        cached = self._seq_cache.get(key)
        if cached is not None:
            self._seq_cache.move_to_end(key)
            return cached
        # First append here: the conversation's announced last seq. If it lags, the insert
        # collides and _after_collision finds the real one.
        doc = await self._conversations.find_one({"_id": doc_id}, {"last_seq": 1})
        value = int(doc.get("last_seq") or 0) if doc is not None else 0
        self._seq_cache[key] = max(value, self._seq_cache.get(key, 0))
        while len(self._seq_cache) > SEQ_CACHE_SIZE:
            self._seq_cache.popitem(last=False)
        return self._seq_cache[key]

    def _lose_track(self) -> None:
        self._feed_last = None
        self._seq_cache.clear()

    async def get_history(
        self,
        tenant_id: str,
        conversation_id: str,
        types: Sequence[EventType],
        *,
        last_n: int = 0,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[Event]:
        query: Doc = {"conversation_id": conversation_id, "tenant_id": tenant_id}
        if types:
            query["type"] = {"$in": [t.value for t in types]}
        if last_n > 0:
            cursor = self._events.find(query, sort=[("seq", DESCENDING)], limit=last_n)
            docs = await self._guard(cursor.to_list())
            return [_event(d) for d in reversed(docs)]
        query["seq"] = {"$gt": after_seq}
        cursor = self._events.find(query, sort=[("seq", ASCENDING)], limit=limit)
        return [_event(d) for d in await self._guard(cursor.to_list())]

    # -- snapshots and users ----------------------------------------------------------

    async def save_snapshot(self, tenant_id: str, snapshot: Snapshot, now: datetime) -> Snapshot:
        body = codec.snapshot_body(snapshot)
        try:
            doc_id = await self._conversation_doc_id(tenant_id, snapshot.conversation_id)
            doc = await self._snapshots.find_one_and_update(
                {"_id": doc_id},
                {
                    "$set": {"body": body, "created_at": now},
                    "$inc": {"version": 1},
                    "$setOnInsert": {"tenant_id": tenant_id},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except _DB_ERRORS as exc:
            raise _failure(exc) from exc
        assert doc is not None
        return codec.snapshot_from(snapshot.conversation_id, int(doc["version"]), now, body)

    async def get_latest_snapshot(self, tenant_id: str, conversation_id: str) -> Snapshot | None:
        doc_id = await self._guard(self._conversation_doc_id(tenant_id, conversation_id))
        doc = await self._guard(self._snapshots.find_one({"_id": doc_id}))
        if doc is None:
            return None
        return codec.snapshot_from(
            conversation_id, int(doc["version"]), doc.get("created_at"), doc["body"]
        )

    async def upsert_user(
        self, tenant_id: str, profile: UserProfile, now: datetime
    ) -> tuple[UserProfile, bool]:
        fields: Doc = {"updated_at": now}
        if profile.display_name:
            fields["display_name"] = profile.display_name
        for key, value in profile.preferences.items():
            fields[f"preferences.{key}"] = value
        update: Doc = {"$set": fields, "$setOnInsert": {"created_at": now}}
        if not profile.display_name:
            update["$setOnInsert"]["display_name"] = ""
        if not profile.preferences:
            update["$setOnInsert"]["preferences"] = {}
        try:
            doc = await self._users.find_one_and_update(
                {"tenant_id": tenant_id, "user_id": profile.user_id},
                update,
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # two first upserts raced: the second is an update
            return await self.upsert_user(tenant_id, profile, now)
        except _DB_ERRORS as exc:
            raise _failure(exc) from exc
        assert doc is not None
        # Both are set from `now` by the same write only when the document was inserted.
        created = doc["created_at"] == doc["updated_at"]
        return self._user(doc), created

    @staticmethod
    def _user(doc: Doc) -> UserProfile:
        return UserProfile(
            doc["user_id"],
            doc.get("display_name") or "",
            dict(doc.get("preferences") or {}),
            codec.aware(doc.get("created_at")),
            codec.aware(doc.get("updated_at")),
        )

    async def get_user(self, tenant_id: str, user_id: str) -> UserProfile | None:
        doc = await self._guard(self._users.find_one({"tenant_id": tenant_id, "user_id": user_id}))
        return self._user(doc) if doc is not None else None

    # -- feed -------------------------------------------------------------------------

    async def read_feed(self, after: int, limit: int, tenant_id: str | None) -> list[Change]:
        """A range query when positions beyond `after` are known to exist (stored or seen
        here, or announced); else a point lookup of the next position first, so that a
        caught-up reader costs one lookup by _id (indexed on MongoDB; on FerretDB v1 with
        SQLite a scan, but a lighter one than the range query, which FerretDB answers by
        decoding and sorting every document of the collection)."""
        if after >= max(self._feed_last or 0, self._announced):
            following = await self._guard(self._events.find_one({"_id": position_id(after + 1)}))
            if following is None and after >= await self._head_hint():
                return []
        query: Doc = {"_id": {"$gt": position_id(after)}}
        if tenant_id is not None:
            query["tenant_id"] = tenant_id
        cursor = self._events.find(query, sort=[("_id", ASCENDING)], limit=limit)
        return [_change(d) for d in await self._guard(cursor.to_list())]

    async def feed_head_estimate(self) -> int:
        # The announced head is a lookup in a collection of a few documents; the real
        # maximum is a scan of the events (FerretDB sorts outside the database).
        head = await self._guard(self._meta.find_one({"_id": HEAD_ID}))
        if head is not None:
            self._announced = max(self._announced, int(head["pos"]))
        return max(self._announced, self._feed_last or 0)

    async def _head_hint(self) -> int:
        """A position known to exist at or below the head, for telling a hole from the end:
        what this replica stored or saw, or (at most every FRESH_S) the head itself."""
        now = time.monotonic()
        if now - self._hint_at > FRESH_S:
            self._hint, self._hint_at = await self.feed_head(None), now
        return max(self._feed_last or 0, self._hint)

    async def feed_head(self, tenant_id: str | None) -> int:
        query: Doc = {} if tenant_id is None else {"tenant_id": tenant_id}
        top = await self._guard(self._events.find_one(query, {"_id": 1}, sort=[("_id", -1)]))
        return position_of(top["_id"]) if top is not None else 0

    # -- retention and deletion -------------------------------------------------------

    async def set_retention(self, tenant_id: str, seconds: int) -> None:
        await self._guard(
            self._tenants.update_one(
                {"_id": tenant_id}, {"$set": {"retention_s": seconds}}, upsert=True
            )
        )
        # The TTL backstop was computed from the old period: hand the tenant's existing
        # documents to the sweeper, which reads the new one, so nothing goes early.
        for collection in (self._events, self._conversations, self._snapshots):
            await self._guard(
                collection.update_many(
                    {"tenant_id": tenant_id, "expire_at": {"$exists": True}},
                    {"$unset": {"expire_at": ""}},
                )
            )

    async def get_retention(self, tenant_id: str) -> int | None:
        doc = await self._guard(self._tenants.find_one({"_id": tenant_id}))
        return int(doc["retention_s"]) if doc is not None else None

    async def tenants(self) -> list[str]:
        # $group rather than distinct: FerretDB's distinct refuses the maxTimeMS field
        # that the client's timeout adds.
        cursor = await self._guard(
            self._conversations.aggregate([{"$group": {"_id": "$tenant_id"}}])
        )
        return sorted(str(d["_id"]) for d in await self._guard(cursor.to_list()))

    async def expired_conversations(
        self, tenant_id: str, before: datetime, limit: int
    ) -> list[str]:
        cursor = self._conversations.find(
            {"tenant_id": tenant_id, "updated_at": {"$lt": before}},
            {"conversation_id": 1},
            sort=[("updated_at", ASCENDING)],
            limit=limit,
        )
        return [_conversation_id(d) for d in await self._guard(cursor.to_list())]

    async def user_conversation_ids(self, tenant_id: str, user_id: str) -> list[str]:
        cursor = self._conversations.find(
            {"tenant_id": tenant_id, "user_ids": user_id},
            {"conversation_id": 1},
            sort=[("started_at", ASCENDING), ("_id", ASCENDING)],
        )
        return [_conversation_id(d) for d in await self._guard(cursor.to_list())]

    async def record_deletion(self, deletion: Deletion, now: datetime) -> int:
        fields = codec.deletion_fields(deletion)
        return await self._record_marker(deletion.tenant_id, DELETION, fields, now)

    async def _announce_knowledge(self, change: KnowledgeChange, now: datetime) -> int:
        fields = codec.knowledge_fields(change)
        return await self._record_marker(change.tenant_id, KNOWLEDGE, fields, now)

    async def _record_marker(self, tenant_id: str, kind: str, payload: Doc, now: datetime) -> int:
        """A feed entry that is not an event (a deletion, a knowledge change), at the next
        free position; its position."""
        for _ in range(MAX_ATTEMPTS):
            try:
                await self._catch_up()
            except _DB_ERRORS as exc:
                raise _failure(exc) from exc
            position = (self._feed_last or 0) + 1
            doc: Doc = {
                "_id": position_id(position),
                "tenant_id": tenant_id,
                "event_id": uuid7(),
                "conversation_id": "",
                # Markers have no conversation; a unique negative seq keeps
                # (tenant, conversation, seq) unique.
                "seq": -position,
                "type": kind,
                "payload": payload,
                "server_time": now,
            }
            try:
                await self._events.insert_one(doc)
            except DuplicateKeyError:
                continue
            except _DB_ERRORS as exc:
                raise _failure(exc) from exc
            self._observe(doc)
            await self._guard(self._raise_head(position))
            return position
        raise StoreError("mongodb: too much write contention; retry")

    async def _raise_head(self, position: int) -> None:
        head = {"_id": HEAD_ID}
        try:
            await self._meta.update_one(head, {"$max": {"pos": position}}, upsert=True)
        except DuplicateKeyError:
            # Another first announcement made the head at the same moment (FerretDB's
            # upsert inserts after it looked): it is there now.
            await self._meta.update_one(head, {"$max": {"pos": position}})

    async def delete_conversations(
        self, tenant_id: str, conversation_ids: Sequence[str]
    ) -> tuple[int, int, int, int]:
        """Events become tombstones (their positions stay taken, so the feed stays
        contiguous for every reader); conversations, snapshots and vectors are removed."""
        ids = list(conversation_ids)
        if not ids:
            return 0, 0, 0, 0
        # First: a deletion that fails part way is done again (the sweeper's next round, the
        # client's retry) only while the conversations are there to be found.
        vectors = await self._guard(
            self._embeddings.delete(tenant_id, EmbeddingOwner.CONVERSATION, ids)
        )
        scope = {"tenant_id": tenant_id, "conversation_id": {"$in": ids}}
        events = await self._guard(self._events.find(scope, {"event_id": 1}).to_list())
        for start in range(0, len(events), 500):
            chunk = events[start : start + 500]
            # A request's idempotency record is under its first event's id, so under the id
            # of one of these events (other tenants' records of the same conversation ids
            # stay). Removed before the events turn into tombstones, which lose their ids.
            await self._guard(
                self._event_ids.delete_many(
                    {"_id": {"$in": [idempotency_id(tenant_id, d["event_id"]) for d in chunk]}}
                )
            )
            await self._guard(
                self._events.bulk_write(
                    [
                        ReplaceOne(
                            {"_id": d["_id"]},
                            {
                                "type": TOMBSTONE,
                                "event_id": f"~{d['_id']}",
                                "conversation_id": "~",
                                "seq": -position_of(d["_id"]),
                            },
                        )
                        for d in chunk
                    ],
                    ordered=False,
                )
            )
        # Under either _id: schema 1 documents keep the bare conversation id.
        doc_ids = {"$in": [*ids, *(conversation_doc_id(tenant_id, c) for c in ids)]}
        snapshots = await self._guard(
            self._snapshots.delete_many({"tenant_id": tenant_id, "_id": doc_ids})
        )
        conversations = await self._guard(
            self._conversations.delete_many({"tenant_id": tenant_id, "_id": doc_ids})
        )
        for conversation_id in ids:
            self._seq_cache.pop((tenant_id, conversation_id), None)
            self._conversation_cache.pop((tenant_id, conversation_id), None)
        self._recent.clear()
        return conversations.deleted_count, len(events), snapshots.deleted_count, vectors

    async def delete_user_profile(self, tenant_id: str, user_id: str) -> bool:
        result = await self._guard(
            self._users.delete_one({"tenant_id": tenant_id, "user_id": user_id})
        )
        return bool(result.deleted_count)

    # -- embeddings (mongo_embeddings.py) ---------------------------------------------

    # The owners are looked up before the write (there is no transaction to put both in):
    # a deletion that lands between the look and the write, and removes the owner's vectors
    # before this write stores its own, leaves them behind. The window is one round trip
    # long, against a replica's whole lag behind the feed before.

    async def claim_embeddings(
        self,
        model: str,
        keys: Sequence[EmbeddingKey],
        holder: str,
        now: datetime,
        until: datetime,
    ) -> list[EmbeddingClaim]:
        gone = await self._guard(self._knowledge.gone_owners(keys))
        live = [k for k in keys if (k.tenant_id, k.owner, k.owner_id) not in gone]
        claims: list[EmbeddingClaim] = []
        if live:
            claims = await self._guard(self._embeddings.claim(model, live, holder, now, until))
        by_key = {c.key: c for c in claims}
        return [by_key.get(k) or EmbeddingClaim(k, gone=True) for k in keys]

    async def put_embeddings(
        self, model: str, embeddings: Sequence[StoredEmbedding], holder: str, now: datetime
    ) -> list[PutOutcome]:
        gone = await self._guard(self._knowledge.gone_owners(e.key for e in embeddings))
        live = [e for e in embeddings if (e.key.tenant_id, e.key.owner, e.key.owner_id) not in gone]
        duplicates: list[bool] = []
        if live:
            duplicates = await self._guard(self._embeddings.put(model, live, holder, now))
        outcomes = {
            e.key: PutOutcome.DUPLICATE if d else PutOutcome.STORED
            for e, d in zip(live, duplicates, strict=True)
        }
        return [outcomes.get(e.key, PutOutcome.DROPPED) for e in embeddings]

    async def get_embeddings(
        self, model: str, keys: Sequence[EmbeddingKey]
    ) -> dict[EmbeddingKey, bytes]:
        result: dict[EmbeddingKey, bytes] = await self._guard(self._embeddings.get(model, keys))
        return result

    async def list_embeddings(
        self, model: str, after: EmbeddingKey | None, page_size: int
    ) -> AsyncIterator[list[StoredEmbedding]]:
        pages = self._embeddings.list(model, after, page_size)
        try:
            while True:
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    return
                except _DB_ERRORS as exc:
                    raise _failure(exc) from exc
                yield page
        finally:
            await pages.aclose()

    async def delete_embeddings(
        self, tenant_id: str, owner: EmbeddingOwner, owner_ids: Sequence[str]
    ) -> int:
        deleted: int = await self._guard(self._embeddings.delete(tenant_id, owner, owner_ids))
        return deleted

    # -- knowledge (mongo_knowledge.py): written, then announced ------------------------
    #
    # Not in one transaction: a reader that fetched between the write and its announcement
    # only fetches again. A failure between the two leaves the write unannounced: a put
    # that fails is retried by its caller (and announced then); a delete's retry finds
    # nothing to delete, so readers learn of it at their next listing.

    async def put_document(
        self, tenant_id: str, document: KnowledgeDocument, now: datetime
    ) -> KnowledgeDocument:
        stored: KnowledgeDocument = await self._guard(
            self._knowledge.put_document(tenant_id, document, now)
        )
        await self._announce_knowledge(
            KnowledgeChange(tenant_id, document_id=document.document_id), now
        )
        return stored

    async def get_document(self, tenant_id: str, document_id: str) -> KnowledgeDocument | None:
        found: KnowledgeDocument | None = await self._guard(
            self._knowledge.get_document(tenant_id, document_id)
        )
        return found

    async def list_documents(
        self, tenant_id: str, after: str, limit: int
    ) -> list[KnowledgeDocument]:
        found: list[KnowledgeDocument] = await self._guard(
            self._knowledge.list_documents(tenant_id, after, limit)
        )
        return found

    async def delete_document(
        self, tenant_id: str, document_id: str, now: datetime
    ) -> tuple[bool, int]:
        existed: bool = await self._guard(self._knowledge.delete_document(tenant_id, document_id))
        # After the document: a put of its vectors that looked before it went is undone
        # here unless it stores after this line (see claim_embeddings).
        vectors = await self.delete_embeddings(tenant_id, EmbeddingOwner.DOCUMENT, [document_id])
        if existed:
            await self._announce_knowledge(KnowledgeChange(tenant_id, document_id=document_id), now)
        return existed, vectors

    async def put_facts(
        self,
        tenant_id: str,
        user_id: str,
        facts: Sequence[UserFact],
        now: datetime,
        limits: FactLimits,
    ) -> tuple[list[UserFact], bool]:
        stored, changed = await self._guard(
            self._knowledge.put_facts(tenant_id, user_id, facts, now, limits)
        )
        if changed:
            await self._announce_knowledge(KnowledgeChange(tenant_id, user_id=user_id), now)
        return stored, bool(changed)

    async def list_facts(self, tenant_id: str, user_id: str) -> list[UserFact]:
        found: list[UserFact] = await self._guard(self._knowledge.list_facts(tenant_id, user_id))
        return found

    async def delete_fact(self, tenant_id: str, user_id: str, fact_id: str, now: datetime) -> bool:
        existed: bool = await self._guard(self._knowledge.delete_fact(tenant_id, user_id, fact_id))
        if existed:
            await self._announce_knowledge(KnowledgeChange(tenant_id, user_id=user_id), now)
        return existed

    async def delete_user_facts(self, tenant_id: str, user_id: str) -> int:
        deleted: int = await self._guard(self._knowledge.delete_user_facts(tenant_id, user_id))
        return deleted

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    async def _guard(awaitable: Any) -> Any:
        try:
            return await awaitable
        except _DB_ERRORS as exc:
            raise _failure(exc) from exc
