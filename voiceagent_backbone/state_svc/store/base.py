"""The ConversationStore interface and what every implementation shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
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
    NewEvent,
    Snapshot,
    StoredEmbedding,
    UserProfile,
)

# 2: conversation ids are a keyspace per tenant (1 had one for all tenants).
SCHEMA_VERSION = 2


class StoreError(Exception):
    """The database failed or is unreachable; the call may be retried."""


class StoreRejected(StoreError):
    """The database refused a value itself (MongoDB's BadValue, DottedFieldName, ...):
    retrying the same request can never succeed."""


class ConversationMissing(Exception):
    """The conversation does not exist for this tenant."""


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
        """Per key (distinct keys), atomically: the stored vector; else, when the key has
        no claim, an expired one (until <= now) or one of `holder`, a claim of `holder`
        until `until` (owned); else the other holder's claim. In key order; race-free
        between replicas on one database (of two concurrent claimers one owns a key)."""

    async def put_embeddings(
        self, model: str, embeddings: Sequence[StoredEmbedding], holder: str, now: datetime
    ) -> list[bool]:
        """Store vectors of distinct keys; per embedding True when the key had a vector
        already (the first one is kept). A stored key's claim is over."""

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
        vectors. delete_conversations does it for conversations; a store of documents
        calls it with DOCUMENT when one is removed."""


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
