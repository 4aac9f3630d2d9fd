"""Opening a conversation: the room layer (resume or create) and the participant layer,
shared by the LiveKit worker and the terminal chat."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from google.protobuf.struct_pb2 import Struct

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.agent_svc.backend import BackendClient
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.conversation import ConversationState
from voiceagent_backbone.agent_svc.history import HistoryWindow
from voiceagent_backbone.agent_svc.metadata import (
    UserProfile,
    conversation_id_of,
    merged_room_metadata,
    parse_room_metadata,
)
from voiceagent_backbone.api.state.v1 import state_pb2
from voiceagent_backbone.servicekit.ids import uuid7

log = logging.getLogger(__name__)


class RoomMetadata(Protocol):
    """Where the room layer lives: LiveKit's room metadata, or a file for the terminal."""

    async def read(self) -> str: ...

    async def write(self, metadata: str) -> None: ...


class LiveKitRoomMetadata:
    """Room metadata through the LiveKit server API (the job's token may not update it)."""

    def __init__(self, room_name: str, current: str, api: object) -> None:
        self._room_name = room_name
        self._current = current
        self._api = api

    async def read(self) -> str:
        from livekit import api as lk_api

        # The freshest value: another party may have changed it since the job joined.
        rooms = await self._api.room.list_rooms(  # type: ignore[attr-defined]
            lk_api.ListRoomsRequest(names=[self._room_name])
        )
        for room in rooms.rooms:
            self._current = room.metadata
        return self._current

    async def write(self, metadata: str) -> None:
        from livekit import api as lk_api

        await self._api.room.update_room_metadata(  # type: ignore[attr-defined]
            lk_api.UpdateRoomMetadataRequest(room=self._room_name, metadata=metadata)
        )


class FileRoomMetadata:
    """The terminal chat has no LiveKit room: its "room metadata" is a JSON file."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def read(self) -> str:
        return self._path.read_text() if self._path.exists() else ""

    async def write(self, metadata: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(metadata)
        tmp.replace(self._path)


async def open_conversation(
    *,
    settings: AgentSettings,
    backend: BackendClient,
    room: RoomMetadata,
    room_name: str,
    profile: UserProfile,
    participant_identity: str,
) -> ConversationState:
    """Resume the conversation named in room metadata, or create one and record its id there.

    Creation is queued like every write (it is idempotent by id), so a state_svc outage at
    the start of a call delays persistence but not the call.
    """
    try:
        current = await room.read()
    except Exception:
        log.warning("could not read room metadata; using what the job saw", exc_info=True)
        current = ""
    conversation_id = conversation_id_of(parse_room_metadata(current))
    resumed = conversation_id is not None
    if conversation_id is None:
        conversation_id = uuid7()
        metadata = Struct()
        metadata.update({"source": "agent_svc"})
        backend.writer.create_conversation(
            state_pb2.CreateConversationRequest(
                conversation_id=conversation_id,
                room_name=room_name,
                participant_identities=[participant_identity] if participant_identity else [],
                user_ids=[profile.user_id] if profile.user_id else [],
                agent_name=settings.name,
                metadata=metadata,
            )
        )
        try:
            await room.write(merged_room_metadata(current, conversation_id))
        except Exception:
            # The call goes on; a later job in this room starts a new conversation.
            metrics.BACKEND_ERRORS.labels("create_conversation").inc()
            log.error("could not write the conversation id to room metadata", exc_info=True)
    metrics.SESSIONS.labels("resumed" if resumed else "new").inc()
    log.info(
        "conversation opened",
        extra={"conversation_id": conversation_id, "resumed": resumed, "room": room_name},
    )
    state = ConversationState(
        conversation_id=conversation_id,
        resumed=resumed,
        room_name=room_name,
        agent_name=settings.name,
        backend=backend,
        history=HistoryWindow(settings.history_window),
        profile=profile,
        participant_identity=participant_identity,
    )
    state.save_profile()
    return state
