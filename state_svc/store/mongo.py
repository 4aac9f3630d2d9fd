"""The production store: MongoDB through PyMongo's async API (AsyncMongoClient).

One document per event in `events`, whose `_id` is the event's global feed position.
Three unique indexes make concurrent writers safe without transactions (FerretDB and
sharded clusters both lack cheap ones):

- (tenant_id, event_id): an event is stored once, whoever sends it how often;
- (conversation_id, seq): two writers cannot take the same sequence number;
- _id: two writers cannot take the same feed position.

A writer inserts a batch at positions right after the current maxima, in order
(`insert_many(ordered=True)` stops at the first failure). A position is only ever taken
right after an existing one, so sequences and the feed are gapless and a reader can never
see position n+1 before n exists. A collision means another replica won: re-read the
maxima and insert the rest again. Concurrent requests inside one replica are grouped into
one insert (GroupCommitter), so collisions only happen between replicas.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from servicekit.ids import uuid7
from state_svc.model import (
    AppendResult,
    Change,
    Conversation,
    ConversationStatus,
    Deletion,
    Event,
    EventType,
    NewEvent,
    Snapshot,
    UserProfile,
)
from state_svc.store import codec
from state_svc.store.base import (
    SCHEMA_VERSION,
    AppendRequest,
    ConversationIdConflict,
    ConversationMissing,
    EventIdConflict,
    GroupCommitter,
    StoreError,
)

log = logging.getLogger(__name__)

DELETION = "deletion"
DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238
MAX_ATTEMPTS = 100
INSERT_CHUNK = 100
SEQ_CACHE_SIZE = 10_000

Doc = dict[str, Any]


@dataclass
class _Slot:
    """One new event waiting for its positions."""

    request: int
    event: NewEvent
    # Feed positions this slot was tried at: an insert reported as failed may still have
    # stored it (a lost reply), and then the stored copy is this slot's own.
    tried: list[int] = field(default_factory=list)


def _conversation(d: Doc) -> Conversation:
    return codec.conversation_from({**d, "conversation_id": d["_id"]})


def _event(d: Doc) -> Event:
    return codec.event_from({**d, "feed_seq": d["_id"]})


def _change(d: Doc) -> Change:
    if d["type"] == DELETION:
        return Change(feed_seq=d["_id"], deletion=codec.deletion_from(d["tenant_id"], d["payload"]))
    return Change(feed_seq=d["_id"], event=_event(d))


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
        self._ttl_backstop = timedelta(seconds=ttl_backstop_s)
        self._seq_cache: OrderedDict[str, int] = OrderedDict()
        self._feed_last: int | None = None
        self._appends: GroupCommitter[AppendRequest, list[AppendResult]] = GroupCommitter(
            self._append_batch
        )

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._client.admin.command("ping")
            await self._ensure_schema()
        except PyMongoError as exc:
            raise StoreError(f"mongodb: {exc}") from exc
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
            [("conversation_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="conv_seq"
        )
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
        await self._meta.update_one(
            {"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True
        )

    async def close(self) -> None:
        await self._appends.stop()
        await self._client.close()

    async def drop_database(self) -> None:
        """Tests only: remove everything this store created."""
        await self._client.drop_database(self._db.name)

    # -- conversations ----------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        fields = codec.conversation_fields(conversation)
        doc = {"_id": fields.pop("conversation_id"), **fields}
        try:
            await self._conversations.insert_one(doc)
            return conversation, True
        except DuplicateKeyError:
            existing = await self._conversations.find_one({"_id": conversation.conversation_id})
            if existing is None or existing["tenant_id"] != conversation.tenant_id:
                raise ConversationIdConflict(conversation.conversation_id) from None
            return _conversation(existing), False
        except PyMongoError as exc:
            raise StoreError(f"mongodb: {exc}") from exc

    async def get_conversation(self, tenant_id: str, conversation_id: str) -> Conversation | None:
        doc = await self._guard(
            self._conversations.find_one({"_id": conversation_id, "tenant_id": tenant_id})
        )
        return _conversation(doc) if doc is not None else None

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
        return _conversation(doc) if doc is not None else None

    async def list_conversations(
        self, tenant_id: str, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        query: Doc = {"tenant_id": tenant_id, "user_ids": user_id}
        if after is not None:
            at, last_id = after
            query["$or"] = [
                {"started_at": {"$lt": at}},
                {"started_at": at, "_id": {"$lt": last_id}},
            ]
        cursor = self._conversations.find(
            query, sort=[("started_at", DESCENDING), ("_id", DESCENDING)], limit=limit
        )
        docs = await self._guard(cursor.to_list())
        return [_conversation(d) for d in docs]

    async def end_conversation(
        self, tenant_id: str, conversation_id: str, reason: str, now: datetime
    ) -> Conversation | None:
        await self._guard(
            self._conversations.update_one(
                {
                    "_id": conversation_id,
                    "tenant_id": tenant_id,
                    "status": ConversationStatus.OPEN.value,
                },
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
        return await self.get_conversation(tenant_id, conversation_id)

    # -- events -----------------------------------------------------------------------

    async def append_events(self, request: AppendRequest) -> list[AppendResult]:
        return await self._appends.submit(request)

    async def _append_batch(
        self, requests: list[AppendRequest]
    ) -> list[list[AppendResult] | BaseException]:
        try:
            return await self._append_group(requests)
        except PyMongoError as exc:
            # A failed round may have stored part of the group: callers retry, and the
            # stored events come back as duplicates with their first sequence numbers.
            self._forget_positions()
            raise StoreError(f"mongodb: {exc}") from exc

    async def _append_group(
        self, requests: list[AppendRequest]
    ) -> list[list[AppendResult] | BaseException]:
        errors: dict[int, BaseException] = {}
        results: list[dict[str, AppendResult]] = [{} for _ in requests]

        conversation_ids = list({r.conversation_id for r in requests})
        conversations = {
            d["_id"]: d
            for d in await self._conversations.find(
                {"_id": {"$in": conversation_ids}}, {"tenant_id": 1, "user_ids": 1}
            ).to_list()
        }
        for i, r in enumerate(requests):
            found = conversations.get(r.conversation_id)
            if found is None or found["tenant_id"] != r.tenant_id:
                errors[i] = ConversationMissing(r.conversation_id)

        # Events stored before (retries): they keep their first sequence numbers.
        wanted: dict[str, list[str]] = {}
        for i, r in enumerate(requests):
            if i not in errors:
                wanted.setdefault(r.tenant_id, []).extend(e.event_id for e in r.events)
        stored: dict[tuple[str, str], Doc] = {}
        if wanted:
            query = {
                "$or": [{"tenant_id": t, "event_id": {"$in": ids}} for t, ids in wanted.items()]
            }
            async for d in self._events.find(
                query, {"tenant_id": 1, "event_id": 1, "conversation_id": 1, "seq": 1}
            ):
                stored[(d["tenant_id"], d["event_id"])] = d

        slots: list[_Slot] = []
        claimed: set[tuple[str, str]] = set()
        for i, r in enumerate(requests):
            if i in errors:
                continue
            for event in r.events:
                key = (r.tenant_id, event.event_id)
                if key in stored:
                    if stored[key]["conversation_id"] != r.conversation_id:
                        errors[i] = EventIdConflict(event.event_id)
                        break
                    results[i][event.event_id] = AppendResult(
                        event.event_id, int(stored[key]["seq"]), True
                    )
                elif key not in claimed:
                    claimed.add(key)
                    slots.append(_Slot(i, event))
        # A request whose event conflicts stores none of its events in this round.
        slots = [s for s in slots if s.request not in errors]

        inserted = await self._insert_slots(requests, conversations, slots, results, errors)
        if inserted:
            await self._touch_conversations(requests, inserted)

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
                    first = next(
                        res[event.event_id]
                        for res in results
                        if event.event_id in res and not res[event.event_id].duplicate
                    )
                    result = AppendResult(event.event_id, first.seq, True)
                per_event.append(result)
            out.append(per_event)
        return out

    async def _insert_slots(
        self,
        requests: list[AppendRequest],
        conversations: dict[str, Doc],
        slots: list[_Slot],
        results: list[dict[str, AppendResult]],
        errors: dict[int, BaseException],
    ) -> dict[str, int]:
        """Insert in order at the next free positions; returns conversation -> last seq."""
        last_seq_written: dict[str, int] = {}
        attempts = 0
        while slots:
            attempts += 1
            if attempts > MAX_ATTEMPTS:
                raise StoreError("mongodb: too much write contention; retry")
            feed = await self._feed_position()
            seqs: dict[str, int] = {}
            docs: list[Doc] = []
            for slot in slots:
                r = requests[slot.request]
                if r.conversation_id not in seqs:
                    seqs[r.conversation_id] = await self._seq_position(r.conversation_id)
                seqs[r.conversation_id] += 1
                feed += 1
                slot.tried.append(feed)
                docs.append(
                    self._event_doc(r, slot.event, feed, seqs[r.conversation_id], conversations)
                )
            done, failure = await self._insert_ordered(docs)
            for slot, doc in zip(slots[:done], docs[:done], strict=True):
                results[slot.request][slot.event.event_id] = AppendResult(
                    slot.event.event_id, doc["seq"], False
                )
                last_seq_written[doc["conversation_id"]] = doc["seq"]
                self._remember(doc["conversation_id"], doc["seq"], doc["_id"])
            slots = slots[done:]
            if failure is None:
                break
            await self._resolve_collision(requests, slots, results, errors)
            slots = [s for s in slots if s.request not in errors]
        return last_seq_written

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

    async def _resolve_collision(
        self,
        requests: list[AppendRequest],
        slots: list[_Slot],
        results: list[dict[str, AppendResult]],
        errors: dict[int, BaseException],
    ) -> None:
        """The first remaining slot hit a unique index: another writer stored that event
        (a concurrent retry), or took the positions (another replica)."""
        slot = slots[0]
        r = requests[slot.request]
        existing = await self._events.find_one(
            {"tenant_id": r.tenant_id, "event_id": slot.event.event_id}
        )
        if existing is not None:
            slots.pop(0)
            if existing["conversation_id"] != r.conversation_id:
                errors[slot.request] = EventIdConflict(slot.event.event_id)
            else:
                # Stored at a position this slot was tried at: our own insert whose reply
                # was lost, not a client's retry.
                ours = existing["_id"] in slot.tried
                results[slot.request][slot.event.event_id] = AppendResult(
                    slot.event.event_id, int(existing["seq"]), not ours
                )
            return
        self._forget_positions(r.conversation_id)

    def _event_doc(
        self,
        r: AppendRequest,
        e: NewEvent,
        feed: int,
        seq: int,
        conversations: dict[str, Doc],
    ) -> Doc:
        doc: Doc = {
            "_id": feed,
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
            "user_ids": conversations[r.conversation_id].get("user_ids") or [],
        }
        if r.expire_at is not None:
            doc["expire_at"] = r.expire_at + self._ttl_backstop
        return doc

    async def _touch_conversations(
        self, requests: list[AppendRequest], last_seqs: dict[str, int]
    ) -> None:
        latest: dict[str, AppendRequest] = {r.conversation_id: r for r in requests}
        updates = []
        for conversation_id, seq in last_seqs.items():
            r = latest[conversation_id]
            fields: Doc = {"updated_at": r.now}
            if r.expire_at is not None:
                fields["expire_at"] = r.expire_at + self._ttl_backstop
            updates.append(
                UpdateOne({"_id": conversation_id}, {"$max": {"last_seq": seq}, "$set": fields})
            )
        await self._conversations.bulk_write(updates, ordered=False)

    async def _feed_position(self) -> int:
        if self._feed_last is None:
            top = await self._events.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
            self._feed_last = int(top["_id"]) if top is not None else 0
        return self._feed_last

    async def _seq_position(self, conversation_id: str) -> int:
        cached = self._seq_cache.get(conversation_id)
        if cached is not None:
            self._seq_cache.move_to_end(conversation_id)
            return cached
        top = await self._events.find_one(
            {"conversation_id": conversation_id}, {"seq": 1}, sort=[("seq", DESCENDING)]
        )
        value = int(top["seq"]) if top is not None else 0
        self._remember(conversation_id, value, None)
        return value

    def _remember(self, conversation_id: str, seq: int, feed: int | None) -> None:
        self._seq_cache[conversation_id] = seq
        self._seq_cache.move_to_end(conversation_id)
        while len(self._seq_cache) > SEQ_CACHE_SIZE:
            self._seq_cache.popitem(last=False)
        if feed is not None:
            self._feed_last = max(self._feed_last or 0, feed)

    def _forget_positions(self, conversation_id: str | None = None) -> None:
        self._feed_last = None
        if conversation_id is None:
            self._seq_cache.clear()
        else:
            self._seq_cache.pop(conversation_id, None)

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
            doc = await self._snapshots.find_one_and_update(
                {"_id": snapshot.conversation_id, "tenant_id": tenant_id},
                {"$set": {"body": body, "created_at": now}, "$inc": {"version": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as exc:
            raise StoreError(f"mongodb: {exc}") from exc
        assert doc is not None
        return codec.snapshot_from(snapshot.conversation_id, int(doc["version"]), now, body)

    async def get_latest_snapshot(self, tenant_id: str, conversation_id: str) -> Snapshot | None:
        doc = await self._guard(
            self._snapshots.find_one({"_id": conversation_id, "tenant_id": tenant_id})
        )
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
        except PyMongoError as exc:
            raise StoreError(f"mongodb: {exc}") from exc
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
        query: Doc = {"_id": {"$gt": after}}
        if tenant_id is not None:
            query["tenant_id"] = tenant_id
        cursor = self._events.find(query, sort=[("_id", ASCENDING)], limit=limit)
        return [_change(d) for d in await self._guard(cursor.to_list())]

    async def feed_head(self, tenant_id: str | None) -> int:
        query: Doc = {} if tenant_id is None else {"tenant_id": tenant_id}
        top = await self._guard(self._events.find_one(query, {"_id": 1}, sort=[("_id", -1)]))
        return int(top["_id"]) if top is not None else 0

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
            {"_id": 1},
            sort=[("updated_at", ASCENDING)],
            limit=limit,
        )
        return [str(d["_id"]) for d in await self._guard(cursor.to_list())]

    async def user_conversation_ids(self, tenant_id: str, user_id: str) -> list[str]:
        cursor = self._conversations.find(
            {"tenant_id": tenant_id, "user_ids": user_id},
            {"_id": 1},
            sort=[("started_at", ASCENDING), ("_id", ASCENDING)],
        )
        return [str(d["_id"]) for d in await self._guard(cursor.to_list())]

    async def record_deletion(self, deletion: Deletion, now: datetime) -> int:
        for _ in range(MAX_ATTEMPTS):
            feed = int(await self._guard(self._feed_position())) + 1
            doc: Doc = {
                "_id": feed,
                "tenant_id": deletion.tenant_id,
                "event_id": uuid7(),
                "conversation_id": "",
                # Markers have no conversation; a unique negative seq keeps (conv, seq) unique.
                "seq": -feed,
                "type": DELETION,
                "payload": codec.deletion_fields(deletion),
                "server_time": now,
            }
            try:
                await self._events.insert_one(doc)
            except DuplicateKeyError:
                self._forget_positions()
                continue
            except PyMongoError as exc:
                raise StoreError(f"mongodb: {exc}") from exc
            self._feed_last = max(self._feed_last or 0, feed)
            return feed
        raise StoreError("mongodb: too much write contention; retry")

    async def delete_conversations(
        self, tenant_id: str, conversation_ids: Sequence[str]
    ) -> tuple[int, int, int]:
        ids = list(conversation_ids)
        if not ids:
            return 0, 0, 0
        scope = {"tenant_id": tenant_id, "conversation_id": {"$in": ids}}
        events = await self._guard(self._events.delete_many(scope))
        snapshots = await self._guard(
            self._snapshots.delete_many({"tenant_id": tenant_id, "_id": {"$in": ids}})
        )
        conversations = await self._guard(
            self._conversations.delete_many({"tenant_id": tenant_id, "_id": {"$in": ids}})
        )
        for conversation_id in ids:
            self._seq_cache.pop(conversation_id, None)
        return conversations.deleted_count, events.deleted_count, snapshots.deleted_count

    async def delete_user_profile(self, tenant_id: str, user_id: str) -> bool:
        result = await self._guard(
            self._users.delete_one({"tenant_id": tenant_id, "user_id": user_id})
        )
        return bool(result.deleted_count)

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    async def _guard(awaitable: Any) -> Any:
        try:
            return await awaitable
        except PyMongoError as exc:
            raise StoreError(f"mongodb: {exc}") from exc
