import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConversationStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERSATION_STATUS_UNSPECIFIED: _ClassVar[ConversationStatus]
    CONVERSATION_STATUS_OPEN: _ClassVar[ConversationStatus]
    CONVERSATION_STATUS_ENDED: _ClassVar[ConversationStatus]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_TRANSCRIPTION: _ClassVar[EventType]
    EVENT_TYPE_USER_MESSAGE: _ClassVar[EventType]
    EVENT_TYPE_AGENT_MESSAGE: _ClassVar[EventType]
    EVENT_TYPE_TTS_SPEECH: _ClassVar[EventType]
    EVENT_TYPE_USER_ACTION: _ClassVar[EventType]
    EVENT_TYPE_ERROR: _ClassVar[EventType]
    EVENT_TYPE_AGENT_HANDOFF: _ClassVar[EventType]
    EVENT_TYPE_TOOL_CALL: _ClassVar[EventType]
    EVENT_TYPE_RECOVERY: _ClassVar[EventType]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_AGENT: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]

class RecoveryPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOVERY_PHASE_UNSPECIFIED: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_CLAIMED: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_DISPATCHED: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_RECOVERED: _ClassVar[RecoveryPhase]
    RECOVERY_PHASE_GAVE_UP: _ClassVar[RecoveryPhase]

class DeletionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELETION_REASON_UNSPECIFIED: _ClassVar[DeletionReason]
    DELETION_REASON_RETENTION: _ClassVar[DeletionReason]
    DELETION_REASON_USER_REQUEST: _ClassVar[DeletionReason]

