"""The gRPC servicer of voiceagent.context.v1.ContextService: validate, call the domain, reply.

Every bound is checked before the domain sees a request, and every bad field of a request
is named at once (INVALID_ARGUMENT with BadRequest field violations).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from voiceagent_backbone.api.context.v1 import context_pb2 as pb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.context_svc import metrics
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.domain import ContextDomain, NewFact
from voiceagent_backbone.context_svc.index import Hit, Source
from voiceagent_backbone.context_svc.store import DocumentRow, FactRow
from voiceagent_backbone.servicekit.auth import current_principal
from voiceagent_backbone.servicekit.budget import ByteBudget
from voiceagent_backbone.servicekit.errors import NotFound, Validator
from voiceagent_backbone.servicekit.ids import is_uuid, uuid7

_USER_ID = re.compile(r"^[A-Za-z0-9._:@+\-]{1,128}$")
_ITEM_ID = re.compile(r"^[A-Za-z0-9._:@+\-/]{1,128}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SOURCE_OF = {
    pb.SOURCE_KIND_MEMORY: Source.MEMORY,
    pb.SOURCE_KIND_KNOWLEDGE: Source.KNOWLEDGE,
    pb.SOURCE_KIND_FACT: Source.FACT,
}
_KIND_OF = {v: k for k, v in _SOURCE_OF.items()}
MAX_ITEMS, DEFAULT_ITEMS = 50, 8
MAX_TOKEN_BUDGET, DEFAULT_TOKEN_BUDGET = 32_000, 512
MAX_FACTS_PER_CALL = 100
# Reading the feed position of every tenant is for the platform, not for a tenant.
FEED_SCOPE = "state.feed"
MAX_METADATA_BYTES = 16 * 1024
MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE = 100, 20


def _tenant() -> str:
    return current_principal().tenant_id


def _timestamp(at_us: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=at_us // 1_000_000, nanos=(at_us % 1_000_000) * 1000)


def _check_user(v: Validator, field: str, value: str, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "must not be empty")
    elif not _USER_ID.match(value):
        v.add(field, "must be 1-128 characters of letters, digits and . _ : @ + -")


def _check_item_id(v: Validator, field: str, value: str, required: bool) -> None:
    if not value:
        if required:
            v.add(field, "must not be empty")
    elif not _ITEM_ID.match(value):
        v.add(field, "must be 1-128 characters of letters, digits and . _ : @ + - /")


def _check_text(v: Validator, field: str, value: str, max_bytes: int) -> None:
    size = len(value.encode())
    if not value.strip():
        v.add(field, "must not be empty")
    elif size > max_bytes:
        v.add(field, f"is {size} bytes; at most {max_bytes} allowed")
    elif _CONTROL.search(value):
        v.add(field, "must not contain control characters")


def _item(hit: Hit) -> pb.ContextItem:
    e = hit.entry
    return pb.ContextItem(
        text=e.text,
        source=_KIND_OF[e.source],
        score=hit.score,
        conversation_id=e.conversation_id,
        event_id=e.event_id,
        seq=e.seq,
        speaker=e.speaker,
        document_id=e.document_id,
        chunk_index=e.chunk_index,
        fact_id=e.fact_id,
        occurred_at=_timestamp(e.occurred_at_us),
    )


def _document(row: DocumentRow, embedded_chunks: int, with_text: bool) -> pb.Document:
    out = pb.Document(
        document_id=row.document_id,
        title=row.title,
        text=row.text if with_text else "",
        chunk_count=row.chunk_count,
        ingested_at=_timestamp(row.ingested_at_us),
        embedded_chunks=embedded_chunks,
    )
    if row.metadata:
        out.metadata.update(row.metadata)
    return out


def _fact(row: FactRow) -> pb.Fact:
    return pb.Fact(fact_id=row.fact_id, text=row.text, updated_at=_timestamp(row.updated_at_us))


class ContextServicer(context_pb2_grpc.ContextServiceServicer):
    def __init__(self, domain: ContextDomain) -> None:
        self.domain = domain
        self.settings: ContextSettings = domain.settings

    async def Enrich(self, request: pb.EnrichRequest, context: Any) -> pb.EnrichResponse:
        started = time.perf_counter()
        v = Validator()
        _check_user(v, "user_id", request.user_id, required=False)
        if request.conversation_id and not is_uuid(request.conversation_id):
            v.add("conversation_id", "must be a UUID in canonical lower-case form")
        if not request.user_id and not request.conversation_id:
            v.add("user_id", "is required unless conversation_id is given")
        _check_text(v, "text", request.text, self.settings.max_query_bytes)
        if not 0 <= request.max_items <= MAX_ITEMS:
            v.add("max_items", f"must be between 1 and {MAX_ITEMS} (0 means {DEFAULT_ITEMS})")
        if not 0 <= request.token_budget <= MAX_TOKEN_BUDGET:
            v.add(
                "token_budget",
                f"must be between 1 and {MAX_TOKEN_BUDGET} (0 means {DEFAULT_TOKEN_BUDGET})",
            )
        sources: set[Source] = set()
        for i, kind in enumerate(request.sources):
            if kind not in _SOURCE_OF:
                v.add(f"sources[{i}]", "must be MEMORY, KNOWLEDGE or FACT")
            else:
                sources.add(_SOURCE_OF[kind])
        v.raise_if_any()
        result = await self.domain.enrich(
            tenant_id=_tenant(),
            user_id=request.user_id,
            conversation_id=request.conversation_id,
            text=request.text,
            max_items=request.max_items or DEFAULT_ITEMS,
            token_budget=request.token_budget or DEFAULT_TOKEN_BUDGET,
            sources=sources or set(Source),
            time_left_s=context.time_remaining(),
        )
        metrics.ENRICH_SECONDS.observe(time.perf_counter() - started)
        return pb.EnrichResponse(
            items=[_item(h) for h in result.hits],
            context_block=result.block,
            context_tokens=result.tokens,
            partial=result.partial,
            memory_lag_events=result.lag_events,
            memory_lag_seconds=result.lag_seconds,
        )

    # -- knowledge -----------------------------------------------------------------------

    async def IngestDocument(
        self, request: pb.IngestDocumentRequest, context: Any
    ) -> pb.IngestDocumentResponse:
        v = Validator()
        doc = request.document
        if not request.HasField("document"):
            v.add("document", "is required")
        _check_item_id(v, "document.document_id", doc.document_id, required=False)
        if len(doc.title) > 256:
            v.add("document.title", f"is {len(doc.title)} characters; at most 256 allowed")
        elif _CONTROL.search(doc.title) or "\n" in doc.title:
            v.add("document.title", "must not contain control characters")
        if request.HasField("document"):
            _check_text(v, "document.text", doc.text, self.settings.max_document_bytes)
        metadata: dict[str, Any] = {}
        if doc.metadata.fields:
            metadata = json_format.MessageToDict(doc.metadata)
            size = len(json.dumps(metadata))
            if size > MAX_METADATA_BYTES:
                v.add("document.metadata", f"is {size} bytes; at most {MAX_METADATA_BYTES} allowed")
        v.raise_if_any()
        row = await self.domain.ingest_document(
            _tenant(), doc.document_id or uuid7(), doc.title, doc.text, metadata
        )
        return pb.IngestDocumentResponse(document=self._document_message(row, with_text=False))

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: Any
    ) -> pb.DeleteDocumentResponse:
        v = Validator()
        _check_item_id(v, "document_id", request.document_id, required=True)
        v.raise_if_any()
        if not await self.domain.delete_document(_tenant(), request.document_id):
            raise NotFound(f"document {request.document_id!r} not found")
        return pb.DeleteDocumentResponse(deleted=True)

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: Any
    ) -> pb.ListDocumentsResponse:
        v = Validator()
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            v.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        after = ""
        if request.page_token:
            try:
                after = str(self.domain.page_tokens.decode("documents", request.page_token)["a"])
            except (ValueError, KeyError):
                v.add("page_token", "is not a page token of this call")
        v.raise_if_any()
        size = request.page_size or DEFAULT_PAGE_SIZE
        rows = await self.domain.list_documents(_tenant(), after, size + 1)
        page = [self._document_message(r, with_text=False) for r in rows[:size]]
        fit = ByteBudget(self.settings.max_message_bytes).fill(page)
        out = pb.ListDocumentsResponse(documents=page[:fit])
        if fit < len(rows):
            out.next_page_token = self.domain.page_tokens.encode(
                "documents", {"a": rows[fit - 1].document_id}
            )
        return out

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: Any
    ) -> pb.GetDocumentResponse:
        v = Validator()
        _check_item_id(v, "document_id", request.document_id, required=True)
        v.raise_if_any()
        row = await self.domain.get_document(_tenant(), request.document_id)
        if row is None:
            raise NotFound(f"document {request.document_id!r} not found")
        return pb.GetDocumentResponse(document=self._document_message(row, with_text=True))

    def _document_message(self, row: DocumentRow, with_text: bool) -> pb.Document:
        return _document(row, self.domain.embedded_chunks(row), with_text)

    # -- facts ---------------------------------------------------------------------------

    async def UpsertFacts(
        self, request: pb.UpsertFactsRequest, context: Any
    ) -> pb.UpsertFactsResponse:
        v = Validator()
        _check_user(v, "user_id", request.user_id)
        if not request.facts:
            v.add("facts", "must not be empty")
        elif len(request.facts) > MAX_FACTS_PER_CALL:
            v.add("facts", f"has {len(request.facts)} facts; at most {MAX_FACTS_PER_CALL} per call")
        seen: set[str] = set()
        facts: list[NewFact] = []
        for i, fact in enumerate(request.facts[:MAX_FACTS_PER_CALL]):
            _check_item_id(v, f"facts[{i}].fact_id", fact.fact_id, required=False)
            _check_text(v, f"facts[{i}].text", fact.text, self.settings.max_fact_bytes)
            fact_id = fact.fact_id or uuid7()
            if fact_id in seen:
                v.add(f"facts[{i}].fact_id", "appears twice in this call")
            seen.add(fact_id)
            facts.append(NewFact(fact_id, fact.text.strip()))
        v.raise_if_any()
        rows = await self.domain.upsert_facts(_tenant(), request.user_id, facts)
        return pb.UpsertFactsResponse(facts=[_fact(r) for r in rows])

    async def ListFacts(self, request: pb.ListFactsRequest, context: Any) -> pb.ListFactsResponse:
        v = Validator()
        _check_user(v, "user_id", request.user_id)
        v.raise_if_any()
        rows = await self.domain.list_facts(_tenant(), request.user_id)
        return pb.ListFactsResponse(facts=[_fact(r) for r in rows])

    async def DeleteFact(
        self, request: pb.DeleteFactRequest, context: Any
    ) -> pb.DeleteFactResponse:
        v = Validator()
        _check_user(v, "user_id", request.user_id)
        _check_item_id(v, "fact_id", request.fact_id, required=True)
        v.raise_if_any()
        await self.domain.delete_fact(_tenant(), request.user_id, request.fact_id)
        return pb.DeleteFactResponse(deleted=True)

    # -- status --------------------------------------------------------------------------

    async def GetIndexStatus(
        self, request: pb.GetIndexStatusRequest, context: Any
    ) -> pb.GetIndexStatusResponse:
        # Feed progress is the replica's; counts are the caller's tenant's only.
        s = self.domain.status(_tenant())
        platform = current_principal().allows(FEED_SCOPE)
        return pb.GetIndexStatusResponse(
            cursor=s.cursor if platform else "",
            indexed_turns=s.indexed_turns,
            lag_events=s.lag_events,
            lag_seconds=s.lag_seconds,
            knowledge_chunks=s.knowledge_chunks,
            facts=s.facts,
            feed_connected=s.feed_connected,
            feed_error=s.feed_error,
            pending_chunks=s.pending_chunks,
        )
