from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Job(_message.Message):
    __slots__ = ("room_name", "job_id", "dispatch_id", "agent_name", "dispatch_metadata", "conversation_id", "agent_identity", "user_identity", "resumed")
    ROOM_NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_METADATA_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    USER_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    room_name: str
    job_id: str
    dispatch_id: str
    agent_name: str
    dispatch_metadata: str
    conversation_id: str
    agent_identity: str
    user_identity: str
    resumed: bool
    def __init__(self, room_name: _Optional[str] = ..., job_id: _Optional[str] = ..., dispatch_id: _Optional[str] = ..., agent_name: _Optional[str] = ..., dispatch_metadata: _Optional[str] = ..., conversation_id: _Optional[str] = ..., agent_identity: _Optional[str] = ..., user_identity: _Optional[str] = ..., resumed: _Optional[bool] = ...) -> None: ...

class End(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class AttendRequest(_message.Message):
    __slots__ = ("job", "end")
    JOB_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    job: Job
    end: End
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., end: _Optional[_Union[End, _Mapping]] = ...) -> None: ...

class AttendResponse(_message.Message):
    __slots__ = ("replica_id",)
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    def __init__(self, replica_id: _Optional[str] = ...) -> None: ...
