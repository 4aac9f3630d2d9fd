"""The wire edge of context_svc: request validation and protobuf <-> model conversion.

Every bound is checked here, before the domain sees a request, and every bad field of a
request is named at once (INVALID_ARGUMENT with BadRequest field violations). The change
feed's events from state_svc are converted here too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from voiceagent_backbone.api.context.v1 import context_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2 as state_pb
from voiceagent_backbone.context_svc.index import Hit, Source
from voiceagent_backbone.context_svc.model import (
    DeletionEvent,
    DocumentStatus,
    EnrichQuery,
    EnrichResult,
    Fact,
    FeedItem,
    IndexStatus,
    KnowledgeChanged,
    NewDocument,
    NewFact,
    StoredDocument,
    StoredFact,
    TurnEvent,
)
from voiceagent_backbone.servicekit.errors import Validator
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
MAX_TITLE_CHARS = 256
MAX_METADATA_BYTES = 16 * 1024
MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE = 100, 20
MAX_PAGE_TOKEN_CHARS = 1024

_MESSAGE_ROLE = {
    state_pb.EVENT_TYPE_USER_MESSAGE: "user",
    state_pb.EVENT_TYPE_AGENT_MESSAGE: "agent",
}
_ROLE_NAME = {
    state_pb.ROLE_USER: "user",
    state_pb.ROLE_AGENT: "agent",
    state_pb.ROLE_SYSTEM: "system",
}


# -- field checks -----------------------------------------------------------------------


def check_user(v: Validator, field: str, value: str, required: bool = True) -> None:
    if not value:
        if required:
            v.add(field, "must not be empty")
    elif not _USER_ID.match(value):
        v.add(field, "must be 1-128 characters of letters, digits and . _ : @ + -")


def check_item_id(v: Validator, field: str, value: str, required: bool) -> None:
    if not value:
        if required:
            v.add(field, "must not be empty")
    elif not _ITEM_ID.match(value):
        v.add(field, "must be 1-128 characters of letters, digits and . _ : @ + - /")


def check_text(v: Validator, field: str, value: str, max_bytes: int) -> None:
    size = len(value.encode())
    if not value.strip():
        v.add(field, "must not be empty")
    elif size > max_bytes:
        v.add(field, f"is {size} bytes; at most {max_bytes} allowed")
    elif _CONTROL.search(value):
        v.add(field, "must not contain control characters")


# -- requests ---------------------------------------------------------------------------


def enrich_query(request: pb.EnrichRequest, max_query_bytes: int) -> EnrichQuery:
    v = Validator()
    check_user(v, "user_id", request.user_id, required=False)
    if request.conversation_id and not is_uuid(request.conversation_id):
        v.add("conversation_id", "must be a UUID in canonical lower-case form")
    if not request.user_id and not request.conversation_id:
        v.add("user_id", "is required unless conversation_id is given")
    check_text(v, "text", request.text, max_query_bytes)
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
    return EnrichQuery(
        user_id=request.user_id,
        conversation_id=request.conversation_id,
        text=request.text,
        max_items=request.max_items or DEFAULT_ITEMS,
        token_budget=request.token_budget or DEFAULT_TOKEN_BUDGET,
        sources=frozenset(sources or Source),
    )


def new_document(request: pb.IngestDocumentRequest, max_document_bytes: int) -> NewDocument:
    v = Validator()
    doc = request.document
    if not request.HasField("document"):
        v.add("document", "is required")
    check_item_id(v, "document.document_id", doc.document_id, required=False)
    if len(doc.title) > MAX_TITLE_CHARS:
        v.add(
            "document.title",
            f"is {len(doc.title)} characters; at most {MAX_TITLE_CHARS} allowed",
        )
    elif _CONTROL.search(doc.title) or "\n" in doc.title:
        v.add("document.title", "must not contain control characters")
    if request.HasField("document"):
        check_text(v, "document.text", doc.text, max_document_bytes)
    metadata: dict[str, Any] = {}
    if doc.metadata.fields:
        metadata = json_format.MessageToDict(doc.metadata)
        size = len(json.dumps(metadata))
        if size > MAX_METADATA_BYTES:
            v.add("document.metadata", f"is {size} bytes; at most {MAX_METADATA_BYTES} allowed")
    v.raise_if_any()
    return NewDocument(doc.document_id or uuid7(), doc.title, doc.text, metadata)


def documents_page(request: pb.ListDocumentsRequest) -> tuple[str, int]:
    """The page token (state_svc's, passed through: it checks it) and the page size."""
    v = Validator()
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        v.add("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    if len(request.page_token) > MAX_PAGE_TOKEN_CHARS:
        v.add("page_token", "is not a page token of this call")
    v.raise_if_any()
    return request.page_token, request.page_size or DEFAULT_PAGE_SIZE


def new_facts(request: pb.UpsertFactsRequest, max_fact_bytes: int) -> list[NewFact]:
    v = Validator()
    check_user(v, "user_id", request.user_id)
    if not request.facts:
        v.add("facts", "must not be empty")
    elif len(request.facts) > MAX_FACTS_PER_CALL:
        v.add("facts", f"has {len(request.facts)} facts; at most {MAX_FACTS_PER_CALL} per call")
    seen: set[str] = set()
    facts: list[NewFact] = []
    for i, fact in enumerate(request.facts[:MAX_FACTS_PER_CALL]):
        check_item_id(v, f"facts[{i}].fact_id", fact.fact_id, required=False)
        check_text(v, f"facts[{i}].text", fact.text, max_fact_bytes)
        fact_id = fact.fact_id or uuid7()
        if fact_id in seen:
            v.add(f"facts[{i}].fact_id", "appears twice in this call")
        seen.add(fact_id)
        facts.append(NewFact(fact_id, fact.text.strip()))
    v.raise_if_any()
    return facts


# -- replies ----------------------------------------------------------------------------


def timestamp_pb(at_us: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMicroseconds(at_us)
    return out


def item_pb(hit: Hit) -> pb.ContextItem:
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
        occurred_at=timestamp_pb(e.occurred_at_us),
    )


def enrich_response(result: EnrichResult) -> pb.EnrichResponse:
    return pb.EnrichResponse(
        items=[item_pb(h) for h in result.hits],
        context_block=result.block,
        context_tokens=result.tokens,
        partial=result.partial,
        memory_lag_events=result.lag_events,
        memory_lag_seconds=result.lag_seconds,
    )


def document_pb(status: DocumentStatus, with_text: bool) -> pb.Document:
    d = status.document
    out = pb.Document(
        document_id=d.document_id,
        title=d.title,
        text=d.text if with_text else "",
        chunk_count=d.chunk_count,
        ingested_at=timestamp_pb(d.ingested_at_us),
        embedded_chunks=status.embedded_chunks,
    )
    if d.metadata:
        out.metadata.update(d.metadata)
    return out


def fact_pb(fact: Fact) -> pb.Fact:
    return pb.Fact(
        fact_id=fact.fact_id, text=fact.text, updated_at=timestamp_pb(fact.updated_at_us)
    )


def index_status_pb(status: IndexStatus, with_cursor: bool) -> pb.GetIndexStatusResponse:
    return pb.GetIndexStatusResponse(
        cursor=status.cursor if with_cursor else "",
        indexed_turns=status.indexed_turns,
        lag_events=status.lag_events,
        lag_seconds=status.lag_seconds,
        knowledge_chunks=status.knowledge_chunks,
        facts=status.facts,
        feed_connected=status.feed_connected,
        feed_error=status.feed_error,
        pending_chunks=status.pending_chunks,
    )


# -- the change feed (state_svc's Watch) ------------------------------------------------


def _not_memory(event: state_pb.Event) -> bool:
    """The agent flagged the event {"memory": false} (agent_svc's exclude_from_memory: a
    greeting or farewell said to everyone): stored, but not remembered."""
    flag = event.payload.fields.get("memory")
    return flag is not None and flag.WhichOneof("kind") == "bool_value" and not flag.bool_value


def feed_item(change: state_pb.Change) -> FeedItem | None:
    """The index's view of a change; None for changes that carry no turn text or are
    not memory."""
    if change.HasField("deletion"):
        d = change.deletion
        return DeletionEvent(d.tenant_id, list(d.conversation_ids), d.user_id)
    if change.HasField("knowledge"):
        k = change.knowledge
        return KnowledgeChanged(k.tenant_id, k.document_id, k.user_id)
    if not change.HasField("event"):
        return None
    e = change.event
    text = e.text.strip()
    if not text or _not_memory(e):
        return None
    if e.type in _MESSAGE_ROLE:
        kind, role = "message", _MESSAGE_ROLE[e.type]
    elif e.type == state_pb.EVENT_TYPE_TRANSCRIPTION and e.transcription.final:
        kind, role = "transcription", _ROLE_NAME.get(e.role, "user")
    else:
        return None
    occurred = e.client_time if e.HasField("client_time") else e.server_time
    return TurnEvent(
        tenant_id=e.tenant_id,
        event_id=e.event_id,
        conversation_id=e.conversation_id,
        seq=e.seq,
        kind=kind,
        role=role,
        speaker=e.participant_identity or role.capitalize(),
        text=text,
        occurred_at_us=occurred.ToMicroseconds(),
        user_ids=list(e.user_ids),
    )


# -- state_svc's knowledge records ------------------------------------------------------


def state_document_pb(new: NewDocument) -> state_pb.KnowledgeDocument:
    out = state_pb.KnowledgeDocument(document_id=new.document_id, title=new.title, text=new.text)
    if new.metadata:
        out.metadata.update(new.metadata)
    return out


def stored_document(tenant_id: str, d: state_pb.KnowledgeDocument) -> StoredDocument:
    return StoredDocument(
        tenant_id=tenant_id,
        document_id=d.document_id,
        title=d.title,
        text=d.text,
        metadata=json_format.MessageToDict(d.metadata) if d.metadata.fields else {},
        stored_at_us=d.stored_at.ToMicroseconds(),
    )


def state_fact_pb(fact: NewFact, model: str, vector: bytes) -> state_pb.UserFact:
    return state_pb.UserFact(
        fact_id=fact.fact_id, text=fact.text, embedding_model=model, vector=vector
    )


def stored_fact(f: state_pb.UserFact) -> StoredFact:
    return StoredFact(
        fact_id=f.fact_id,
        text=f.text,
        updated_at_us=f.updated_at.ToMicroseconds(),
        model=f.embedding_model,
        vector=f.vector,
    )
