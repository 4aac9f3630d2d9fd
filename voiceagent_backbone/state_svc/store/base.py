"""The ConversationStore interface and what every implementation shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from voiceagent_backbone.state_svc.model import (
    AppendResult,
    Change,
    Conversation,
    Deletion,
    EmbeddingClaim,
    EmbeddingKey,
    EmbeddingOwner,
    Event,
    EventType,
    FactLimits,
    KnowledgeDocument,
    NewEvent,
    PutOutcome,
    Snapshot,
    StoredEmbedding,
    UserFact,
    UserProfile,
    fact_bytes,
)

# 2: conversation ids are a keyspace per tenant (1 had one for all tenants).
# 3: knowledge documents and user facts. An older build must not run on it: its
#    DeleteUserData would leave the user's facts behind.
SCHEMA_VERSION = 3


class StoreError(Exception):
    """The database failed or is unreachable; the call may be retried."""


class StoreRejected(StoreError):
    """The database refused a value itself (MongoDB's BadValue, DottedFieldName, ...):
    retrying the same request can never succeed."""


class ConversationMissing(Exception):
    """The conversation does not exist for this tenant."""


class FactLimitExceeded(Exception):
    """A put would take a user's facts past a limit (FactLimits)."""

    def __init__(self, what: str, would_be: int, limit: int) -> None:
        super().__init__(f"{what}: {would_be} > {limit}")
        # "facts" (how many) or "bytes" (how much together).
        self.what = what
        self.would_be = would_be
        self.limit = limit


class EventIdConflict(Exception):
    """An event id is already used by another conversation of the tenant."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event id {event_id} belongs to another conversation")
        self.event_id = event_id


@dataclass
class AppendRequest:
    tenant_id: str
    conversation_id: str
    events: list[NewEvent]
    now: datetime
    # When the database's TTL index may remove these events as a backstop (None: never).
    expire_at: datetime | None = None


class ConversationStore(Protocol):
    """Everything state_svc stores. Implementations: SqliteStore, MongoStore.

    Tenancy is explicit in every call: a record of another tenant is never returned, and
    conversation ids are per tenant (two tenants may each have a conversation of one id).
    """

    name: str

    async def open(self) -> None:
        """Create the schema and indexes, or upgrade those of an older schema version
        (idempotent, also when replicas open one database at once); refuse a newer one."""

    async def close(self) -> None: ...

    async def shared_secret(self, name: str, size: int) -> bytes:
        """A random secret of `size` bytes made once per database and then kept: every
        replica on the same database reads the same one (it keys the page tokens)."""

    async def create_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        """Insert, or return the tenant's existing conversation with that id (False) for
        retries."""

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> Conversation | None: ...

    async def find_open_conversation(self, tenant_id: str, room_name: str) -> Conversation | None:
        """The newest open conversation of the room."""

    async def list_conversations(
        self, tenant_id: str, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        """Newest first by (started_at, conversation_id), strictly after `after`."""

    async def end_conversation(
        self, tenant_id: str, conversation_id: str, reason: str, now: datetime
    ) -> Conversation | None: ...

    async def append_events(self, request: AppendRequest) -> list[AppendResult]:
        """Store new events with gapless per-conversation sequence numbers.

        Idempotent by (tenant, event id): a stored event gets its first sequence number back.
        Raises ConversationMissing or EventIdConflict.
        """

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
        """`last_n` > 0: the last N matching events; else events after `after_seq`. Seq order."""

    async def save_snapshot(self, tenant_id: str, snapshot: Snapshot, now: datetime) -> Snapshot:
        """Replace the conversation's snapshot; the version increases by one."""

    async def get_latest_snapshot(
        self, tenant_id: str, conversation_id: str
    ) -> Snapshot | None: ...

    async def upsert_user(
        self, tenant_id: str, profile: UserProfile, now: datetime
    ) -> tuple[UserProfile, bool]:
        """Create or merge (display name when given, preferences key by key)."""

    async def get_user(self, tenant_id: str, user_id: str) -> UserProfile | None: ...

    async def read_feed(self, after: int, limit: int, tenant_id: str | None) -> list[Change]:
        """Changes with a feed position above `after`, in feed order."""

    async def feed_head(self, tenant_id: str | None) -> int:
        """The highest feed position stored (0 when none)."""

    async def feed_head_estimate(self) -> int:
        """A cheap estimate of the highest feed position over all tenants (for lag
        reporting: it may trail the head by the writes of the last moments)."""

    async def set_retention(self, tenant_id: str, seconds: int) -> None: ...

    async def get_retention(self, tenant_id: str) -> int | None:
        """The tenant's own retention period in seconds, None when it has none."""

    async def tenants(self) -> list[str]:
        """Every tenant that has conversations."""

    async def expired_conversations(
        self, tenant_id: str, before: datetime, limit: int
    ) -> list[str]:
        """Conversations whose last activity is older than `before`."""

    async def user_conversation_ids(self, tenant_id: str, user_id: str) -> list[str]: ...

    async def record_deletion(self, deletion: Deletion, now: datetime) -> int:
        """Append a deletion to the feed; returns its feed position."""

    async def delete_conversations(
        self, tenant_id: str, conversation_ids: Sequence[str]
    ) -> tuple[int, int, int, int]:
        """Remove conversations with their events, snapshots and vectors (owner
        CONVERSATION, of every model): (conversations, events, snapshots, vectors) removed."""

    async def delete_user_profile(self, tenant_id: str, user_id: str) -> bool: ...

    # -- embeddings: keyed by (model, tenant, owner, owner id, item id) ------------------

    async def claim_embeddings(
        self,
        model: str,
        keys: Sequence[EmbeddingKey],
        holder: str,
        now: datetime,
        until: datetime,
    ) -> list[EmbeddingClaim]:
        """Per key (distinct keys), atomically: gone when its owner (conversation or
        document) does not exist (nothing claimed); the stored vector; else, when the key
        has no claim, an expired one (until <= now) or one of `holder`, a claim of `holder`
        until `until` (owned); else the other holder's claim. In key order; race-free
        between replicas on one database (of two concurrent claimers one owns a key)."""

    async def put_embeddings(
        self, model: str, embeddings: Sequence[StoredEmbedding], holder: str, now: datetime
    ) -> list[PutOutcome]:
        """Store vectors of distinct keys, per embedding: DROPPED when its owner
        (conversation or document) does not exist, so that a replica behind the feed cannot
        store vectors of deleted data; DUPLICATE when the key had a vector already (the
        first one is kept); else STORED. A stored key's claim is over. The owners are
        looked up once per distinct owner."""

    async def get_embeddings(
        self, model: str, keys: Sequence[EmbeddingKey]
    ) -> dict[EmbeddingKey, bytes]:
        """The stored vectors of those keys (keys without one are absent)."""

    def list_embeddings(
        self, model: str, after: EmbeddingKey | None, page_size: int
    ) -> AsyncIterator[list[StoredEmbedding]]:
        """Every stored vector of the model with a key above `after`, in key order, in
        pages of up to `page_size` (the reading may span many pages: one pass where the
        database allows it)."""

    async def delete_embeddings(
        self, tenant_id: str, owner: EmbeddingOwner, owner_ids: Sequence[str]
    ) -> int:
        """Remove the vectors (and claims) of every model of those owners; how many
        vectors. delete_conversations does it for conversations, delete_document for its
        document."""

    # -- knowledge: every change is announced on the feed (a KnowledgeChange) ------------

    async def put_document(
        self, tenant_id: str, document: KnowledgeDocument, now: datetime
    ) -> KnowledgeDocument:
        """Store or replace the document and announce it; returns it without its text.
        stored_at is `now`, or one microsecond past the replaced version's when that is
        not earlier: every version of a document has a later stored_at than the one
        before."""

    async def get_document(self, tenant_id: str, document_id: str) -> KnowledgeDocument | None:
        """With its text."""

    async def list_documents(
        self, tenant_id: str, after: str, limit: int
    ) -> list[KnowledgeDocument]:
        """Up to `limit` documents with ids above `after`, by id, without their text."""

    async def delete_document(
        self, tenant_id: str, document_id: str, now: datetime
    ) -> tuple[bool, int]:
        """Remove the document and its vectors (owner DOCUMENT) and announce it when it
        existed: (whether it existed, vectors removed)."""

    async def put_facts(
        self,
        tenant_id: str,
        user_id: str,
        facts: Sequence[UserFact],
        now: datetime,
        limits: FactLimits,
    ) -> tuple[list[UserFact], bool]:
        """Create or replace facts of distinct ids: (the stored ones in request order,
        whether any changed). A fact that changed gets updated_at `now`; one sent again
        unchanged keeps its own. Announced when any changed. Raises FactLimitExceeded
        (nothing stored) when the user's facts would exceed `limits`."""

    async def list_facts(self, tenant_id: str, user_id: str) -> list[UserFact]:
        """Every fact of the user, by fact id."""

    async def delete_fact(self, tenant_id: str, user_id: str, fact_id: str, now: datetime) -> bool:
        """Remove one fact and announce it when it existed."""

    async def delete_user_facts(self, tenant_id: str, user_id: str) -> int:
        """Remove every fact of the user (DeleteUserData; its Deletion announces it)."""


def plan_facts(
    current: Mapping[str, UserFact],
    count: int,
    total_bytes: int,
    facts: Sequence[UserFact],
    now: datetime,
    limits: FactLimits,
) -> tuple[list[UserFact], list[UserFact]]:
    """What a put of `facts` stores: (every fact as it will be, in request order; the ones
    to write). `current` holds the stored facts of those ids; `count` and `total_bytes`
    are of all the user's facts. A fact sent again unchanged is not written and keeps its
    updated_at (a retried put changes nothing and announces nothing).

    Raises FactLimitExceeded when the put would take the user past a limit. A put that
    adds nothing (replaces, shrinks) is let through even past a lowered limit."""
    stored: list[UserFact] = []
    changed: list[UserFact] = []
    new_count, new_bytes = count, total_bytes
    for fact in facts:
        old = current.get(fact.fact_id)
        if old is not None and old.same_content(fact):
            stored.append(old)
            continue
        written = replace(fact, updated_at=now)
        stored.append(written)
        changed.append(written)
        new_count += old is None
        new_bytes += fact_bytes(written) - (fact_bytes(old) if old is not None else 0)
    if new_count > limits.max_facts and new_count > count:
        raise FactLimitExceeded("facts", new_count, limits.max_facts)
    if new_bytes > limits.max_bytes and new_bytes > total_bytes:
        raise FactLimitExceeded("bytes", new_bytes, limits.max_bytes)
    return stored, changed


R = TypeVar("R")
Q = TypeVar("Q")


class GroupCommitter(Generic[Q, R]):
    """Runs concurrent requests together: one database round (and one fsync) for many.

    `process` gets a batch and returns, per request, a result or the exception to raise.
    """

    def __init__(
        self,
        process: Callable[[list[Q]], Awaitable[list[R | BaseException]]],
        max_batch: int = 64,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._queue: list[tuple[Q, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, future in self._queue:
            if not future.done():
                future.set_exception(StoreError("store is closing"))
        self._queue.clear()

    async def submit(self, request: Q) -> R:
        if self._task is None:
            raise StoreError("store is not open")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                live = [(q, f) for q, f in batch if not f.cancelled()]
                if not live:
                    continue
                try:
                    results = await self._process([q for q, _ in live])
                except asyncio.CancelledError:
                    for _, future in live:
                        if not future.done():
                            future.set_exception(StoreError("store is closing"))
                    raise
                except Exception as exc:  # the whole round failed: every caller sees it
                    results = [exc] * len(live)
                for (_, future), result in zip(live, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
