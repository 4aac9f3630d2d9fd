"""Conversions between domain objects and the plain dicts/rows the stores keep."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from voiceagent_backbone.state_svc.model import (
    ChatItem,
    Conversation,
    ConversationStatus,
    Deletion,
    DeletionReason,
    Event,
    EventType,
    KnowledgeChange,
    Role,
    Snapshot,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(value: datetime | None) -> int | None:
    """Microseconds since the epoch, exactly (through a float, a microsecond could be lost:
    document versions one microsecond apart must stay apart)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def from_us(value: int | None) -> datetime | None:
    if value is None:
        return None
    return _EPOCH + timedelta(microseconds=value)


def aware(value: datetime | None) -> datetime | None:
    """MongoDB returns naive UTC datetimes unless told otherwise; make them aware."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def conversation_fields(c: Conversation) -> dict[str, Any]:
    return {
        "conversation_id": c.conversation_id,
        "tenant_id": c.tenant_id,
        "room_name": c.room_name,
        "participant_identities": list(c.participant_identities),
        "user_ids": list(c.user_ids),
        "status": c.status.value,
        "started_at": c.started_at,
        "updated_at": c.updated_at,
        "ended_at": c.ended_at,
        "end_reason": c.end_reason,
        "last_seq": c.last_seq,
        "agent_name": c.agent_name,
        "metadata": c.metadata,
    }


def conversation_from(d: dict[str, Any]) -> Conversation:
    return Conversation(
        conversation_id=d["conversation_id"],
        tenant_id=d["tenant_id"],
        room_name=d["room_name"],
        participant_identities=list(d.get("participant_identities") or []),
        user_ids=list(d.get("user_ids") or []),
        status=ConversationStatus(d["status"]),
        started_at=_dt(d["started_at"]),
        updated_at=_dt(d["updated_at"]),
        ended_at=aware(d.get("ended_at")),
        end_reason=d.get("end_reason") or "",
        last_seq=int(d.get("last_seq") or 0),
        agent_name=d.get("agent_name") or "",
        metadata=dict(d.get("metadata") or {}),
    )


def _dt(value: datetime | None) -> datetime:
    result = aware(value)
    assert result is not None
    return result


def event_from(d: dict[str, Any]) -> Event:
    return Event(
        event_id=d["event_id"],
        type=EventType(d["type"]),
        role=Role(d.get("role") or ""),
        text=d.get("text") or "",
        payload=dict(d.get("payload") or {}),
        client_time=aware(d.get("client_time")),
        participant_identity=d.get("participant_identity") or "",
        detail_kind=d.get("detail_kind") or "",
        detail=dict(d.get("detail") or {}),
        conversation_id=d["conversation_id"],
        tenant_id=d["tenant_id"],
        seq=int(d["seq"]),
        server_time=aware(d.get("server_time")),
        feed_seq=int(d["feed_seq"]),
        user_ids=list(d.get("user_ids") or []),
    )


def deletion_fields(deletion: Deletion) -> dict[str, Any]:
    return {
        "reason": deletion.reason.value,
        "user_id": deletion.user_id,
        "conversation_ids": list(deletion.conversation_ids),
    }


def deletion_from(tenant_id: str, d: dict[str, Any]) -> Deletion:
    return Deletion(
        tenant_id=tenant_id,
        reason=DeletionReason(d["reason"]),
        user_id=d.get("user_id") or "",
        conversation_ids=list(d.get("conversation_ids") or []),
    )


def knowledge_fields(change: KnowledgeChange) -> dict[str, Any]:
    return {"document_id": change.document_id, "user_id": change.user_id}


def knowledge_from(tenant_id: str, d: dict[str, Any]) -> KnowledgeChange:
    return KnowledgeChange(
        tenant_id=tenant_id,
        document_id=d.get("document_id") or "",
        user_id=d.get("user_id") or "",
    )


def snapshot_body(s: Snapshot) -> dict[str, Any]:
    return {
        "current_agent": s.current_agent,
        "history": [
            {**asdict(item), "role": item.role.value, "created_at": to_us(item.created_at)}
            for item in s.history
        ],
        "userdata": s.userdata,
        "covered_seq": s.covered_seq,
    }


def snapshot_from(
    conversation_id: str, version: int, created_at: datetime | None, body: dict[str, Any]
) -> Snapshot:
    return Snapshot(
        conversation_id=conversation_id,
        version=version,
        current_agent=body.get("current_agent") or "",
        history=[
            ChatItem(
                item_id=h["item_id"],
                role=Role(h.get("role") or ""),
                text=h.get("text") or "",
                created_at=from_us(h.get("created_at")),
                interrupted=bool(h.get("interrupted")),
            )
            for h in body.get("history") or []
        ],
        userdata=dict(body.get("userdata") or {}),
        covered_seq=int(body.get("covered_seq") or 0),
        created_at=aware(created_at),
    )
