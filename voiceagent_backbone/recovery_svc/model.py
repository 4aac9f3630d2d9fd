"""The records recovery_svc reasons about, independent of protobuf and of LiveKit's SDK."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class AttendedJob:
    """An agent job that announced itself on an Attend stream."""

    tenant: str
    room_name: str
    job_id: str
    dispatch_id: str
    agent_name: str
    dispatch_metadata: str
    conversation_id: str
    agent_identity: str
    user_identity: str
    resumed: bool


@dataclass(frozen=True)
class LostJob:
    """A job that is gone without ending: what a recovery needs to bring the agent back."""

    room_name: str
    conversation_id: str
    job_id: str
    agent_identity: str
    agent_name: str
    dispatch_metadata: str
    user_identity: str  # empty: any user in the room counts
    lost_at: datetime
    how: str  # "attend_stream_lost", "agent_left_room", "reconcile"


@dataclass(frozen=True)
class Participant:
    identity: str
    is_agent: bool


@dataclass(frozen=True)
class Room:
    name: str
    metadata: str


@dataclass(frozen=True)
class DispatchedJob:
    """A job of one of the room's dispatches, as livekit-server lists it."""

    job_id: str
    dispatch_id: str
    agent_name: str
    dispatch_metadata: str
    agent_identity: str
    created_at_ns: int


class Skip(enum.StrEnum):
    """Why a suspected loss was not recovered."""

    CONVERSATION_ENDED = "conversation_ended"
    CONVERSATION_UNKNOWN = "conversation_unknown"
    USER_ABSENT = "user_absent"
    AGENT_PRESENT = "agent_present"
    ALREADY_CLAIMED = "already_claimed"
    ROOM_GONE = "room_gone"
    TOO_MANY = "too_many_losses"


class Outcome(enum.StrEnum):
    """How one recovery attempt ended (the redispatch counter's label)."""

    RECOVERED = "recovered"
    DISPATCH_FAILED = "dispatch_failed"
    JOIN_TIMEOUT = "join_timeout"
    GAVE_UP = "gave_up"
