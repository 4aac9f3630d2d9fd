"""The wire edge of state_svc: request validation and protobuf <-> domain conversion.

Every bound is checked here, before the domain sees a request, and every violation in a
request is reported at once with its field path.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.servicekit import page_tokens
from voiceagent_backbone.servicekit.errors import Validator
from voiceagent_backbone.servicekit.ids import is_uuid, is_uuid7, uuid7
from voiceagent_backbone.servicekit.page_tokens import PageTokens
from voiceagent_backbone.state_svc.config import StateSettings
from voiceagent_backbone.state_svc.model import (
    Change,
    ChatItem,
    Conversation,
    ConversationStatus,
    Deletion,
    DeletionReason,
    EmbeddingClaim,
    EmbeddingKey,
    EmbeddingOwner,
    Event,
    EventType,
    KnowledgeChange,
    KnowledgeDocument,
    NewEvent,
    Role,
    Snapshot,
    StoredEmbedding,
    UserFact,
    UserProfile,
)

_USER_ID = re.compile(r"^[A-Za-z0-9._:@+\-]{1,128}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)

DETAIL_FOR_TYPE = {
    EventType.TRANSCRIPTION: "transcription",
    EventType.TTS_SPEECH: "speech",
    EventType.ERROR: "error",
    EventType.AGENT_HANDOFF: "handoff",
    EventType.USER_ACTION: "user_action",
    EventType.TOOL_CALL: "tool_call",
    EventType.RECOVERY: "recovery",
}
MAX_LIST = 32
# Embeddings: keys per call, bytes per vector, how long a claim may hold.
MAX_EMBEDDING_KEYS = 1000
MAX_VECTOR_BYTES = 16 * 1024
MAX_LEASE_MS = 600_000
MAX_KEY_PART_BYTES = 256
EMBEDDING_TOKEN_CHARS = 8192
# Knowledge documents and facts.
MAX_TENANT_ID_CHARS = 128
MAX_DOCUMENT_ID_CHARS = 128
MAX_TITLE_CHARS = 512
MAX_DOCUMENT_METADATA_BYTES = 16 * 1024
MAX_DOCUMENTS_PAGE, DEFAULT_DOCUMENTS_PAGE = 1000, 100
# A document id of 128 characters, JSON-escaped, is longer than other tokens' positions.
DOCUMENTS_TOKEN_CHARS = 4096
MAX_FACT_ID_CHARS = 128
MAX_FACT_CHARS = 4096
MAX_FACTS_PER_CALL = 100
MAX_EMBEDDING_MODEL_CHARS = 128


# -- enums ------------------------------------------------------------------------------


def event_type_from_pb(value: int) -> EventType | None:
    name = pb.EventType.Name(value) if value in pb.EventType.values() else ""
    if not name or value == pb.EVENT_TYPE_UNSPECIFIED:
        return None
    return EventType(name.removeprefix("EVENT_TYPE_").lower())


def event_type_to_pb(value: EventType) -> pb.EventType:
    return cast(pb.EventType, pb.EventType.Value("EVENT_TYPE_" + value.value.upper()))


def owner_from_pb(value: int) -> EmbeddingOwner | None:
    if value not in pb.EmbeddingOwner.values() or value == pb.EMBEDDING_OWNER_UNSPECIFIED:
        return None
    return EmbeddingOwner(pb.EmbeddingOwner.Name(value).removeprefix("EMBEDDING_OWNER_").lower())


def owner_to_pb(value: EmbeddingOwner) -> pb.EmbeddingOwner:
    return cast(pb.EmbeddingOwner, pb.EmbeddingOwner.Value("EMBEDDING_OWNER_" + value.upper()))


def role_from_pb(value: int) -> Role | None:
    if value not in pb.Role.values():
        return None
    if value == pb.ROLE_UNSPECIFIED:
        return Role.UNSPECIFIED
    return Role(pb.Role.Name(value).removeprefix("ROLE_").lower())


def role_to_pb(value: Role) -> pb.Role:
    if value is Role.UNSPECIFIED:
        return pb.ROLE_UNSPECIFIED
    return cast(pb.Role, pb.Role.Value("ROLE_" + value.value.upper()))


# -- small converters -------------------------------------------------------------------


def ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def struct_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    if not value.fields:
        return {}
    result: dict[str, Any] = json_format.MessageToDict(value)
    return result


# -- bounds -----------------------------------------------------------------------------


class Checks:
    """Field checks that share the service's configured limits."""

    def __init__(self, settings: StateSettings) -> None:
        self.s = settings

    def text(self, v: Validator, field: str, value: str, max_bytes: int, required: bool) -> None:
        if required and not value.strip():
            v.add(field, "must not be empty")
        elif len(value.encode()) > max_bytes:
            v.add(field, f"is {len(value.encode())} bytes; at most {max_bytes} allowed")

    def name(self, v: Validator, field: str, value: str, max_len: int, required: bool) -> None:
        if required and not value:
            v.add(field, "must not be empty")
        elif len(value) > max_len:
            v.add(field, f"is {len(value)} characters; at most {max_len} allowed")
        elif _CONTROL.search(value):
            v.add(field, "must not contain control characters")

    def user_id(self, v: Validator, field: str, value: str) -> None:
        if not value:
            v.add(field, "must not be empty")
        elif not _USER_ID.match(value):
            v.add(field, "must be 1-128 characters of letters, digits and . _ : @ + -")

    def conversation_id(self, v: Validator, field: str, value: str, required: bool = True) -> None:
        if not value:
            if required:
                v.add(field, "must not be empty")
        elif not is_uuid(value):
            v.add(field, "must be a UUID in canonical lower-case form")

    def struct(self, v: Validator, field: str, value: struct_pb2.Struct, max_bytes: int) -> None:
        if not value.fields:  # the usual case: nothing to check, nothing to convert
            return
        size = value.ByteSize()
        if size > max_bytes:
            v.add(field, f"is {size} bytes; at most {max_bytes} allowed")
            return
        as_dict = struct_dict(value)
        depth = _depth(as_dict)
        if depth > self.s.max_payload_depth:
            v.add(field, f"nests {depth} levels; at most {self.s.max_payload_depth} allowed")
        # Keys and numbers every store can hold are checked for every request alike, by
        # servicekit.wellknown.

    def ids(self, v: Validator, field: str, values: Any, check: Any) -> None:
        if len(values) > MAX_LIST:
            v.add(field, f"has {len(values)} items; at most {MAX_LIST} allowed")
            return
        for i, value in enumerate(values):
            check(v, f"{field}[{i}]", value)

    def page_size(self, v: Validator, field: str, value: int, maximum: int) -> None:
        if value < 0 or value > maximum:
            v.add(field, f"must be between 0 and {maximum}")

    def timestamp(self, v: Validator, field: str, value: timestamp_pb2.Timestamp) -> None:
        if value.nanos < 0 or value.nanos > 999_999_999:
            v.add(field, "has invalid nanos")
            return
        try:
            when = value.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            v.add(field, "is out of range")
            return
        if when < _MIN_TIME or when > datetime.now(UTC) + timedelta(days=1):
            v.add(field, "must lie between 2000-01-01 and tomorrow")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# -- requests ---------------------------------------------------------------------------