class EmbeddingOwner(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMBEDDING_OWNER_UNSPECIFIED: _ClassVar[EmbeddingOwner]
    EMBEDDING_OWNER_CONVERSATION: _ClassVar[EmbeddingOwner]
    EMBEDDING_OWNER_USER: _ClassVar[EmbeddingOwner]
    EMBEDDING_OWNER_DOCUMENT: _ClassVar[EmbeddingOwner]
CONVERSATION_STATUS_UNSPECIFIED: ConversationStatus
CONVERSATION_STATUS_OPEN: ConversationStatus
CONVERSATION_STATUS_ENDED: ConversationStatus
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_TRANSCRIPTION: EventType
EVENT_TYPE_USER_MESSAGE: EventType
EVENT_TYPE_AGENT_MESSAGE: EventType
EVENT_TYPE_TTS_SPEECH: EventType
EVENT_TYPE_USER_ACTION: EventType
EVENT_TYPE_ERROR: EventType
EVENT_TYPE_AGENT_HANDOFF: EventType
EVENT_TYPE_TOOL_CALL: EventType
EVENT_TYPE_RECOVERY: EventType
ROLE_UNSPECIFIED: Role
ROLE_USER: Role
ROLE_AGENT: Role
ROLE_SYSTEM: Role
RECOVERY_PHASE_UNSPECIFIED: RecoveryPhase
RECOVERY_PHASE_CLAIMED: RecoveryPhase
RECOVERY_PHASE_DISPATCHED: RecoveryPhase
RECOVERY_PHASE_RECOVERED: RecoveryPhase
RECOVERY_PHASE_GAVE_UP: RecoveryPhase
DELETION_REASON_UNSPECIFIED: DeletionReason
DELETION_REASON_RETENTION: DeletionReason
DELETION_REASON_USER_REQUEST: DeletionReason
EMBEDDING_OWNER_UNSPECIFIED: EmbeddingOwner
EMBEDDING_OWNER_CONVERSATION: EmbeddingOwner
EMBEDDING_OWNER_USER: EmbeddingOwner
EMBEDDING_OWNER_DOCUMENT: EmbeddingOwner

class Conversation(_message.Message):
    __slots__ = ("conversation_id", "tenant_id", "room_name", "participant_identities", "user_ids", "status", "started_at", "ended_at", "end_reason", "last_seq", "agent_name", "metadata")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_NAME_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    tenant_id: str
    room_name: str
    participant_identities: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    status: ConversationStatus
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    end_reason: str
    last_seq: int
    agent_name: str
    metadata: _struct_pb2.Struct
    def __init__(self, conversation_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., room_name: _Optional[str] = ..., participant_identities: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., status: _Optional[_Union[ConversationStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_reason: _Optional[str] = ..., last_seq: _Optional[int] = ..., agent_name: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class TranscriptionDetail(_message.Message):
    __slots__ = ("final", "language", "confidence", "speaker_id")
    FINAL_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    final: bool
    language: str
    confidence: float
    speaker_id: str
    def __init__(self, final: _Optional[bool] = ..., language: _Optional[str] = ..., confidence: _Optional[float] = ..., speaker_id: _Optional[str] = ...) -> None: ...

class SpeechDetail(_message.Message):
    __slots__ = ("speech_id", "source", "user_initiated", "duration", "interrupted")
    SPEECH_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    USER_INITIATED_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    speech_id: str
    source: str
    user_initiated: bool
    duration: _duration_pb2.Duration
    interrupted: bool
    def __init__(self, speech_id: _Optional[str] = ..., source: _Optional[str] = ..., user_initiated: _Optional[bool] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., interrupted: _Optional[bool] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("message", "stack_trace", "source", "recoverable")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STACK_TRACE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RECOVERABLE_FIELD_NUMBER: _ClassVar[int]
    message: str
    stack_trace: str
    source: str
    recoverable: bool
    def __init__(self, message: _Optional[str] = ..., stack_trace: _Optional[str] = ..., source: _Optional[str] = ..., recoverable: _Optional[bool] = ...) -> None: ...

class HandoffDetail(_message.Message):
    __slots__ = ("from_agent", "to_agent", "reason")
    FROM_AGENT_FIELD_NUMBER: _ClassVar[int]
    TO_AGENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    from_agent: str
    to_agent: str
    reason: str
    def __init__(self, from_agent: _Optional[str] = ..., to_agent: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ToolCallDetail(_message.Message):
    __slots__ = ("call_id", "name", "arguments", "output", "is_error")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    name: str
    arguments: str
    output: str
    is_error: bool
    def __init__(self, call_id: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[str] = ..., output: _Optional[str] = ..., is_error: _Optional[bool] = ...) -> None: ...

class RecoveryDetail(_message.Message):
    __slots__ = ("phase", "lost_job_id", "lost_identity", "attempt", "dispatch_id", "new_job_id", "reason", "lost_at", "agent_absent", "replica_id", "new_identity")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    LOST_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LOST_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LOST_AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ABSENT_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    phase: RecoveryPhase
    lost_job_id: str
    lost_identity: str
    attempt: int
    dispatch_id: str
    new_job_id: str
    reason: str
    lost_at: _timestamp_pb2.Timestamp
    agent_absent: _duration_pb2.Duration
    replica_id: str
    new_identity: str
    def __init__(self, phase: _Optional[_Union[RecoveryPhase, str]] = ..., lost_job_id: _Optional[str] = ..., lost_identity: _Optional[str] = ..., attempt: _Optional[int] = ..., dispatch_id: _Optional[str] = ..., new_job_id: _Optional[str] = ..., reason: _Optional[str] = ..., lost_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_absent: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., replica_id: _Optional[str] = ..., new_identity: _Optional[str] = ...) -> None: ...

class UserActionDetail(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: str
    def __init__(self, action: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "conversation_id", "seq", "type", "role", "text", "payload", "client_time", "server_time", "participant_identity", "tenant_id", "user_ids", "transcription", "speech", "error", "handoff", "user_action", "tool_call", "recovery")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_FIELD_NUMBER: _ClassVar[int]
    USER_ACTION_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    conversation_id: str
    seq: int
    type: EventType
    role: Role
    text: str
    payload: _struct_pb2.Struct
    client_time: _timestamp_pb2.Timestamp
    server_time: _timestamp_pb2.Timestamp
    participant_identity: str
    tenant_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    transcription: TranscriptionDetail
    speech: SpeechDetail
    error: ErrorDetail
    handoff: HandoffDetail
    user_action: UserActionDetail
    tool_call: ToolCallDetail
    recovery: RecoveryDetail
    def __init__(self, event_id: _Optional[str] = ..., conversation_id: _Optional[str] = ..., seq: _Optional[int] = ..., type: _Optional[_Union[EventType, str]] = ..., role: _Optional[_Union[Role, str]] = ..., text: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., client_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., participant_identity: _Optional[str] = ..., tenant_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ..., transcription: _Optional[_Union[TranscriptionDetail, _Mapping]] = ..., speech: _Optional[_Union[SpeechDetail, _Mapping]] = ..., error: _Optional[_Union[ErrorDetail, _Mapping]] = ..., handoff: _Optional[_Union[HandoffDetail, _Mapping]] = ..., user_action: _Optional[_Union[UserActionDetail, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCallDetail, _Mapping]] = ..., recovery: _Optional[_Union[RecoveryDetail, _Mapping]] = ...) -> None: ...

class ChatItem(_message.Message):
    __slots__ = ("item_id", "role", "text", "created_at", "interrupted")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    role: Role
    text: str
    created_at: _timestamp_pb2.Timestamp
    interrupted: bool
    def __init__(self, item_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., text: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interrupted: _Optional[bool] = ...) -> None: ...

class Snapshot(_message.Message):
    __slots__ = ("conversation_id", "version", "current_agent", "history", "userdata", "covered_seq", "created_at")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_AGENT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    USERDATA_FIELD_NUMBER: _ClassVar[int]
    COVERED_SEQ_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    version: int
    current_agent: str
    history: _containers.RepeatedCompositeFieldContainer[ChatItem]
    userdata: _struct_pb2.Struct
    covered_seq: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, conversation_id: _Optional[str] = ..., version: _Optional[int] = ..., current_agent: _Optional[str] = ..., history: _Optional[_Iterable[_Union[ChatItem, _Mapping]]] = ..., userdata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., covered_seq: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserProfile(_message.Message):
    __slots__ = ("user_id", "display_name", "preferences", "created_at", "updated_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    display_name: str
    preferences: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., preferences: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Deletion(_message.Message):
    __slots__ = ("tenant_id", "reason", "user_id", "conversation_ids")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_IDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    reason: DeletionReason
    user_id: str
    conversation_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., reason: _Optional[_Union[DeletionReason, str]] = ..., user_id: _Optional[str] = ..., conversation_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class KnowledgeChange(_message.Message):
    __slots__ = ("tenant_id", "document_id", "user_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    document_id: str
    user_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., document_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("cursor", "event", "deletion", "knowledge")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DELETION_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    event: Event
    deletion: Deletion
    knowledge: KnowledgeChange
    def __init__(self, cursor: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., deletion: _Optional[_Union[Deletion, _Mapping]] = ..., knowledge: _Optional[_Union[KnowledgeChange, _Mapping]] = ...) -> None: ...

class CreateConversationRequest(_message.Message):
    __slots__ = ("conversation_id", "room_name", "participant_identities", "user_ids", "agent_name", "metadata")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_NAME_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    room_name: str
    participant_identities: _containers.RepeatedScalarFieldContainer[str]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    agent_name: str
    metadata: _struct_pb2.Struct
    def __init__(self, conversation_id: _Optional[str] = ..., room_name: _Optional[str] = ..., participant_identities: _Optional[_Iterable[str]] = ..., user_ids: _Optional[_Iterable[str]] = ..., agent_name: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateConversationResponse(_message.Message):
    __slots__ = ("conversation", "created")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    created: bool
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class FindOpenConversationRequest(_message.Message):
    __slots__ = ("room_name",)
    ROOM_NAME_FIELD_NUMBER: _ClassVar[int]
    room_name: str
    def __init__(self, room_name: _Optional[str] = ...) -> None: ...

class FindOpenConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "next_page_token")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[Conversation]
    next_page_token: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[Conversation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EndConversationRequest(_message.Message):
    __slots__ = ("conversation_id", "reason")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    reason: str
    def __init__(self, conversation_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EndConversationResponse(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ...) -> None: ...

class AppendEventsRequest(_message.Message):
    __slots__ = ("conversation_id", "events")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, conversation_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class AppendResult(_message.Message):
    __slots__ = ("event_id", "seq", "duplicate")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    seq: int
    duplicate: bool
    def __init__(self, event_id: _Optional[str] = ..., seq: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class AppendEventsResponse(_message.Message):
    __slots__ = ("results", "last_seq")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AppendResult]
    last_seq: int
    def __init__(self, results: _Optional[_Iterable[_Union[AppendResult, _Mapping]]] = ..., last_seq: _Optional[int] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("conversation_id", "types", "last_n", "page_size", "page_token")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    LAST_N_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    types: _containers.RepeatedScalarFieldContainer[EventType]
    last_n: int
    page_size: int
    page_token: str
    def __init__(self, conversation_id: _Optional[str] = ..., types: _Optional[_Iterable[_Union[EventType, str]]] = ..., last_n: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("events", "next_page_token", "last_seq")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_page_token: str
    last_seq: int
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., last_seq: _Optional[int] = ...) -> None: ...

class SaveSnapshotRequest(_message.Message):
    __slots__ = ("conversation_id", "snapshot")
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    snapshot: Snapshot
    def __init__(self, conversation_id: _Optional[str] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class SaveSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class GetLatestSnapshotRequest(_message.Message):
    __slots__ = ("conversation_id",)
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_id: str
    def __init__(self, conversation_id: _Optional[str] = ...) -> None: ...

class GetLatestSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Snapshot
    def __init__(self, snapshot: _Optional[_Union[Snapshot, _Mapping]] = ...) -> None: ...

class UpsertUserRequest(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: UserProfile
    def __init__(self, user: _Optional[_Union[UserProfile, _Mapping]] = ...) -> None: ...

class UpsertUserResponse(_message.Message):
    __slots__ = ("user", "created")
    USER_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    user: UserProfile
    created: bool
    def __init__(self, user: _Optional[_Union[UserProfile, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: UserProfile
    def __init__(self, user: _Optional[_Union[UserProfile, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("cursor", "all_tenants", "stop_at_end", "max_batch")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ALL_TENANTS_FIELD_NUMBER: _ClassVar[int]
    STOP_AT_END_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    all_tenants: bool
    stop_at_end: bool
    max_batch: int
    def __init__(self, cursor: _Optional[str] = ..., all_tenants: _Optional[bool] = ..., stop_at_end: _Optional[bool] = ..., max_batch: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("changes", "caught_up", "backlog")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    caught_up: bool
    backlog: int
    def __init__(self, changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ..., caught_up: _Optional[bool] = ..., backlog: _Optional[int] = ...) -> None: ...

class SetRetentionPolicyRequest(_message.Message):
    __slots__ = ("retention",)
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    retention: _duration_pb2.Duration
    def __init__(self, retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SetRetentionPolicyResponse(_message.Message):
    __slots__ = ("retention",)
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    retention: _duration_pb2.Duration
    def __init__(self, retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetRetentionPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRetentionPolicyResponse(_message.Message):
    __slots__ = ("retention", "is_default")
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    retention: _duration_pb2.Duration
    is_default: bool
    def __init__(self, retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., is_default: _Optional[bool] = ...) -> None: ...

class ExportUserDataRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ExportUserDataResponse(_message.Message):
    __slots__ = ("user", "conversation", "event", "snapshot", "fact")
    USER_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    FACT_FIELD_NUMBER: _ClassVar[int]
    user: UserProfile
    conversation: Conversation
    event: Event
    snapshot: Snapshot
    fact: UserFact
    def __init__(self, user: _Optional[_Union[UserProfile, _Mapping]] = ..., conversation: _Optional[_Union[Conversation, _Mapping]] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., snapshot: _Optional[_Union[Snapshot, _Mapping]] = ..., fact: _Optional[_Union[UserFact, _Mapping]] = ...) -> None: ...

class DeleteUserDataRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteUserDataResponse(_message.Message):
    __slots__ = ("conversations_deleted", "events_deleted", "snapshots_deleted", "profile_deleted", "embeddings_deleted", "facts_deleted")
    CONVERSATIONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    PROFILE_DELETED_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_DELETED_FIELD_NUMBER: _ClassVar[int]
    FACTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    conversations_deleted: int
    events_deleted: int
    snapshots_deleted: int
    profile_deleted: bool
    embeddings_deleted: int
    facts_deleted: int
    def __init__(self, conversations_deleted: _Optional[int] = ..., events_deleted: _Optional[int] = ..., snapshots_deleted: _Optional[int] = ..., profile_deleted: _Optional[bool] = ..., embeddings_deleted: _Optional[int] = ..., facts_deleted: _Optional[int] = ...) -> None: ...

class EmbeddingKey(_message.Message):
    __slots__ = ("tenant_id", "owner", "owner_id", "item_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    owner: EmbeddingOwner
    owner_id: str
    item_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., owner: _Optional[_Union[EmbeddingOwner, str]] = ..., owner_id: _Optional[str] = ..., item_id: _Optional[str] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("key", "vector")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    key: EmbeddingKey
    vector: bytes
    def __init__(self, key: _Optional[_Union[EmbeddingKey, _Mapping]] = ..., vector: _Optional[bytes] = ...) -> None: ...

class EmbeddingClaim(_message.Message):
    __slots__ = ("key", "vector", "owned", "held_until", "gone")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    HELD_UNTIL_FIELD_NUMBER: _ClassVar[int]
    GONE_FIELD_NUMBER: _ClassVar[int]
    key: EmbeddingKey
    vector: bytes
    owned: bool
    held_until: _timestamp_pb2.Timestamp
    gone: bool
    def __init__(self, key: _Optional[_Union[EmbeddingKey, _Mapping]] = ..., vector: _Optional[bytes] = ..., owned: _Optional[bool] = ..., held_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gone: _Optional[bool] = ...) -> None: ...

class ClaimEmbeddingsRequest(_message.Message):
    __slots__ = ("model", "keys", "holder", "lease_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    keys: _containers.RepeatedCompositeFieldContainer[EmbeddingKey]
    holder: str
    lease_ms: int
    def __init__(self, model: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[EmbeddingKey, _Mapping]]] = ..., holder: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class ClaimEmbeddingsResponse(_message.Message):
    __slots__ = ("claims",)
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    claims: _containers.RepeatedCompositeFieldContainer[EmbeddingClaim]
    def __init__(self, claims: _Optional[_Iterable[_Union[EmbeddingClaim, _Mapping]]] = ...) -> None: ...

class PutEmbeddingsRequest(_message.Message):
    __slots__ = ("model", "holder", "embeddings")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    model: str
    holder: str
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, model: _Optional[str] = ..., holder: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class PutEmbeddingResult(_message.Message):
    __slots__ = ("key", "duplicate", "dropped")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    key: EmbeddingKey
    duplicate: bool
    dropped: bool
    def __init__(self, key: _Optional[_Union[EmbeddingKey, _Mapping]] = ..., duplicate: _Optional[bool] = ..., dropped: _Optional[bool] = ...) -> None: ...

class PutEmbeddingsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PutEmbeddingResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PutEmbeddingResult, _Mapping]]] = ...) -> None: ...

class GetEmbeddingsRequest(_message.Message):
    __slots__ = ("model", "keys")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    model: str
    keys: _containers.RepeatedCompositeFieldContainer[EmbeddingKey]
    def __init__(self, model: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[EmbeddingKey, _Mapping]]] = ...) -> None: ...

class GetEmbeddingsResponse(_message.Message):
    __slots__ = ("embeddings", "not_returned")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    NOT_RETURNED_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    not_returned: _containers.RepeatedCompositeFieldContainer[EmbeddingKey]
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., not_returned: _Optional[_Iterable[_Union[EmbeddingKey, _Mapping]]] = ...) -> None: ...

class ListEmbeddingsRequest(_message.Message):
    __slots__ = ("model", "page_size", "page_token")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model: str
    page_size: int
    page_token: str
    def __init__(self, model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEmbeddingsResponse(_message.Message):
    __slots__ = ("embeddings", "next_page_token")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    next_page_token: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class KnowledgeDocument(_message.Message):
    __slots__ = ("document_id", "title", "text", "metadata", "stored_at", "text_bytes")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    TEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    title: str
    text: str
    metadata: _struct_pb2.Struct
    stored_at: _timestamp_pb2.Timestamp
    text_bytes: int
    def __init__(self, document_id: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., stored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., text_bytes: _Optional[int] = ...) -> None: ...

class PutDocumentRequest(_message.Message):
    __slots__ = ("tenant_id", "document")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    document: KnowledgeDocument
    def __init__(self, tenant_id: _Optional[str] = ..., document: _Optional[_Union[KnowledgeDocument, _Mapping]] = ...) -> None: ...

class PutDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: KnowledgeDocument
    def __init__(self, document: _Optional[_Union[KnowledgeDocument, _Mapping]] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("tenant_id", "document_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    document_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., document_id: _Optional[str] = ...) -> None: ...

class GetDocumentResponse(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: KnowledgeDocument
    def __init__(self, document: _Optional[_Union[KnowledgeDocument, _Mapping]] = ...) -> None: ...

class ListDocumentsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDocumentsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[KnowledgeDocument]
    next_page_token: str
    def __init__(self, documents: _Optional[_Iterable[_Union[KnowledgeDocument, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDocumentRequest(_message.Message):
    __slots__ = ("tenant_id", "document_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    document_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., document_id: _Optional[str] = ...) -> None: ...

class DeleteDocumentResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class UserFact(_message.Message):
    __slots__ = ("fact_id", "text", "updated_at", "embedding_model", "vector")
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    fact_id: str
    text: str
    updated_at: _timestamp_pb2.Timestamp
    embedding_model: str
    vector: bytes
    def __init__(self, fact_id: _Optional[str] = ..., text: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., embedding_model: _Optional[str] = ..., vector: _Optional[bytes] = ...) -> None: ...

class PutFactsRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id", "facts")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    facts: _containers.RepeatedCompositeFieldContainer[UserFact]
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., facts: _Optional[_Iterable[_Union[UserFact, _Mapping]]] = ...) -> None: ...

class PutFactsResponse(_message.Message):
    __slots__ = ("facts",)
    FACTS_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[UserFact]
    def __init__(self, facts: _Optional[_Iterable[_Union[UserFact, _Mapping]]] = ...) -> None: ...

class ListFactsRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListFactsResponse(_message.Message):
    __slots__ = ("facts",)
    FACTS_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[UserFact]
    def __init__(self, facts: _Optional[_Iterable[_Union[UserFact, _Mapping]]] = ...) -> None: ...

class DeleteFactRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id", "fact_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    fact_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ..., fact_id: _Optional[str] = ...) -> None: ...

class DeleteFactResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
