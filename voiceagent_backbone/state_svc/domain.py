"""state_svc's domain logic: tenancy, idempotency, the feed, retention, export and delete.

The servicer hands it validated domain objects and the caller's tenant; it talks to the
store and raises servicekit domain errors the edge maps to status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from voiceagent_backbone.servicekit.budget import ByteBudget
from voiceagent_backbone.servicekit.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from voiceagent_backbone.servicekit.page_tokens import PageTokens
from voiceagent_backbone.state_svc import metrics
from voiceagent_backbone.state_svc.config import StateSettings
from voiceagent_backbone.state_svc.feed import FeedHub, FeedSignal
from voiceagent_backbone.state_svc.model import (
    AppendResult,
    Change,
    Conversation,
    DeleteCounts,
    Deletion,
    DeletionReason,
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
)
from voiceagent_backbone.state_svc.store.base import (
    AppendRequest,
    ConversationMissing,
    ConversationStore,
    EventIdConflict,
    FactLimitExceeded,
    StoreError,
    StoreRejected,
)

log = logging.getLogger(__name__)

EXPORT_PAGE = 500
# A user's facts are one document on MongoDB (16 MiB at most), whatever the message limit.
MAX_FACTS_BYTES = 8 * 1024 * 1024
# How long a replica trusts its copy of a tenant's retention period.
RETENTION_CACHE_S = 60.0


def utcnow() -> datetime:
    """Now, in milliseconds: what MongoDB stores, so both stores return the same times."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def utcnow_us() -> datetime:
    """Now, in microseconds: document versions, which both stores keep as integers."""
    return datetime.now(UTC)