def new_conversation(
    checks: Checks, request: pb.CreateConversationRequest, tenant_id: str, now: datetime
) -> Conversation:
    v = Validator()
    checks.conversation_id(v, "conversation_id", request.conversation_id, required=False)
    checks.name(v, "room_name", request.room_name, 256, required=True)
    checks.ids(
        v,
        "participant_identities",
        request.participant_identities,
        lambda v, f, x: checks.name(v, f, x, 256, True),
    )
    checks.ids(v, "user_ids", request.user_ids, checks.user_id)
    checks.name(v, "agent_name", request.agent_name, 128, required=False)
    checks.struct(v, "metadata", request.metadata, checks.s.max_payload_bytes)
    v.raise_if_any()
    return Conversation(
        conversation_id=request.conversation_id or uuid7(),
        tenant_id=tenant_id,
        room_name=request.room_name,
        participant_identities=list(dict.fromkeys(request.participant_identities)),
        user_ids=list(dict.fromkeys(request.user_ids)),
        status=ConversationStatus.OPEN,
        started_at=now,
        updated_at=now,
        agent_name=request.agent_name,
        metadata=struct_dict(request.metadata),
    )


def new_events(checks: Checks, request: pb.AppendEventsRequest) -> list[NewEvent]:
    v = Validator()
    checks.conversation_id(v, "conversation_id", request.conversation_id)
    count = len(request.events)
    if count == 0:
        v.add("events", "must hold at least one event")
    elif count > checks.s.max_batch_events:
        v.add("events", f"has {count} events; at most {checks.s.max_batch_events} per call")
    if v.violations:
        v.raise_if_any()
    events: list[NewEvent] = []
    seen: set[str] = set()
    for i, e in enumerate(request.events):
        f = f"events[{i}]"
        if not is_uuid7(e.event_id):
            v.add(f"{f}.event_id", "must be a UUIDv7 in canonical lower-case form")
        elif e.event_id in seen:
            v.add(f"{f}.event_id", "appears twice in this batch")
        seen.add(e.event_id)
        event_type = event_type_from_pb(e.type)
        if event_type is None:
            v.add(f"{f}.type", "must be a known event type other than UNSPECIFIED")
        role = role_from_pb(e.role)
        if role is None:
            v.add(f"{f}.role", "must be a known role")
        checks.text(v, f"{f}.text", e.text, checks.s.max_text_bytes, required=False)
        checks.struct(v, f"{f}.payload", e.payload, checks.s.max_payload_bytes)
        if e.HasField("client_time"):
            checks.timestamp(v, f"{f}.client_time", e.client_time)
        checks.name(v, f"{f}.participant_identity", e.participant_identity, 256, required=False)
        kind = e.WhichOneof("detail") or ""
        detail: dict[str, Any] = {}
        if kind:
            detail_msg: Message = getattr(e, kind)
            if event_type is not None and DETAIL_FOR_TYPE.get(event_type) != kind:
                v.add(f"{f}.{kind}", f"does not belong to an event of type {e.type}")
            if detail_msg.ByteSize() > checks.s.max_text_bytes * 2:
                v.add(f"{f}.{kind}", "is too large")
            if kind == "speech" and e.speech.duration.seconds < 0:
                v.add(f"{f}.speech.duration", "must not be negative")
            detail = json_format.MessageToDict(detail_msg, preserving_proto_field_name=True)
        if event_type is EventType.ERROR and not (e.text or e.error.message):
            v.add(f"{f}.error.message", "an error event needs a message (or text)")
        if event_type is not None and role is not None and not v.violations:
            events.append(
                NewEvent(
                    event_id=e.event_id,
                    type=event_type,
                    role=role,
                    text=e.text,
                    payload=struct_dict(e.payload),
                    client_time=e.client_time.ToDatetime(tzinfo=UTC)
                    if e.HasField("client_time")
                    else None,
                    participant_identity=e.participant_identity,
                    detail_kind=kind,
                    detail=detail,
                )
            )
    v.raise_if_any()
    return events


