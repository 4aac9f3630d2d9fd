"""The records of context_svc, independent of protobuf and of the index file.

Times are microseconds since the epoch (UTC); a vector is one float32 embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voiceagent_backbone.context_svc.embedding import Vectors
from voiceagent_backbone.context_svc.index import Hit, Source

# -- what the feed follower hands over --------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """A user or agent turn from the change feed (a message, or a final transcription)."""

    tenant_id: str
    event_id: str
    conversation_id: str
    seq: int
    kind: str  # "message" | "transcription"
    role: str
    speaker: str
    text: str
    occurred_at_us: int
    user_ids: list[str]


@dataclass(frozen=True, slots=True)
class DeletionEvent:
    tenant_id: str
    conversation_ids: list[str]
    user_id: str


@dataclass(frozen=True, slots=True)
class KnowledgeChanged:
    """A tenant's document (document_id), or a user's facts (user_id), changed in state_svc:
    the replica fetches their current state."""

    tenant_id: str
    document_id: str = ""
    user_id: str = ""


FeedItem = TurnEvent | DeletionEvent | KnowledgeChanged


# -- what state_svc keeps (the records context_svc indexes) ------------------------------


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A knowledge document as state_svc keeps it; stored_at_us is its version."""

    tenant_id: str
    document_id: str
    title: str
    text: str
    metadata: dict[str, Any]
    stored_at_us: int

    def indexed_as(self, chunk_count: int) -> Document:
        """This version as the index keeps it, in `chunk_count` chunks."""
        return Document(
            self.tenant_id,
            self.document_id,
            self.title,
            self.text,
            self.metadata,
            self.stored_at_us,
            chunk_count,
        )


@dataclass(frozen=True, slots=True)
class StoredFact:
    """A fact as state_svc keeps it, with the vector its writer computed (if any)."""

    fact_id: str
    text: str
    updated_at_us: int
    model: str
    vector: bytes


# -- what the index keeps ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    """An indexed turn of a conversation's memory."""

    tenant_id: str
    event_id: str
    conversation_id: str
    seq: int
    kind: str  # "message" or "transcription"
    role: str  # "user", "agent", ...
    speaker: str
    text: str
    embed_text: str
    terms: list[str]
    occurred_at_us: int
    owners: list[str]  # memory partitions (user ids) the turn belongs to
    vector: Vectors


@dataclass(frozen=True, slots=True)
class Document:
    """A knowledge document as ingested (its text is empty when listed)."""

    tenant_id: str
    document_id: str
    title: str
    text: str
    metadata: dict[str, Any]
    ingested_at_us: int
    chunk_count: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """One indexed passage of a knowledge document."""

    tenant_id: str
    document_id: str
    title: str
    chunk_index: int
    text: str
    terms: list[str]
    ingested_at_us: int
    vector: Vectors | None  # None: not embedded yet


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact about a user, as the caller stated it."""

    tenant_id: str
    user_id: str
    fact_id: str
    text: str
    terms: list[str]
    updated_at_us: int
    vector: Vectors


# -- what one feed batch does to the index file, in feed order ---------------------------


@dataclass(frozen=True, slots=True)
class AddTurn:
    """Store a turn. For a message, transcriptions of the same role since the previous
    message are dropped: the message is the better text of the same turn (transcriptions
    stay only for turns that never got a message)."""

    turn: Turn


@dataclass(frozen=True, slots=True)
class DropConversations:
    tenant_id: str
    conversation_ids: list[str]
    # Set when a user's data was deleted: their facts go too.
    user_id: str = ""


FeedOp = AddTurn | DropConversations


@dataclass(frozen=True, slots=True)
class RemovedTurn:
    tenant_id: str
    event_id: str
    owners: list[str]


@dataclass
class BatchResult:
    """What a feed batch changed: turns stored, turns and facts removed."""

    added: list[Turn]
    removed: list[RemovedTurn]
    removed_facts: list[tuple[str, str, str]]  # (tenant, user, fact id)


# -- requests and answers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnrichQuery:
    """What a caller asks Enrich for (of the caller's tenant)."""

    user_id: str
    conversation_id: str
    text: str
    max_items: int
    token_budget: int
    sources: frozenset[Source]


@dataclass(frozen=True, slots=True)
class EnrichResult:
    hits: list[Hit]
    block: str
    tokens: int
    partial: bool
    # How far the memory index was behind the feed (see ContextDomain.status()).
    lag_events: int = 0
    lag_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A knowledge document as a caller sends it."""

    document_id: str
    title: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DocumentStatus:
    """A stored document and how many of its chunks are embedded yet (the rest are found
    by keyword until the background embedding reaches them)."""

    document: Document
    embedded_chunks: int


@dataclass(frozen=True, slots=True)
class NewFact:
    fact_id: str
    text: str


@dataclass(frozen=True, slots=True)
class IndexStatus:
    cursor: str
    indexed_turns: int
    lag_events: int
    lag_seconds: float
    knowledge_chunks: int
    facts: int
    feed_connected: bool = False
    feed_error: str = ""
    pending_chunks: int = 0