class StateDomain:
    def __init__(
        self, store: ConversationStore, settings: StateSettings, page_tokens: PageTokens
    ) -> None:
        self.store = store
        self.settings = settings
        # Kept here for the servicer: the key comes from the store this domain owns.
        self.page_tokens = page_tokens
        self.feed = FeedSignal()
        self.hub = FeedHub(
            store,
            self.feed,
            poll_interval_s=settings.feed_poll_interval_s,
            window_bytes=settings.feed_window_bytes,
            catch_up_readers=settings.feed_catch_up_readers,
        )
        self._backend = store.name
        # tenant -> (retention seconds, when read): appends need it for the TTL backstop.
        self._retention_cache: dict[str, tuple[int, float]] = {}
        # Every fact of a user is answered in one ListFacts reply: they must fit in it.
        self.fact_limits = FactLimits(
            settings.max_facts_per_user,
            min(ByteBudget(settings.max_message_bytes).limit, MAX_FACTS_BYTES),
        )

    @contextlib.asynccontextmanager
    async def _op(self, operation: str) -> AsyncIterator[None]:
        """A timed store operation; a database failure becomes UNAVAILABLE (retryable), a
        value the database refuses INVALID_ARGUMENT (see _store_failure)."""
        try:
            async with metrics.timed(operation, self._backend):
                yield
        except StoreError as exc:
            raise _store_failure(exc) from exc

    # -- conversations ----------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> tuple[Conversation, bool]:
        async with self._op("create_conversation"):
            return await self.store.create_conversation(conversation)

    async def get_conversation(self, tenant_id: str, conversation_id: str) -> Conversation:
        async with self._op("get_conversation"):
            found = await self.store.get_conversation(tenant_id, conversation_id)
        if found is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return found

    async def find_open_conversation(self, tenant_id: str, room_name: str) -> Conversation | None:
        async with self._op("find_open_conversation"):
            return await self.store.find_open_conversation(tenant_id, room_name)

    async def list_conversations(
        self, tenant_id: str, user_id: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[Conversation]:
        async with self._op("list_conversations"):
            return await self.store.list_conversations(tenant_id, user_id, limit, after)

    async def end_conversation(
        self, tenant_id: str, conversation_id: str, reason: str
    ) -> Conversation:
        async with self._op("end_conversation"):
            ended = await self.store.end_conversation(tenant_id, conversation_id, reason, utcnow())
        if ended is None:
            raise NotFound(f"conversation {conversation_id} not found")
        return ended

    # -- events -----------------------------------------------------------------------

    async def append_events(
        self, tenant_id: str, conversation_id: str, events: list[NewEvent]
    ) -> list[AppendResult]:
        now = utcnow()
        retention = await self._cached_retention(tenant_id)
        expire_at = now + timedelta(seconds=retention) if retention > 0 else None
        request = AppendRequest(tenant_id, conversation_id, events, now, expire_at)
        try:
            async with metrics.timed("append_events", self._backend):
                results = await self.store.append_events(request)
        except ConversationMissing as exc:
            raise NotFound(f"conversation {conversation_id} not found") from exc
        except EventIdConflict as exc:
            raise AlreadyExists(str(exc)) from exc
        except StoreError as exc:
            log.warning("append failed; the client may retry", extra={"error": str(exc)})
            raise _store_failure(exc) from exc
        for event, result in zip(events, results, strict=True):
            if result.duplicate:
                metrics.EVENTS_DUPLICATE.inc()
            else:
                metrics.EVENTS_APPENDED.labels(event.type.value).inc()
        if any(not r.duplicate for r in results):
            self.feed.notify()
        return results

    async def get_history(
        self,
        tenant_id: str,
        conversation_id: str,
        types: Sequence[EventType],
        *,
        last_n: int,
        after_seq: int,
        limit: int,
    ) -> tuple[Conversation, list[Event]]:
        conversation = await self.get_conversation(tenant_id, conversation_id)
        async with self._op("get_history"):
            events = await self.store.get_history(
                tenant_id,
                conversation_id,
                types,
                last_n=last_n,
                after_seq=after_seq,
                limit=limit,
            )
        return conversation, events

    # -- snapshots and users ----------------------------------------------------------

    async def save_snapshot(self, tenant_id: str, snapshot: Snapshot) -> Snapshot:
        await self.get_conversation(tenant_id, snapshot.conversation_id)
        async with self._op("save_snapshot"):
            return await self.store.save_snapshot(tenant_id, snapshot, utcnow())

    async def get_latest_snapshot(self, tenant_id: str, conversation_id: str) -> Snapshot | None:
        await self.get_conversation(tenant_id, conversation_id)
        async with self._op("get_latest_snapshot"):
            return await self.store.get_latest_snapshot(tenant_id, conversation_id)

    async def upsert_user(self, tenant_id: str, profile: UserProfile) -> tuple[UserProfile, bool]:
        async with self._op("upsert_user"):
            return await self.store.upsert_user(tenant_id, profile, utcnow())

    async def get_user(self, tenant_id: str, user_id: str) -> UserProfile:
        async with self._op("get_user"):
            found = await self.store.get_user(tenant_id, user_id)
        if found is None:
            raise NotFound(f"user {user_id} not found")
        return found

    # -- the change feed --------------------------------------------------------------

    async def watch(
        self,
        after: int,
        tenant_id: str | None,
        batch: int,
        stop_at_end: bool,
    ) -> AsyncIterator[tuple[list[Change], bool, int]]:
        """Yields (changes, caught_up, backlog), from the replica's feed hub (feed.py).

        backlog is how many feed positions (every tenant's, and tombstones) lie beyond the
        last change yielded: consumers report it as their lag. A stream with nothing new
        for `watch_heartbeat_s` yields an empty heartbeat: writing it is how the server
        learns that a consumer went away (gRPC does not always tell a handler that only
        waits), and it keeps idle connections alive through proxies."""
        hub = self.hub
        try:
            await hub.start()
            if stop_at_end:
                # Everything acknowledged before this call, on any replica, is in the answer.
                await hub.refresh()
        except StoreError as exc:
            raise _store_failure(exc) from exc
        cursor = after
        caught_up_sent = False
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        while True:
            try:
                changes, cursor = await hub.read(cursor, batch, tenant_id)
            except StoreError as exc:
                raise _store_failure(exc) from exc
            caught_up = cursor >= hub.head
            backlog = max(0, hub.head - cursor)
            if changes or (caught_up and not caught_up_sent):
                yield changes, caught_up and not caught_up_sent, backlog
                last_yield = loop.time()
            elif loop.time() - last_yield >= self.settings.watch_heartbeat_s:
                yield [], False, backlog
                last_yield = loop.time()
            caught_up_sent = caught_up_sent or caught_up
            if caught_up and stop_at_end:
                return
            if caught_up:
                await hub.wait_beyond(cursor, self.settings.feed_poll_interval_s * 4)

    async def aclose(self) -> None:
        await self.hub.aclose()

    async def feed_head(self, tenant_id: str | None) -> int:
        try:
            return await self.store.feed_head(tenant_id)
        except StoreError as exc:
            raise _store_failure(exc) from exc

    # -- retention, export, delete ----------------------------------------------------

    async def set_retention(self, tenant_id: str, seconds: int) -> None:
        try:
            await self.store.set_retention(tenant_id, seconds)
        except StoreError as exc:
            raise _store_failure(exc) from exc
        self._retention_cache.pop(tenant_id, None)

    async def _cached_retention(self, tenant_id: str) -> int:
        cached = self._retention_cache.get(tenant_id)
        loop_time = asyncio.get_running_loop().time()
        if cached is not None and loop_time - cached[1] < RETENTION_CACHE_S:
            return cached[0]
        seconds, _ = await self.get_retention(tenant_id)
        self._retention_cache[tenant_id] = (seconds, loop_time)
        return seconds

    async def get_retention(self, tenant_id: str) -> tuple[int, bool]:
        try:
            own = await self.store.get_retention(tenant_id)
        except StoreError as exc:
            raise _store_failure(exc) from exc
        if own is None:
            return self.settings.default_retention_s, True
        return own, False

    async def sweep_retention(self, now: datetime | None = None) -> int:
        """Remove every conversation past its tenant's retention; returns how many."""
        now = now or utcnow()
        removed = 0
        for tenant_id in await self.store.tenants():
            retention, _ = await self.get_retention(tenant_id)
            if retention <= 0:
                continue
            cutoff = now - timedelta(seconds=retention)
            while True:
                expired = await self.store.expired_conversations(tenant_id, cutoff, 200)
                if not expired:
                    break
                # Announce first: if we crash after it, the next sweep deletes again and
                # announces again (consumers treat deletions as idempotent); the other
                # order could lose the announcement.
                await self.store.record_deletion(
                    Deletion(tenant_id, DeletionReason.RETENTION, "", expired), now
                )
                # Their vectors go with them (delete_conversations).
                await self.store.delete_conversations(tenant_id, expired)
                self.feed.notify()
                removed += len(expired)
                metrics.RETENTION_DELETED.inc(len(expired))
        if removed:
            log.info("retention removed conversations", extra={"conversations": removed})
        return removed

    async def run_retention(self) -> None:
        """The background sweeper; every replica runs it, deletions are idempotent."""
        while True:
            try:
                await self.sweep_retention()
            except Exception:
                log.exception("retention sweep failed; retrying at the next interval")
            await asyncio.sleep(self.settings.retention_sweep_interval_s)

    async def export_user(
        self, tenant_id: str, user_id: str
    ) -> AsyncIterator[UserProfile | UserFact | Conversation | Event | Snapshot]:
        try:
            profile = await self.store.get_user(tenant_id, user_id)
            if profile is not None:
                yield profile
            for fact in await self.store.list_facts(tenant_id, user_id):
                yield fact
            for conversation_id in await self.store.user_conversation_ids(tenant_id, user_id):
                conversation = await self.store.get_conversation(tenant_id, conversation_id)
                if conversation is None:
                    continue
                yield conversation
                after = 0
                while True:
                    events = await self.store.get_history(
                        tenant_id, conversation_id, (), after_seq=after, limit=EXPORT_PAGE
                    )
                    for event in events:
                        yield event
                    if len(events) < EXPORT_PAGE:
                        break
                    after = events[-1].seq
                snapshot = await self.store.get_latest_snapshot(tenant_id, conversation_id)
                if snapshot is not None:
                    yield snapshot
        except StoreError as exc:
            raise _store_failure(exc) from exc

    async def delete_user(self, tenant_id: str, user_id: str) -> DeleteCounts:
        """Every conversation the user took part in, its events and snapshot, the profile,
        the facts and the user's vectors. The Deletion names the user: readers drop the
        user's facts on it (no KnowledgeChange of its own)."""
        try:
            conversation_ids = await self.store.user_conversation_ids(tenant_id, user_id)
            await self.store.record_deletion(
                Deletion(tenant_id, DeletionReason.USER_REQUEST, user_id, conversation_ids),
                utcnow(),
            )
            conversations, events, snapshots, vectors = await self.store.delete_conversations(
                tenant_id, conversation_ids
            )
            vectors += await self.store.delete_embeddings(tenant_id, EmbeddingOwner.USER, [user_id])
            facts = await self.store.delete_user_facts(tenant_id, user_id)
            profile = await self.store.delete_user_profile(tenant_id, user_id)
        except StoreError as exc:
            raise _store_failure(exc) from exc
        self.feed.notify()
        metrics.USER_DELETIONS.inc()
        log.info(
            "user data deleted",
            extra={
                "conversations": conversations,
                "events": events,
                "snapshots": snapshots,
                "embeddings": vectors,
                "facts": facts,
            },
        )
        return DeleteCounts(conversations, events, snapshots, profile, vectors, facts)

    # -- embeddings -------------------------------------------------------------------

    async def claim_embeddings(
        self, model: str, keys: Sequence[EmbeddingKey], holder: str, lease_ms: int
    ) -> list[EmbeddingClaim]:
        now = utcnow()
        until = now + timedelta(milliseconds=lease_ms)
        async with self._op("claim_embeddings"):
            claims = await self.store.claim_embeddings(model, keys, holder, now, until)
        for claim in claims:
            metrics.EMBEDDING_CLAIMS.labels(_claim_outcome(claim)).inc()
        return claims

    async def put_embeddings(
        self, model: str, embeddings: Sequence[StoredEmbedding], holder: str
    ) -> list[PutOutcome]:
        async with self._op("put_embeddings"):
            outcomes = await self.store.put_embeddings(model, embeddings, holder, utcnow())
        metrics.EMBEDDINGS_STORED.inc(outcomes.count(PutOutcome.STORED))
        metrics.EMBEDDINGS_DROPPED.inc(outcomes.count(PutOutcome.DROPPED))
        return outcomes

    async def get_embeddings(
        self, model: str, keys: Sequence[EmbeddingKey]
    ) -> dict[EmbeddingKey, bytes]:
        async with self._op("get_embeddings"):
            return await self.store.get_embeddings(model, keys)

    async def list_embeddings(
        self, model: str, after: EmbeddingKey | None, page_size: int
    ) -> AsyncGenerator[list[StoredEmbedding], None]:
        pages = self.store.list_embeddings(model, after, page_size)
        try:
            while True:
                async with self._op("list_embeddings"):
                    page = await anext(pages, None)
                if page is None:
                    return
                yield page
        finally:
            await _close(pages)

    # -- knowledge (platform calls: the tenant is named in the request) -----------------

    async def put_document(self, tenant_id: str, document: KnowledgeDocument) -> KnowledgeDocument:
        async with self._op("put_document"):
            stored = await self.store.put_document(tenant_id, document, utcnow_us())
        self._announced("document_put")
        return stored

    async def get_document(self, tenant_id: str, document_id: str) -> KnowledgeDocument:
        async with self._op("get_document"):
            found = await self.store.get_document(tenant_id, document_id)
        if found is None:
            raise NotFound(f"document {document_id} not found")
        return found

    async def list_documents(
        self, tenant_id: str, after: str, limit: int
    ) -> list[KnowledgeDocument]:
        async with self._op("list_documents"):
            return await self.store.list_documents(tenant_id, after, limit)

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        """The document and its passages' vectors."""
        async with self._op("delete_document"):
            deleted, _ = await self.store.delete_document(tenant_id, document_id, utcnow())
        if deleted:
            self._announced("document_deleted")
        return deleted

    async def put_facts(
        self, tenant_id: str, user_id: str, facts: Sequence[UserFact]
    ) -> list[UserFact]:
        limits = self.fact_limits
        try:
            async with self._op("put_facts"):
                stored, changed = await self.store.put_facts(
                    tenant_id, user_id, facts, utcnow(), limits
                )
        except FactLimitExceeded as exc:
            raise _fact_limit(user_id, exc, limits) from exc
        if changed:
            self._announced("facts_put")
        return stored

    async def list_facts(self, tenant_id: str, user_id: str) -> list[UserFact]:
        async with self._op("list_facts"):
            return await self.store.list_facts(tenant_id, user_id)

    async def delete_fact(self, tenant_id: str, user_id: str, fact_id: str) -> bool:
        async with self._op("delete_fact"):
            deleted = await self.store.delete_fact(tenant_id, user_id, fact_id, utcnow())
        if deleted:
            self._announced("fact_deleted")
        return deleted

    def _announced(self, kind: str) -> None:
        """A knowledge change was written to the feed: wake this replica's feed hub."""
        self.feed.notify()
        metrics.KNOWLEDGE_CHANGES.labels(kind).inc()


def _claim_outcome(claim: EmbeddingClaim) -> str:
    if claim.gone:
        return "gone"
    if claim.vector is not None:
        return "stored"
    return "owned" if claim.owned else "held"


def _fact_limit(user_id: str, exc: FactLimitExceeded, limits: FactLimits) -> FailedPrecondition:
    if exc.what == "facts":
        return FailedPrecondition(
            f"user {user_id} would have {exc.would_be} facts; at most {limits.max_facts} "
            "are allowed (STATE_MAX_FACTS_PER_USER): delete some first"
        )
    return FailedPrecondition(
        f"the facts of user {user_id} would take {exc.would_be} bytes; at most "
        f"{limits.max_bytes} fit in the one ListFacts reply that answers them all (set by "
        "STATE_MAX_MESSAGE_BYTES): delete some, or store shorter texts or vectors"
    )


async def _close(iterator: AsyncIterator[object]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _store_failure(exc: StoreError) -> DomainError:
    """UNAVAILABLE for what a retry may cure; INVALID_ARGUMENT for a value the database
    refuses, which no retry cures (a client retrying UNAVAILABLE would loop for ever)."""
    if isinstance(exc, StoreRejected):
        return InvalidArgument.single("request", f"the database refused a value: {exc}")
    return Unavailable(str(exc))