def event_types(v: Validator, field: str, values: Any) -> list[EventType]:
    out: list[EventType] = []
    for i, value in enumerate(values):
        t = event_type_from_pb(value)
        if t is None:
            v.add(f"{field}[{i}]", "must be a known event type other than UNSPECIFIED")
        else:
            out.append(t)
    return out


def snapshot(checks: Checks, request: pb.SaveSnapshotRequest) -> Snapshot:
    v = Validator()
    checks.conversation_id(v, "conversation_id", request.conversation_id)
    if not request.HasField("snapshot"):
        v.add("snapshot", "is required")
        v.raise_if_any()
    s = request.snapshot
    size = s.ByteSize()
    if size > checks.s.max_snapshot_bytes:
        v.add(
            "snapshot",
            f"is {size} bytes; the limit is {checks.s.max_snapshot_bytes} bytes "
            "(trim the history window or userdata)",
        )
        v.raise_if_any()
    checks.name(v, "snapshot.current_agent", s.current_agent, 128, required=False)
    if s.covered_seq < 0:
        v.add("snapshot.covered_seq", "must not be negative")
    depth = _depth(struct_dict(s.userdata))
    if depth > checks.s.max_payload_depth:
        v.add("snapshot.userdata", f"nests {depth} levels; at most {checks.s.max_payload_depth}")
    history: list[ChatItem] = []
    for i, item in enumerate(s.history):
        role = role_from_pb(item.role)
        if role is None:
            v.add(f"snapshot.history[{i}].role", "must be a known role")
            continue
        checks.name(v, f"snapshot.history[{i}].item_id", item.item_id, 128, required=False)
        history.append(
            ChatItem(
                item_id=item.item_id,
                role=role,
                text=item.text,
                created_at=item.created_at.ToDatetime(tzinfo=UTC)
                if item.HasField("created_at")
                else None,
                interrupted=item.interrupted,
            )
        )
    v.raise_if_any()
    return Snapshot(
        conversation_id=request.conversation_id,
        version=0,
        current_agent=s.current_agent,
        history=history,
        userdata=struct_dict(s.userdata),
        covered_seq=s.covered_seq,
    )


