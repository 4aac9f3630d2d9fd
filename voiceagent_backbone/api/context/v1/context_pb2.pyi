import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SourceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_KIND_UNSPECIFIED: _ClassVar[SourceKind]
    SOURCE_KIND_MEMORY: _ClassVar[SourceKind]
    SOURCE_KIND_KNOWLEDGE: _ClassVar[SourceKind]
    SOURCE_KIND_FACT: _ClassVar[SourceKind]
SOURCE_KIND_UNSPECIFIED: SourceKind
SOURCE_KIND_MEMORY: SourceKind
SOURCE_KIND_KNOWLEDGE: SourceKind
SOURCE_KIND_FACT: SourceKind

class ContextItem(_message.Message):
    __slots__ = ("text", "source", "score", "conversation_id", "event_id", "seq", "speaker", "document_id", "chunk_index", "fact_id", "occurred_at")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    text: str
    source: SourceKind
    score: float
    conversation_id: str
    event_id: str
    seq: int
    speaker: str
    document_id: str
    chunk_index: int
    fact_id: str
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, text: _Optional[str] = ..., source: _Optional[_Union[SourceKind, str]] = ..., score: _Optional[float] = ..., conversation_id: _Optional[str] = ..., event_id: _Optional[str] = ..., seq: _Optional[int] = ..., speaker: _Optional[str] = ..., document_id: _Optional[str] = ..., chunk_index: _Optional[int] = ..., fact_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EnrichRequest(_message.Message):
    __slots__ = ("conversation_id", "user_id", "text", "max_items", "token_budget", "sources")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    user_id: str
    text: str
    max_items: int
    token_budget: int
    sources: _containers.RepeatedScalarFieldContainer[SourceKind]
    def __init__(self, conversation_id: _Optional[str] = ..., user_id: _Optional[str] = ..., text: _Optional[str] = ..., max_items: _Optional[int] = ..., token_budget: _Optional[int] = ..., sources: _Optional[_Iterable[_Union[SourceKind, str]]] = ...) -> None: ...

class EnrichResponse(_message.Message):
    __slots__ = ("items", "context_block", "context_tokens", "partial", "memory_lag_events", "memory_lag_seconds")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_BLOCK_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ContextItem]
    context_block: str
    context_tokens: int
    partial: bool
    memory_lag_events: int
    memory_lag_seconds: float
    def __init__(self, items: _Optional[_Iterable[_Union[ContextItem, _Mapping]]] = ..., context_block: _Optional[str] = ..., context_tokens: _Optional[int] = ..., partial: _Optional[bool] = ..., memory_lag_events: _Optional[int] = ..., memory_lag_seconds: _Optional[float] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("document_id", "title", "text", "metadata", "chunk_count", "ingested_at", "embedded_chunks")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    INGESTED_AT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    title: str
    text: str
    metadata: _struct_pb2.Struct
    chunk_count: int
    ingested_at: _timestamp_pb2.Timestamp
    embedded_chunks: int
    def __init__(self, document_id: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., chunk_count: _Optional[int] = ..., ingested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., embedded_chunks: _Optional[int] = ...) -> None: ...

class IngestDocumentRequest(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: Document
    def __init__(self, document: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...

class IngestDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: Document
    def __init__(self, document: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...

class DeleteDocumentRequest(_message.Message):
    __slots__ = ("document_id",)
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    def __init__(self, document_id: _Optional[str] = ...) -> None: ...

class DeleteDocumentResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListDocumentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDocumentsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    next_page_token: str
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("document_id",)
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    def __init__(self, document_id: _Optional[str] = ...) -> None: ...

class GetDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: Document
    def __init__(self, document: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...

class Fact(_message.Message):
    __slots__ = ("fact_id", "text", "updated_at")
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    fact_id: str
    text: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, fact_id: _Optional[str] = ..., text: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpsertFactsRequest(_message.Message):
    __slots__ = ("user_id", "facts")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    facts: _containers.RepeatedCompositeFieldContainer[Fact]
    def __init__(self, user_id: _Optional[str] = ..., facts: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ...) -> None: ...

class UpsertFactsResponse(_message.Message):
    __slots__ = ("facts",)
    FACTS_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[Fact]
    def __init__(self, facts: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ...) -> None: ...

class ListFactsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListFactsResponse(_message.Message):
    __slots__ = ("facts",)
    FACTS_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[Fact]
    def __init__(self, facts: _Optional[_Iterable[_Union[Fact, _Mapping]]] = ...) -> None: ...

class DeleteFactRequest(_message.Message):
    __slots__ = ("user_id", "fact_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    fact_id: str
    def __init__(self, user_id: _Optional[str] = ..., fact_id: _Optional[str] = ...) -> None: ...

class DeleteFactResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class GetIndexStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIndexStatusResponse(_message.Message):
    __slots__ = ("cursor", "indexed_turns", "lag_events", "lag_seconds", "knowledge_chunks", "facts", "feed_connected", "feed_error", "pending_chunks")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    INDEXED_TURNS_FIELD_NUMBER: _ClassVar[int]
    LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    FEED_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    FEED_ERROR_FIELD_NUMBER: _ClassVar[int]
    PENDING_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    indexed_turns: int
    lag_events: int
    lag_seconds: float
    knowledge_chunks: int
    facts: int
    feed_connected: bool
    feed_error: str
    pending_chunks: int
    def __init__(self, cursor: _Optional[str] = ..., indexed_turns: _Optional[int] = ..., lag_events: _Optional[int] = ..., lag_seconds: _Optional[float] = ..., knowledge_chunks: _Optional[int] = ..., facts: _Optional[int] = ..., feed_connected: _Optional[bool] = ..., feed_error: _Optional[str] = ..., pending_chunks: _Optional[int] = ...) -> None: ...
