"""The gRPC servicer of voiceagent.state.v1.StateService: wire in, domain call, wire out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import duration_pb2

from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit.auth import current_principal
from voiceagent_backbone.servicekit.budget import ByteBudget
from voiceagent_backbone.servicekit.errors import PermissionDenied, ResourceExhausted, Validator
from voiceagent_backbone.servicekit.page_tokens import PageTokens
from voiceagent_backbone.state_svc import metrics, wire
from voiceagent_backbone.state_svc.domain import StateDomain, utcnow
from voiceagent_backbone.state_svc.model import (
    Conversation,
    Event,
    PutOutcome,
    Snapshot,
    UserFact,
    UserProfile,
)
from voiceagent_backbone.state_svc.store import codec
from voiceagent_backbone.state_svc.wire import Checks

FEED_SCOPE = "state.feed"
WATCH_REPLY_BYTES = 1024 * 1024
MAX_RETENTION_S = 10 * 366 * 24 * 3600


def _tenant() -> str:
    return current_principal().tenant_id


class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(self, domain: StateDomain, page_tokens: PageTokens) -> None:
        self.domain = domain
        self.tokens = page_tokens
        self.checks = Checks(domain.settings)

    # -- conversations ----------------------------------------------------------------

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: Any
    ) -> pb.CreateConversationResponse:
        conversation = wire.new_conversation(self.checks, request, _tenant(), utcnow())
        stored, created = await self.domain.create_conversation(conversation)
        return pb.CreateConversationResponse(
            conversation=wire.conversation_pb(stored), created=created
        )

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: Any
    ) -> pb.GetConversationResponse:
        v = Validator()
        self.checks.conversation_id(v, "conversation_id", request.conversation_id)
        v.raise_if_any()
        found = await self.domain.get_conversation(_tenant(), request.conversation_id)
        return pb.GetConversationResponse(conversation=wire.conversation_pb(found))

    async def FindOpenConversation(
        self, request: pb.FindOpenConversationRequest, context: Any
    ) -> pb.FindOpenConversationResponse:
        v = Validator()
        self.checks.name(v, "room_name", request.room_name, 256, required=True)
        v.raise_if_any()
        found = await self.domain.find_open_conversation(_tenant(), request.room_name)
        if found is None:
            return pb.FindOpenConversationResponse()
        return pb.FindOpenConversationResponse(conversation=wire.conversation_pb(found))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Any
    ) -> pb.ListConversationsResponse:
        v = Validator()
        self.checks.user_id(v, "user_id", request.user_id)
        self.checks.page_size(v, "page_size", request.page_size, 100)
        fields = wire.page_token(
            v, self.tokens, "conversations", request.page_token, request.user_id
        )
        after = None
        if fields is not None:
            at, conversation_id = fields.get("t"), fields.get("i")
            if not isinstance(at, int) or not isinstance(conversation_id, str):
                v.add("page_token", "is not a page token of this call")
            else:
                started = codec.from_us(at)
                assert started is not None
                after = (started, conversation_id)
        v.raise_if_any()
        size = request.page_size or 20
        found = await self.domain.list_conversations(_tenant(), request.user_id, size + 1, after)
        page = [wire.conversation_pb(c) for c in found[:size]]
        fit = ByteBudget(self.domain.settings.max_message_bytes).fill(page)
        next_token = ""
        if fit < len(found):
            found, page = found[:fit], page[:fit]
            last = found[-1]
            next_token = self.tokens.encode(
                "conversations",
                {
                    "b": request.user_id,
                    "t": codec.to_us(last.started_at),
                    "i": last.conversation_id,
                },
            )
        return pb.ListConversationsResponse(conversations=page, next_page_token=next_token)

    async def EndConversation(
        self, request: pb.EndConversationRequest, context: Any
    ) -> pb.EndConversationResponse:
        v = Validator()
        self.checks.conversation_id(v, "conversation_id", request.conversation_id)
        self.checks.name(v, "reason", request.reason, 256, required=False)
        v.raise_if_any()
        ended = await self.domain.end_conversation(
            _tenant(), request.conversation_id, request.reason
        )
        return pb.EndConversationResponse(conversation=wire.conversation_pb(ended))

    # -- events -----------------------------------------------------------------------

    async def AppendEvents(
        self, request: pb.AppendEventsRequest, context: Any
    ) -> pb.AppendEventsResponse:
        events = wire.new_events(self.checks, request)
        results = await self.domain.append_events(_tenant(), request.conversation_id, events)
        return pb.AppendEventsResponse(
            results=[
                pb.AppendResult(event_id=r.event_id, seq=r.seq, duplicate=r.duplicate)
                for r in results
            ],
            last_seq=max(r.seq for r in results),
        )

    async def GetHistory(
        self, request: pb.GetHistoryRequest, context: Any
    ) -> pb.GetHistoryResponse:
        v = Validator()
        self.checks.conversation_id(v, "conversation_id", request.conversation_id)
        types = wire.event_types(v, "types", request.types)
        if request.last_n < 0 or request.last_n > 1000:
            v.add("last_n", "must be between 0 and 1000")
        self.checks.page_size(v, "page_size", request.page_size, 1000)
        binding = request.conversation_id + "|" + ",".join(str(t) for t in request.types)
        fields = wire.page_token(v, self.tokens, "history", request.page_token, binding)
        after_seq = 0
        if fields is not None:
            seq = fields.get("s")
            if not isinstance(seq, int) or seq < 0:
                v.add("page_token", "is not a page token of this call")
            else:
                after_seq = seq
        v.raise_if_any()
        size = request.page_size or 100
        # A page token continues after the last event returned, also for a last_n call
        # whose events did not fit in one reply.
        last_n = request.last_n if fields is None else 0
        conversation, events = await self.domain.get_history(
            _tenant(),
            request.conversation_id,
            types,
            last_n=last_n,
            after_seq=after_seq,
            limit=size + 1,
        )
        page = [wire.event_pb(e) for e in (events if last_n > 0 else events[:size])]
        fit = ByteBudget(self.domain.settings.max_message_bytes).fill(page)
        next_token = ""
        if fit < len(events):
            page = page[:fit]
            next_token = self.tokens.encode("history", {"b": binding, "s": page[-1].seq})
        return pb.GetHistoryResponse(
            events=page, next_page_token=next_token, last_seq=conversation.last_seq
        )

    # -- snapshots and users ----------------------------------------------------------

    async def SaveSnapshot(
        self, request: pb.SaveSnapshotRequest, context: Any
    ) -> pb.SaveSnapshotResponse:
        snapshot = wire.snapshot(self.checks, request)
        saved = await self.domain.save_snapshot(_tenant(), snapshot)
        return pb.SaveSnapshotResponse(snapshot=wire.snapshot_pb(saved))

    async def GetLatestSnapshot(
        self, request: pb.GetLatestSnapshotRequest, context: Any
    ) -> pb.GetLatestSnapshotResponse:
        v = Validator()
        self.checks.conversation_id(v, "conversation_id", request.conversation_id)
        v.raise_if_any()
        found = await self.domain.get_latest_snapshot(_tenant(), request.conversation_id)
        if found is None:
            return pb.GetLatestSnapshotResponse()
        return pb.GetLatestSnapshotResponse(snapshot=wire.snapshot_pb(found))

    async def UpsertUser(
        self, request: pb.UpsertUserRequest, context: Any
    ) -> pb.UpsertUserResponse:
        profile = wire.user_profile(self.checks, request)
        stored, created = await self.domain.upsert_user(_tenant(), profile)
        return pb.UpsertUserResponse(user=wire.user_pb(stored), created=created)

    async def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.GetUserResponse:
        v = Validator()
        self.checks.user_id(v, "user_id", request.user_id)
        v.raise_if_any()
        return pb.GetUserResponse(
            user=wire.user_pb(await self.domain.get_user(_tenant(), request.user_id))
        )

    # -- the change feed --------------------------------------------------------------

    async def Watch(self, request: pb.WatchRequest, context: Any) -> None:
        """Written with context.write, not yielded: a reply the consumer does not take within
        watch_send_timeout_s ends the stream (RESOURCE_EXHAUSTED), so a stalled consumer
        holds no memory and no hub position for ever."""
        v = Validator()
        principal = current_principal()
        platform = principal.allows(FEED_SCOPE)
        after = wire.cursor_from(v, self.tokens, request.cursor, platform=platform)
        if request.max_batch < 0 or request.max_batch > 1000:
            v.add("max_batch", "must be between 0 and 1000")
        v.raise_if_any()
        tenant: str | None = principal.tenant_id
        if request.all_tenants:
            if not platform:
                raise PermissionDenied(f"following every tenant needs the scope {FEED_SCOPE!r}")
            tenant = None
        # Replies of at most 1 MiB: what a stalled consumer's stream can hold.
        limit = min(self.domain.settings.max_message_bytes, WATCH_REPLY_BYTES)
        timeout_s = self.domain.settings.watch_send_timeout_s
        metrics.WATCH_STREAMS.inc()
        try:
            async for changes, caught_up, backlog in self.domain.watch(
                after, tenant, request.max_batch or 100, request.stop_at_end
            ):
                items = [wire.change_pb(change, self.tokens) for change in changes]
                # A batch that does not fit in one reply goes out as several, in order;
                # only the last says caught_up, each counts what follows it in its backlog.
                while True:
                    fit = ByteBudget(limit).fill(items)
                    rest = items[fit:]
                    reply = pb.WatchResponse(
                        changes=items[:fit],
                        caught_up=caught_up and not rest,
                        backlog=backlog + len(rest),
                    )
                    try:
                        await asyncio.wait_for(context.write(reply), timeout_s)
                    except TimeoutError:
                        metrics.WATCH_CUT_OFF.inc()
                        raise ResourceExhausted(
                            f"the consumer took no reply for {timeout_s:.0f}s; "
                            "resume from the last cursor received"
                        ) from None
                    if not rest:
                        break
                    items = rest
        finally:
            metrics.WATCH_STREAMS.dec()

    # -- retention, export, delete ----------------------------------------------------

    async def SetRetentionPolicy(
        self, request: pb.SetRetentionPolicyRequest, context: Any
    ) -> pb.SetRetentionPolicyResponse:
        v = Validator()
        seconds = request.retention.seconds
        if not request.HasField("retention"):
            v.add("retention", "is required (0s keeps data forever)")
        elif seconds < 0 or request.retention.nanos < 0:
            v.add("retention", "must not be negative")
        elif seconds > MAX_RETENTION_S:
            v.add("retention", "must be at most 10 years")
        elif 0 < seconds < 60:
            v.add("retention", "must be 0 (forever) or at least 60s")
        v.raise_if_any()
        await self.domain.set_retention(_tenant(), int(seconds))
        return pb.SetRetentionPolicyResponse(retention=duration_pb2.Duration(seconds=seconds))

    async def GetRetentionPolicy(
        self, request: pb.GetRetentionPolicyRequest, context: Any
    ) -> pb.GetRetentionPolicyResponse:
        seconds, is_default = await self.domain.get_retention(_tenant())
        return pb.GetRetentionPolicyResponse(
            retention=duration_pb2.Duration(seconds=seconds), is_default=is_default
        )

    async def ExportUserData(
        self, request: pb.ExportUserDataRequest, context: Any
    ) -> AsyncIterator[pb.ExportUserDataResponse]:
        v = Validator()
        self.checks.user_id(v, "user_id", request.user_id)
        v.raise_if_any()
        async for item in self.domain.export_user(_tenant(), request.user_id):
            if isinstance(item, UserProfile):
                yield pb.ExportUserDataResponse(user=wire.user_pb(item))
            elif isinstance(item, UserFact):
                # What the user was told about, not the vector computed from it.
                yield pb.ExportUserDataResponse(fact=wire.fact_pb(item, with_vector=False))
            elif isinstance(item, Conversation):
                yield pb.ExportUserDataResponse(conversation=wire.conversation_pb(item))
            elif isinstance(item, Event):
                yield pb.ExportUserDataResponse(event=wire.event_pb(item))
            elif isinstance(item, Snapshot):
                yield pb.ExportUserDataResponse(snapshot=wire.snapshot_pb(item))

    async def DeleteUserData(
        self, request: pb.DeleteUserDataRequest, context: Any
    ) -> pb.DeleteUserDataResponse:
        v = Validator()
        self.checks.user_id(v, "user_id", request.user_id)
        v.raise_if_any()
        counts = await self.domain.delete_user(_tenant(), request.user_id)
        return pb.DeleteUserDataResponse(
            conversations_deleted=counts.conversations,
            events_deleted=counts.events,
            snapshots_deleted=counts.snapshots,
            profile_deleted=counts.profile,
            embeddings_deleted=counts.embeddings,
            facts_deleted=counts.facts,
        )

    # -- embeddings (platform calls: scope state.index, tenants named in the keys) -------

    async def ClaimEmbeddings(
        self, request: pb.ClaimEmbeddingsRequest, context: Any
    ) -> pb.ClaimEmbeddingsResponse:
        keys, lease_ms = wire.claim_embeddings(self.checks, request)
        claims = await self.domain.claim_embeddings(request.model, keys, request.holder, lease_ms)
        return pb.ClaimEmbeddingsResponse(claims=[wire.embedding_claim_pb(c) for c in claims])

    async def PutEmbeddings(
        self, request: pb.PutEmbeddingsRequest, context: Any
    ) -> pb.PutEmbeddingsResponse:
        embeddings = wire.put_embeddings(self.checks, request)
        outcomes = await self.domain.put_embeddings(request.model, embeddings, request.holder)
        return pb.PutEmbeddingsResponse(
            results=[
                pb.PutEmbeddingResult(
                    key=wire.embedding_key_pb(e.key),
                    duplicate=outcome is PutOutcome.DUPLICATE,
                    dropped=outcome is PutOutcome.DROPPED,
                )
                for e, outcome in zip(embeddings, outcomes, strict=True)
            ]
        )

    async def GetEmbeddings(
        self, request: pb.GetEmbeddingsRequest, context: Any
    ) -> pb.GetEmbeddingsResponse:
        v = Validator()
        wire.embedding_model(self.checks, v, request.model)
        keys = wire.embedding_keys(v, "keys", request.keys)
        v.raise_if_any()
        found = await self.domain.get_embeddings(request.model, keys)
        # 1000 vectors of 16 KiB are more than one reply holds: the rest are named.
        reply = [wire.embedding_pb(k, found[k]) for k in keys if k in found]
        fit = ByteBudget(self.domain.settings.max_message_bytes).fill(reply)
        return pb.GetEmbeddingsResponse(
            embeddings=reply[:fit], not_returned=[e.key for e in reply[fit:]]
        )

    async def ListEmbeddings(
        self, request: pb.ListEmbeddingsRequest, context: Any
    ) -> AsyncIterator[pb.ListEmbeddingsResponse]:
        v = Validator()
        wire.embedding_model(self.checks, v, request.model)
        self.checks.page_size(v, "page_size", request.page_size, 1000)
        after = wire.embedding_after(v, self.tokens, request.page_token, request.model)
        v.raise_if_any()
        budget = self.domain.settings.max_message_bytes
        pages = self.domain.list_embeddings(request.model, after, request.page_size or 500)
        try:
            # One page read ahead: the last reply is known as the last (no token).
            stored = await anext(pages, None)
            if stored is None:
                yield pb.ListEmbeddingsResponse()
            while stored is not None:
                following = await anext(pages, None)
                items = [wire.embedding_pb(e.key, e.vector) for e in stored]
                # A page larger than a reply goes out as several, each with its own token.
                while items:
                    fit = ByteBudget(budget).fill(items)
                    page, items = items[:fit], items[fit:]
                    token = ""
                    if items or following is not None:
                        last = stored[len(stored) - len(items) - 1].key
                        token = wire.embedding_token(self.tokens, request.model, last)
                    yield pb.ListEmbeddingsResponse(embeddings=page, next_page_token=token)
                stored = following
        finally:
            await pages.aclose()

    # -- knowledge (platform calls: scope state.knowledge, the tenant named in the request)

    async def PutDocument(
        self, request: pb.PutDocumentRequest, context: Any
    ) -> pb.PutDocumentResponse:
        document = wire.new_document(self.checks, request)
        stored = await self.domain.put_document(request.tenant_id, document)
        # Without its text: the caller has it (up to STATE_MAX_DOCUMENT_BYTES) already.
        return pb.PutDocumentResponse(document=wire.document_pb(stored))

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: Any
    ) -> pb.GetDocumentResponse:
        tenant_id, document_id = wire.document_ref(self.checks, request)
        found = await self.domain.get_document(tenant_id, document_id)
        return pb.GetDocumentResponse(document=wire.document_pb(found))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: Any
    ) -> pb.ListDocumentsResponse:
        after, size = wire.documents_page(self.checks, self.tokens, request)
        found = await self.domain.list_documents(request.tenant_id, after, size + 1)
        page = [wire.document_pb(d) for d in found[:size]]
        # Up to 1,000 documents of 16 KiB of metadata each: more than one reply holds.
        fit = ByteBudget(self.domain.settings.max_message_bytes).fill(page)
        next_token = ""
        if fit < len(found):
            page = page[:fit]
            next_token = wire.documents_token(self.tokens, request.tenant_id, page[-1].document_id)
        return pb.ListDocumentsResponse(documents=page, next_page_token=next_token)

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Any
    ) -> pb.DeleteDocumentResponse:
        tenant_id, document_id = wire.document_ref(self.checks, request)
        deleted = await self.domain.delete_document(tenant_id, document_id)
        return pb.DeleteDocumentResponse(deleted=deleted)

    async def PutFacts(self, request: pb.PutFactsRequest, context: Any) -> pb.PutFactsResponse:
        facts = wire.new_facts(self.checks, request)
        stored = await self.domain.put_facts(request.tenant_id, request.user_id, facts)
        return pb.PutFactsResponse(facts=[wire.fact_pb(f) for f in stored])

    async def ListFacts(self, request: pb.ListFactsRequest, context: Any) -> pb.ListFactsResponse:
        tenant_id, user_id = wire.user_facts_ref(self.checks, request)
        # One reply holds them all: PutFacts keeps a user's facts within it (FactLimits).
        found = await self.domain.list_facts(tenant_id, user_id)
        return pb.ListFactsResponse(facts=[wire.fact_pb(f) for f in found])

    async def DeleteFact(
        self, request: pb.DeleteFactRequest, context: Any
    ) -> pb.DeleteFactResponse:
        tenant_id, user_id, fact_id = wire.fact_ref(self.checks, request)
        deleted = await self.domain.delete_fact(tenant_id, user_id, fact_id)
        return pb.DeleteFactResponse(deleted=deleted)