def user_profile(checks: Checks, request: pb.UpsertUserRequest) -> UserProfile:
    v = Validator()
    u = request.user
    checks.user_id(v, "user.user_id", u.user_id)
    checks.name(v, "user.display_name", u.display_name, 256, required=False)
    checks.struct(v, "user.preferences", u.preferences, checks.s.max_payload_bytes)
    v.raise_if_any()
    return UserProfile(u.user_id, u.display_name, struct_dict(u.preferences))


def embedding_model(checks: Checks, v: Validator, model: str) -> None:
    checks.name(v, "model", model, 128, required=True)


def embedding_key(v: Validator, field: str, key: pb.EmbeddingKey) -> EmbeddingKey | None:
    parts = {"tenant_id": key.tenant_id, "owner_id": key.owner_id, "item_id": key.item_id}
    for name, value in parts.items():
        size = len(value.encode())
        if not value:
            v.add(f"{field}.{name}", "must not be empty")
        elif size > MAX_KEY_PART_BYTES:
            v.add(f"{field}.{name}", f"is {size} bytes; at most {MAX_KEY_PART_BYTES} allowed")
        elif _CONTROL.search(value):
            v.add(f"{field}.{name}", "must not contain control characters")
    owner = owner_from_pb(key.owner)
    if owner is None:
        v.add(f"{field}.owner", "must be a known owner other than UNSPECIFIED")
    if owner is None or v.violations:
        return None
    return EmbeddingKey(key.tenant_id, owner, key.owner_id, key.item_id)


def _count(v: Validator, field: str, count: int, what: str) -> None:
    if count == 0:
        v.add(field, f"must hold at least one {what}")
    elif count > MAX_EMBEDDING_KEYS:
        v.add(field, f"has {count} {what}s; at most {MAX_EMBEDDING_KEYS} per call")


def embedding_keys(v: Validator, field: str, keys: Any) -> list[EmbeddingKey]:
    """Distinct, complete keys (reported each with its index)."""
    _count(v, field, len(keys), "key")
    if v.violations:
        return []
    out: list[EmbeddingKey] = []
    seen: set[EmbeddingKey] = set()
    for i, key in enumerate(keys):
        checked = embedding_key(v, f"{field}[{i}]", key)
        if checked is None:
            continue
        if checked in seen:
            v.add(f"{field}[{i}]", "appears twice in this request")
        seen.add(checked)
        out.append(checked)
    return out


def claim_embeddings(
    checks: Checks, request: pb.ClaimEmbeddingsRequest
) -> tuple[list[EmbeddingKey], int]:
    v = Validator()
    embedding_model(checks, v, request.model)
    checks.name(v, "holder", request.holder, 256, required=True)
    if not 1 <= request.lease_ms <= MAX_LEASE_MS:
        v.add("lease_ms", f"must be between 1 and {MAX_LEASE_MS}")
    keys = embedding_keys(v, "keys", request.keys)
    v.raise_if_any()
    return keys, request.lease_ms


def put_embeddings(checks: Checks, request: pb.PutEmbeddingsRequest) -> list[StoredEmbedding]:
    v = Validator()
    embedding_model(checks, v, request.model)
    checks.name(v, "holder", request.holder, 256, required=False)
    _count(v, "embeddings", len(request.embeddings), "embedding")
    if v.violations:
        v.raise_if_any()
    out: list[StoredEmbedding] = []
    seen: set[EmbeddingKey] = set()
    length = len(request.embeddings[0].vector)
    for i, e in enumerate(request.embeddings):
        f = f"embeddings[{i}]"
        size = len(e.vector)
        if size == 0:
            v.add(f"{f}.vector", "must not be empty")
        elif size > MAX_VECTOR_BYTES:
            v.add(f"{f}.vector", f"is {size} bytes; at most {MAX_VECTOR_BYTES} allowed")
        elif size != length:
            v.add(f"{f}.vector", f"is {size} bytes; embeddings[0].vector is {length}")
        if not e.HasField("key"):
            v.add(f"{f}.key", "is required")
            continue
        key = embedding_key(v, f"{f}.key", e.key)
        if key is None:
            continue
        if key in seen:
            v.add(f"{f}.key", "appears twice in this request")
        seen.add(key)
        out.append(StoredEmbedding(key, e.vector))
    v.raise_if_any()
    return out


