"""The gRPC servicer of voiceagent.context.v1.ContextService: wire in, domain call, wire out."""

from __future__ import annotations

import time
from typing import Any

from voiceagent_backbone.api.context.v1 import context_pb2 as pb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.context_svc import metrics, wire
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.domain import ContextDomain
from voiceagent_backbone.servicekit.auth import current_principal
from voiceagent_backbone.servicekit.errors import NotFound, Validator

# Reading the feed position of every tenant is for the platform, not for a tenant.
FEED_SCOPE = "state.feed"


def _tenant() -> str:
    return current_principal().tenant_id


class ContextServicer(context_pb2_grpc.ContextServiceServicer):
    def __init__(self, domain: ContextDomain) -> None:
        self.domain = domain
        self.settings: ContextSettings = domain.settings

    async def Enrich(self, request: pb.EnrichRequest, context: Any) -> pb.EnrichResponse:
        started = time.perf_counter()
        query = wire.enrich_query(request, self.settings.max_query_bytes)
        result = await self.domain.enrich(_tenant(), query, context.time_remaining())
        metrics.ENRICH_SECONDS.observe(time.perf_counter() - started)
        return wire.enrich_response(result)

    # -- knowledge -----------------------------------------------------------------------

    async def IngestDocument(
        self, request: pb.IngestDocumentRequest, context: Any
    ) -> pb.IngestDocumentResponse:
        document = wire.new_document(request, self.settings.max_document_bytes)
        stored = await self.domain.knowledge.ingest_document(_tenant(), document)
        return pb.IngestDocumentResponse(document=wire.document_pb(stored, with_text=False))

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Any
    ) -> pb.DeleteDocumentResponse:
        v = Validator()
        wire.check_item_id(v, "document_id", request.document_id, required=True)
        v.raise_if_any()
        if not await self.domain.knowledge.delete_document(_tenant(), request.document_id):
            raise NotFound(f"document {request.document_id!r} not found")
        return pb.DeleteDocumentResponse(deleted=True)

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: Any
    ) -> pb.ListDocumentsResponse:
        page_token, size = wire.documents_page(request)
        found, next_token = await self.domain.knowledge.list_documents(_tenant(), page_token, size)
        return pb.ListDocumentsResponse(
            documents=[wire.document_pb(d, with_text=False) for d in found],
            next_page_token=next_token,
        )

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: Any
    ) -> pb.GetDocumentResponse:
        v = Validator()
        wire.check_item_id(v, "document_id", request.document_id, required=True)
        v.raise_if_any()
        found = await self.domain.knowledge.get_document(_tenant(), request.document_id)
        if found is None:
            raise NotFound(f"document {request.document_id!r} not found")
        return pb.GetDocumentResponse(document=wire.document_pb(found, with_text=True))

    # -- facts ---------------------------------------------------------------------------

    async def UpsertFacts(
        self, request: pb.UpsertFactsRequest, context: Any
    ) -> pb.UpsertFactsResponse:
        facts = wire.new_facts(request, self.settings.max_fact_bytes)
        stored = await self.domain.knowledge.upsert_facts(_tenant(), request.user_id, facts)
        return pb.UpsertFactsResponse(facts=[wire.fact_pb(f) for f in stored])

    async def ListFacts(self, request: pb.ListFactsRequest, context: Any) -> pb.ListFactsResponse:
        v = Validator()
        wire.check_user(v, "user_id", request.user_id)
        v.raise_if_any()
        found = await self.domain.knowledge.list_facts(_tenant(), request.user_id)
        return pb.ListFactsResponse(facts=[wire.fact_pb(f) for f in found])

    async def DeleteFact(
        self, request: pb.DeleteFactRequest, context: Any
    ) -> pb.DeleteFactResponse:
        v = Validator()
        wire.check_user(v, "user_id", request.user_id)
        wire.check_item_id(v, "fact_id", request.fact_id, required=True)
        v.raise_if_any()
        await self.domain.knowledge.delete_fact(_tenant(), request.user_id, request.fact_id)
        return pb.DeleteFactResponse(deleted=True)

    # -- status --------------------------------------------------------------------------

    async def GetIndexStatus(
        self, request: pb.GetIndexStatusRequest, context: Any
    ) -> pb.GetIndexStatusResponse:
        # Feed progress is the replica's; counts are the caller's tenant's only.
        status = self.domain.status(_tenant())
        platform = current_principal().allows(FEED_SCOPE)
        return wire.index_status_pb(status, with_cursor=platform)
