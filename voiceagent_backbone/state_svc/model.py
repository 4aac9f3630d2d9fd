"""The domain model of state_svc, independent of protobuf and of the database."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EventType(enum.StrEnum):
    TRANSCRIPTION = "transcription"
    USER_MESSAGE = "user_message"
    AGENT_MESSAGE = "agent_message"
    TTS_SPEECH = "tts_speech"
    USER_ACTION = "user_action"
    ERROR = "error"
    AGENT_HANDOFF = "agent_handoff"
    TOOL_CALL = "tool_call"
    RECOVERY = "recovery"


class Role(enum.StrEnum):
    UNSPECIFIED = ""
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    ENDED = "ended"


class DeletionReason(enum.StrEnum):
    RETENTION = "retention"
    USER_REQUEST = "user_request"


@dataclass
class Conversation:
    conversation_id: str
    tenant_id: str
    room_name: str
    participant_identities: list[str]
    user_ids: list[str]
    status: ConversationStatus
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    end_reason: str = ""
    last_seq: int = 0
    agent_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewEvent:
    """An event as a client sends it; the server adds seq, server time and feed position."""

    event_id: str
    type: EventType
    role: Role
    text: str
    payload: dict[str, Any]
    client_time: datetime | None
    participant_identity: str = ""
    # The typed detail: kind is one of transcription, speech, error, handoff, user_action,
    # tool_call, recovery.
    detail_kind: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Event(NewEvent):
    conversation_id: str = ""
    tenant_id: str = ""
    seq: int = 0
    server_time: datetime | None = None
    feed_seq: int = 0
    user_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AppendResult:
    event_id: str
    seq: int
    duplicate: bool


@dataclass
class ChatItem:
    item_id: str
    role: Role
    text: str
    created_at: datetime | None
    interrupted: bool = False


@dataclass
class Snapshot:
    conversation_id: str
    version: int
    current_agent: str
    history: list[ChatItem]
    userdata: dict[str, Any]
    covered_seq: int
    created_at: datetime | None = None


@dataclass
class UserProfile:
    user_id: str
    display_name: str
    preferences: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class Deletion:
    tenant_id: str
    reason: DeletionReason
    user_id: str
    conversation_ids: list[str]


@dataclass(frozen=True)
class KnowledgeChange:
    """A tenant's document, or the facts of one of its users, changed. It names what
    changed and never carries text: readers fetch the current version."""

    tenant_id: str
    document_id: str = ""
    user_id: str = ""


@dataclass
class Change:
    """One entry of the change feed: an event, a deletion or a knowledge change, at a global
    feed position (none of them: a tombstone, which only moves cursors on)."""

    feed_seq: int
    event: Event | None = None
    deletion: Deletion | None = None
    knowledge: KnowledgeChange | None = None


@dataclass(frozen=True)
class DeleteCounts:
    conversations: int
    events: int
    snapshots: int
    profile: bool
    embeddings: int = 0
    facts: int = 0


class EmbeddingOwner(enum.StrEnum):
    """What an embedding was computed from; deleting the owner deletes the vector."""

    CONVERSATION = "conversation"
    USER = "user"
    DOCUMENT = "document"


@dataclass(frozen=True, order=True)
class EmbeddingKey:
    """One item's vector (of a model given beside it). Keys order by their fields, the
    order ListEmbeddings streams them in."""

    tenant_id: str
    owner: EmbeddingOwner
    owner_id: str
    item_id: str


@dataclass(frozen=True)
class StoredEmbedding:
    key: EmbeddingKey
    vector: bytes


@dataclass(frozen=True)
class EmbeddingClaim:
    """The outcome of a claim for one key: the stored vector, or who holds it until when;
    gone when the key's owner no longer exists (nothing stored, nothing claimed)."""

    key: EmbeddingKey
    vector: bytes | None = None
    owned: bool = False
    held_until: datetime | None = None
    gone: bool = False


class PutOutcome(enum.StrEnum):
    """What a put did with one vector."""

    STORED = "stored"
    # The key had a vector already: the first one is kept.
    DUPLICATE = "duplicate"
    # The key's owner no longer exists: no vector may outlive it.
    DROPPED = "dropped"


@dataclass
class KnowledgeDocument:
    document_id: str
    title: str
    # Empty when listed (text_bytes says how long it is).
    text: str
    metadata: dict[str, Any]
    stored_at: datetime | None = None
    text_bytes: int = 0

    def as_stored(self, stored_at: datetime | None) -> KnowledgeDocument:
        """This document as PutDocument answers it: stored at `stored_at`, without its text
        (the caller has it)."""
        return KnowledgeDocument(
            self.document_id,
            self.title,
            "",
            dict(self.metadata),
            stored_at,
            len(self.text.encode()),
        )


@dataclass(frozen=True)
class UserFact:
    fact_id: str
    text: str
    # Both or neither: the vector its writer computed, and with which model.
    embedding_model: str = ""
    vector: bytes = b""
    updated_at: datetime | None = None

    def same_content(self, other: UserFact) -> bool:
        return (self.text, self.embedding_model, self.vector) == (
            other.text,
            other.embedding_model,
            other.vector,
        )


# A fact's share of one ListFacts reply beyond its fields' bytes: tags, lengths, updated_at.
FACT_OVERHEAD_BYTES = 40


def fact_bytes(fact: UserFact) -> int:
    """About what the fact takes in a ListFacts reply (a little more, never less)."""
    return (
        len(fact.fact_id.encode())
        + len(fact.text.encode())
        + len(fact.embedding_model.encode())
        + len(fact.vector)
        + FACT_OVERHEAD_BYTES
    )


@dataclass(frozen=True)
class FactLimits:
    """How many facts a user may have, and how many bytes they may take together (all of
    them are answered in one ListFacts reply)."""

    max_facts: int
    max_bytes: int


MESSAGE_TYPES = (EventType.USER_MESSAGE, EventType.AGENT_MESSAGE)