# -- knowledge requests -------------------------------------------------------------------


def check_tenant(checks: Checks, v: Validator, value: str) -> None:
    """A platform call names its tenant: any a token may carry (1-128 characters), without
    control characters (the stores join ids with one)."""
    checks.name(v, "tenant_id", value, MAX_TENANT_ID_CHARS, required=True)


def check_document_id(checks: Checks, v: Validator, field: str, value: str) -> None:
    checks.name(v, field, value, MAX_DOCUMENT_ID_CHARS, required=True)


def new_document(checks: Checks, request: pb.PutDocumentRequest) -> KnowledgeDocument:
    """The document to store; output-only fields (stored_at, text_bytes) are ignored."""
    v = Validator()
    check_tenant(checks, v, request.tenant_id)
    if not request.HasField("document"):
        v.add("document", "is required")
        v.raise_if_any()
    d = request.document
    check_document_id(checks, v, "document.document_id", d.document_id)
    checks.name(v, "document.title", d.title, MAX_TITLE_CHARS, required=False)
    checks.text(v, "document.text", d.text, checks.s.max_document_bytes, required=False)
    checks.struct(v, "document.metadata", d.metadata, MAX_DOCUMENT_METADATA_BYTES)
    v.raise_if_any()
    return KnowledgeDocument(d.document_id, d.title, d.text, struct_dict(d.metadata))


def document_ref(
    checks: Checks, request: pb.GetDocumentRequest | pb.DeleteDocumentRequest
) -> tuple[str, str]:
    v = Validator()
    check_tenant(checks, v, request.tenant_id)
    check_document_id(checks, v, "document_id", request.document_id)
    v.raise_if_any()
    return request.tenant_id, request.document_id


def documents_page(
    checks: Checks, codec: PageTokens, request: pb.ListDocumentsRequest
) -> tuple[str, int]:
    """(the document id the page starts after, "" for the first; the page size)."""
    v = Validator()
    check_tenant(checks, v, request.tenant_id)
    checks.page_size(v, "page_size", request.page_size, MAX_DOCUMENTS_PAGE)
    fields = page_token(
        v, codec, "documents", request.page_token, request.tenant_id, DOCUMENTS_TOKEN_CHARS
    )
    after = ""
    if fields is not None:
        last = fields.get("i")
        if not isinstance(last, str) or not last:
            v.add("page_token", "is not a page token of this call")
        else:
            after = last
    v.raise_if_any()
    return after, request.page_size or DEFAULT_DOCUMENTS_PAGE


def documents_token(codec: PageTokens, tenant: str, last_document_id: str) -> str:
    return codec.encode("documents", {"b": tenant, "i": last_document_id})


def user_facts_ref(checks: Checks, request: pb.ListFactsRequest) -> tuple[str, str]:
    v = Validator()
    check_tenant(checks, v, request.tenant_id)
    checks.user_id(v, "user_id", request.user_id)
    v.raise_if_any()
    return request.tenant_id, request.user_id


def fact_ref(checks: Checks, request: pb.DeleteFactRequest) -> tuple[str, str, str]:
    v = Validator()
    check_tenant(checks, v, request.tenant_id)
    checks.user_id(v, "user_id", request.user_id)
    checks.name(v, "fact_id", request.fact_id, MAX_FACT_ID_CHARS, required=True)
    v.raise_if_any()
    return request.tenant_id, request.user_id, request.fact_id


