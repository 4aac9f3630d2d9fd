"""livekit-server's API as recovery_svc uses it: rooms, participants, dispatches.

`RoomServer` is what the domain needs; `LiveKitRooms` implements it with LiveKit's own
server SDK (Twirp over HTTP, signed with the API key)."""

from __future__ import annotations

import json
from typing import Protocol

import aiohttp
from livekit import api

from voiceagent_backbone.recovery_svc.model import DispatchedJob, Participant, Room

# Participants that are people (or phones): a room with one of them has a user in it.
_USER_KINDS = (api.ParticipantInfo.Kind.STANDARD, api.ParticipantInfo.Kind.SIP)


class RoomServer(Protocol):
    async def participants(self, room: str) -> list[Participant] | None:
        """The room's connected participants; None when the room does not exist."""
        ...

    async def remove(self, room: str, identity: str) -> None: ...

    async def dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        """Creates a dispatch of the agent to the room; returns its id."""
        ...

    async def cancel(self, room: str, dispatch_id: str) -> None:
        """Deletes a dispatch (and stops its job if one started)."""
        ...

    async def jobs(self, room: str) -> list[DispatchedJob]: ...

    async def rooms(self) -> list[Room]: ...

    async def aclose(self) -> None: ...


def conversation_id_of(room_metadata: str) -> str:
    """The conversation id agent_svc records in room metadata (JSON), or ""."""
    try:
        parsed = json.loads(room_metadata) if room_metadata else {}
    except ValueError:
        return ""
    value = parsed.get("conversation_id") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else ""


class LiveKitRooms:
    def __init__(self, url: str, api_key: str, api_secret: str, timeout_s: float = 5.0) -> None:
        # Self-hosted: one server (or one load-balanced address); no region failover.
        self._api = api.LiveKitAPI(
            url,
            api_key,
            api_secret,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            failover=False,
        )

    async def participants(self, room: str) -> list[Participant] | None:
        try:
            reply = await self._api.room.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError as error:
            if error.code == api.TwirpErrorCode.NOT_FOUND:
                return None
            raise
        return [
            Participant(p.identity, is_agent=p.kind not in _USER_KINDS)
            for p in reply.participants
            if p.state != api.ParticipantInfo.State.DISCONNECTED
        ]

    async def remove(self, room: str, identity: str) -> None:
        try:
            await self._api.room.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=identity)
            )
        except api.TwirpError as error:
            if error.code != api.TwirpErrorCode.NOT_FOUND:
                raise

    async def dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        created = await self._api.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        )
        return created.id

    async def cancel(self, room: str, dispatch_id: str) -> None:
        try:
            await self._api.agent_dispatch.delete_dispatch(dispatch_id, room)
        except api.TwirpError as error:
            if error.code != api.TwirpErrorCode.NOT_FOUND:
                raise

    async def jobs(self, room: str) -> list[DispatchedJob]:
        dispatches = await self._api.agent_dispatch.list_dispatch(room_name=room)
        return [
            DispatchedJob(
                job_id=job.id,
                dispatch_id=d.id,
                agent_name=d.agent_name,
                dispatch_metadata=d.metadata,
                agent_identity=job.state.participant_identity,
                created_at_ns=d.state.created_at,
            )
            for d in dispatches
            for job in d.state.jobs
        ] + [
            # A dispatch whose job is not assigned yet: a start in progress.
            DispatchedJob("", d.id, d.agent_name, d.metadata, "", d.state.created_at)
            for d in dispatches
            if not d.state.jobs
        ]

    async def rooms(self) -> list[Room]:
        reply = await self._api.room.list_rooms(api.ListRoomsRequest())
        return [Room(r.name, r.metadata) for r in reply.rooms]

    async def aclose(self) -> None:
        await self._api.aclose()