def new_facts(checks: Checks, request: pb.PutFactsRequest) -> list[UserFact]:
    """Facts of distinct ids, each named with its index; updated_at is ignored."""
    v = Validator()
    check_tenant(checks, v, request.tenant_id)
    checks.user_id(v, "user_id", request.user_id)
    count = len(request.facts)
    if count == 0:
        v.add("facts", "must hold at least one fact")
    elif count > MAX_FACTS_PER_CALL:
        v.add("facts", f"has {count} facts; at most {MAX_FACTS_PER_CALL} per call")
    if v.violations:
        v.raise_if_any()
    out: list[UserFact] = []
    seen: set[str] = set()
    for i, f in enumerate(request.facts):
        field = f"facts[{i}]"
        checks.name(v, f"{field}.fact_id", f.fact_id, MAX_FACT_ID_CHARS, required=True)
        if f.fact_id in seen:
            v.add(f"{field}.fact_id", "appears twice in this request")
        seen.add(f.fact_id)
        if not f.text.strip():
            v.add(f"{field}.text", "must not be empty")
        elif len(f.text) > MAX_FACT_CHARS:
            v.add(f"{field}.text", f"is {len(f.text)} characters; at most {MAX_FACT_CHARS}")
        _fact_vector(checks, v, field, f)
        out.append(UserFact(f.fact_id, f.text, f.embedding_model, f.vector))
    v.raise_if_any()
    return out


def _fact_vector(checks: Checks, v: Validator, field: str, f: pb.UserFact) -> None:
    """The model and the vector come together, or neither does."""
    if f.embedding_model and not f.vector:
        v.add(f"{field}.vector", "is required with an embedding_model")
    elif f.vector and not f.embedding_model:
        v.add(f"{field}.embedding_model", "is required with a vector")
    elif f.vector:
        checks.name(
            v, f"{field}.embedding_model", f.embedding_model, MAX_EMBEDDING_MODEL_CHARS, True
        )
        if len(f.vector) > MAX_VECTOR_BYTES:
            v.add(f"{field}.vector", f"is {len(f.vector)} bytes; at most {MAX_VECTOR_BYTES}")


def page_token(
    v: Validator,
    codec: PageTokens,
    kind: str,
    token: str,
    binding: str,
    max_chars: int = page_tokens.MAX_TOKEN_CHARS,
) -> dict[str, Any] | None:
    """Decoded page token fields, or None for the first page; bound to the request."""
    if not token:
        return None
    try:
        fields = codec.decode(kind, token, max_chars)
    except ValueError:
        v.add("page_token", "is not a page token of this call")
        return None
    if fields.get("b") != binding:
        v.add("page_token", "belongs to a different request")
        return None
    return fields


# -- responses --------------------------------------------------------------------------


def conversation_pb(c: Conversation) -> pb.Conversation:
    return pb.Conversation(
        conversation_id=c.conversation_id,
        tenant_id=c.tenant_id,
        room_name=c.room_name,
        participant_identities=c.participant_identities,
        user_ids=c.user_ids,
        status=pb.CONVERSATION_STATUS_OPEN
        if c.status is ConversationStatus.OPEN
        else pb.CONVERSATION_STATUS_ENDED,
        started_at=ts(c.started_at),
        ended_at=ts(c.ended_at),
        end_reason=c.end_reason,
        last_seq=c.last_seq,
        agent_name=c.agent_name,
        metadata=struct(c.metadata),
    )


def event_pb(e: Event) -> pb.Event:
    out = pb.Event(
        event_id=e.event_id,
        conversation_id=e.conversation_id,
        seq=e.seq,
        type=event_type_to_pb(e.type),
        role=role_to_pb(e.role),
        text=e.text,
        payload=struct(e.payload),
        client_time=ts(e.client_time),
        server_time=ts(e.server_time),
        participant_identity=e.participant_identity,
        tenant_id=e.tenant_id,
        user_ids=e.user_ids,
    )
    if e.detail_kind:
        json_format.ParseDict(e.detail, getattr(out, e.detail_kind))
    return out


def snapshot_pb(s: Snapshot) -> pb.Snapshot:
    return pb.Snapshot(
        conversation_id=s.conversation_id,
        version=s.version,
        current_agent=s.current_agent,
        history=[
            pb.ChatItem(
                item_id=h.item_id,
                role=role_to_pb(h.role),
                text=h.text,
                created_at=ts(h.created_at),
                interrupted=h.interrupted,
            )
            for h in s.history
        ],
        userdata=struct(s.userdata),
        covered_seq=s.covered_seq,
        created_at=ts(s.created_at),
    )


def user_pb(u: UserProfile) -> pb.UserProfile:
    return pb.UserProfile(
        user_id=u.user_id,
        display_name=u.display_name,
        preferences=struct(u.preferences),
        created_at=ts(u.created_at),
        updated_at=ts(u.updated_at),
    )


def deletion_pb(d: Deletion) -> pb.Deletion:
    return pb.Deletion(
        tenant_id=d.tenant_id,
        reason=pb.DELETION_REASON_RETENTION
        if d.reason is DeletionReason.RETENTION
        else pb.DELETION_REASON_USER_REQUEST,
        user_id=d.user_id,
        conversation_ids=d.conversation_ids,
    )


def knowledge_change_pb(k: KnowledgeChange) -> pb.KnowledgeChange:
    return pb.KnowledgeChange(tenant_id=k.tenant_id, document_id=k.document_id, user_id=k.user_id)


def change_pb(change: Change, codec: PageTokens) -> pb.Change:
    item = pb.Change(cursor=codec.encode("feed", {"s": change.feed_seq}))
    if change.event is not None:
        item.event.CopyFrom(event_pb(change.event))
    elif change.deletion is not None:
        item.deletion.CopyFrom(deletion_pb(change.deletion))
    elif change.knowledge is not None:
        item.knowledge.CopyFrom(knowledge_change_pb(change.knowledge))
    return item


def document_pb(d: KnowledgeDocument) -> pb.KnowledgeDocument:
    return pb.KnowledgeDocument(
        document_id=d.document_id,
        title=d.title,
        text=d.text,
        metadata=struct(d.metadata),
        stored_at=ts(d.stored_at),
        text_bytes=d.text_bytes,
    )


def fact_pb(f: UserFact, with_vector: bool = True) -> pb.UserFact:
    return pb.UserFact(
        fact_id=f.fact_id,
        text=f.text,
        updated_at=ts(f.updated_at),
        embedding_model=f.embedding_model if with_vector else "",
        vector=f.vector if with_vector else b"",
    )


def cursor_from(v: Validator, codec: PageTokens, token: str, *, platform: bool) -> int:
    """The feed position after `token`. A platform reader (state.feed) may also resume from
    an unsigned cursor persisted before cursors were signed: it may read the whole feed
    anyway, so a forged position gives it nothing."""
    if not token:
        return 0
    try:
        value = codec.decode("feed", token).get("s")
    except ValueError:
        legacy = page_tokens.legacy_fields("feed", token) if platform else None
        value = None if legacy is None else legacy.get("s")
    if not isinstance(value, int) or value < 0:
        v.add("cursor", "is not a cursor handed out by Watch")
        return 0
    return value


def embedding_key_pb(key: EmbeddingKey) -> pb.EmbeddingKey:
    return pb.EmbeddingKey(
        tenant_id=key.tenant_id,
        owner=owner_to_pb(key.owner),
        owner_id=key.owner_id,
        item_id=key.item_id,
    )


def embedding_claim_pb(claim: EmbeddingClaim) -> pb.EmbeddingClaim:
    return pb.EmbeddingClaim(
        key=embedding_key_pb(claim.key),
        vector=claim.vector or b"",
        # A gone key is owned too: a client that predates `gone` computes the vector (its
        # put is dropped) rather than wait for one that never comes.
        owned=claim.owned or claim.gone,
        held_until=ts(claim.held_until),
        gone=claim.gone,
    )


def embedding_pb(key: EmbeddingKey, vector: bytes) -> pb.Embedding:
    return pb.Embedding(key=embedding_key_pb(key), vector=vector)


def embedding_after(v: Validator, codec: PageTokens, token: str, model: str) -> EmbeddingKey | None:
    """The key a ListEmbeddings page token resumes after (None: from the first)."""
    # A key holds up to 768 bytes of text, JSON-escaped in the token: longer than others.
    fields = page_token(v, codec, "embeddings", token, model, EMBEDDING_TOKEN_CHARS)
    if fields is None:
        return None
    parts = fields.get("k")
    if (
        not isinstance(parts, list)
        or len(parts) != 4
        or not all(isinstance(p, str) for p in parts)
        or parts[1] not in {o.value for o in EmbeddingOwner}
    ):
        v.add("page_token", "is not a page token of this call")
        return None
    return EmbeddingKey(parts[0], EmbeddingOwner(parts[1]), parts[2], parts[3])


def embedding_token(codec: PageTokens, model: str, after: EmbeddingKey) -> str:
    fields = [after.tenant_id, after.owner.value, after.owner_id, after.item_id]
    return codec.encode("embeddings", {"b": model, "k": fields})


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
