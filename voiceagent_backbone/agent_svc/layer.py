"""The public state layer: durable state for your own LiveKit agent.

    layer = StateLayer()                                  # AGENT_* settings from the env
    server = AgentServer()

    @server.rtc_session(agent_name="my-agent", on_session_end=layer.on_session_end)
    async def entrypoint(ctx: JobContext) -> None:
        conversation = await layer.open(ctx)              # resume or create, who the user is
        session = AgentSession(stt=..., llm=conversation.enriched(my_llm), tts=..., vad=...)
        await conversation.start(session, MyAgent(), room=ctx.room)

`open` reads the conversation id from room metadata (or creates a conversation and writes
its id there) and the user's profile from participant metadata; `start` restores the
earlier turns into the agent's chat context on resume, attaches the session handlers that
persist everything, and starts the session. Nothing here touches the agent's instructions,
tools, hooks or greeting: those stay yours.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, JobContext, llm, room_io

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.agent_svc.attendance import Attendance
from voiceagent_backbone.agent_svc.backend import STATE_SCOPES, BackendClient, agent_token
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.conversation import ConversationState
from voiceagent_backbone.agent_svc.enrichment import EnrichedLLM, TurnEnricher
from voiceagent_backbone.agent_svc.handlers import attach_handlers
from voiceagent_backbone.agent_svc.history import Turn
from voiceagent_backbone.agent_svc.metadata import UserProfile, parse_participant_metadata
from voiceagent_backbone.agent_svc.session import (
    LiveKitRoomMetadata,
    RoomMetadata,
    open_conversation,
)
from voiceagent_backbone.api.recovery.v1 import recovery_pb2

log = logging.getLogger(__name__)

ProfileListener = Callable[[UserProfile], Any]

# The conversations of the jobs running in this process, by job id. Process-wide rather than
# per StateLayer: LiveKit sends `on_session_end` to the job process pickled, and a bound
# method pickles a copy of its StateLayer, not the module's instance the entrypoint uses.
_OPEN: dict[str, Conversation] = {}


class Conversation:
    """One session's durable state: what `StateLayer.open` returns.

    Read `conversation_id`, `resumed`, `profile` and `history` (the bounded window of recent
    turns); pass `enriched(llm)` as the session's LLM for per-turn context; call `start`
    instead of `session.start`."""

    def __init__(self, state: ConversationState, backend: BackendClient) -> None:
        self.state = state
        self.backend = backend
        self.enricher = TurnEnricher(backend, state)
        self._profile_listeners: list[ProfileListener] = []
        self._session: AgentSession[Any] | None = None
        self._active = False
        self._closed = False
        # The job's stream to recovery_svc (when one is configured).
        self.attendance: Attendance | None = None

    # -- what the agent may read -----------------------------------------------------

    @property
    def conversation_id(self) -> str:
        return self.state.conversation_id

    @property
    def resumed(self) -> bool:
        """True when room metadata named an earlier conversation of this room."""
        return self.state.resumed

    @property
    def profile(self) -> UserProfile:
        return self.state.profile

    @property
    def user_left(self) -> bool:
        return self.state.user_left

    @property
    def history(self) -> list[Turn]:
        return list(self.state.history)

    # -- wiring ----------------------------------------------------------------------

    def enriched(self, model: llm.LLM[Any]) -> llm.LLM[Any]:
        """`model` with context from context_svc added to each reply (see enrichment.py).
        Realtime models have no per-request hook: pass them to the session unwrapped."""
        if isinstance(model, llm.RealtimeModel) or not isinstance(model, llm.LLM):
            raise TypeError(
                "enriched() wraps an llm.LLM; a realtime model is used as it is "
                "(its turns and errors are still persisted)"
            )
        return EnrichedLLM(model, self.enricher)

    def exclude_from_memory(self, text: str) -> None:
        """Call before `session.say(text)` for what the agent says to everyone (a fixed
        greeting or farewell): that message is stored like any other (history, resume) but
        never remembered, so later calls are not enriched with it. Only the next agent
        message with these words is affected (case and punctuation aside)."""
        self.state.exclude_from_memory(text)

    def on_profile_changed(self, listener: ProfileListener) -> None:
        """Call `listener(profile)` (a function or a coroutine function) whenever the
        participant's metadata changes; the new profile is already saved."""
        self._profile_listeners.append(listener)

    async def start(
        self,
        session: AgentSession[Any],
        agent: Agent,
        *,
        room: rtc.Room | None = None,
        room_options: room_io.RoomOptions | None = None,
        restore: bool = True,
        **start_kwargs: Any,
    ) -> None:
        """Attach the handlers, restore earlier turns into `agent` (on resume, unless
        `restore=False`), then `session.start(agent=agent, room=room, ...)`."""
        self.attach(session)
        if restore and self.resumed:
            await self.restore(agent)
        if room is not None and room_options is None and self.state.participant_identity:
            room_options = room_io.RoomOptions(participant_identity=self.state.participant_identity)
        if room is not None:
            start_kwargs["room"] = room
        if room_options is not None:
            start_kwargs["room_options"] = room_options
        await session.start(agent=agent, **start_kwargs)

    def attach(self, session: AgentSession[Any]) -> None:
        """Persist what happens in `session` (done by `start`; for those who start the
        session themselves)."""
        if self._session is session:
            return
        if self._session is not None:
            raise RuntimeError("this conversation is already attached to another session")
        self._session = session
        attach_handlers(session, self.state, self.enricher)
        self._active = True
        metrics.SESSIONS_ACTIVE.inc()
        session.on("close", lambda _: self._inactive())

    def _inactive(self) -> None:
        if self._active:
            self._active = False
            metrics.SESSIONS_ACTIVE.dec()

    async def restore(self, agent: Agent) -> int:
        """Put the last turns of this conversation (snapshot, then event log) into `agent`'s
        chat context; returns how many. Bounded by the read timeout: on failure the call
        goes on without them."""
        state = self.state
        settings = self.backend.settings
        snapshot, events = await asyncio.gather(
            self.backend.reader.latest_snapshot(state.conversation_id),
            self.backend.reader.history(state.conversation_id, settings.resume_turns),
        )
        if snapshot is not None:
            state.snapshot = snapshot
            state.history.extend(Turn.from_proto(item) for item in snapshot.history)
        if events:
            state.load_history(events)
        if events is None and snapshot is None:
            log.warning("resuming without history: state_svc did not answer in time")
        ctx = agent.chat_ctx.copy()
        restored = 0
        for turn in state.history:
            if turn.role in ("user", "assistant"):
                ctx.add_message(
                    role=turn.role,  # type: ignore[arg-type]
                    content=turn.text,
                    id=restored_item_id(turn.item_id),
                    created_at=turn.created_at,
                )
                restored += 1
        await agent.update_chat_ctx(ctx)
        log.info(
            "resumed conversation",
            extra={"conversation_id": state.conversation_id, "turns": restored},
        )
        return restored

    async def update_profile(self, profile: UserProfile) -> None:
        """A new profile (participant metadata changed): saved, then the listeners run."""
        self.state.profile = profile
        self.state.save_profile()
        for listener in self._profile_listeners:
            result = listener(profile)
            if asyncio.iscoroutine(result):
                await result

    # -- the end ---------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """Save the final snapshot and end the conversation (once; writes are queued)."""
        self.state.finish(reason)

    async def aclose(self, timeout_s: float | None = None) -> bool:
        """End the conversation if the session's close did not (it may never come: after a
        realtime model's fatal error livekit-agents emits no close event), flush every
        write (bounded) and stop the BackendClient; False when some writes are left in the
        spool for the next process."""
        if self._closed:
            return True
        self._closed = True
        self._inactive()
        self.end(self.state.end_reason or "session_closed")
        await self.end_attendance()
        return await self.backend.aclose(timeout_s)

    async def end_attendance(self) -> None:
        """Tell recovery_svc this job ends of its own accord: no recovery follows."""
        if self.attendance is not None:
            await self.attendance.end(self.state.end_reason or "job_ended")


class StateLayer:
    """Durable state for the agents of one worker: create it once, at import time."""

    def __init__(self, settings: AgentSettings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> AgentSettings:
        # Read lazily: the environment is the job process's.
        if self._settings is None:
            self._settings = AgentSettings()
        return self._settings

    async def open(
        self, ctx: JobContext, participant: rtc.RemoteParticipant | None = None
    ) -> Conversation:
        """Connect (if needed), wait for the user (unless given), then open the room's
        conversation: resumed from room metadata, or created and recorded there."""
        if not ctx.room.isconnected():
            await ctx.connect()
        if participant is None:
            participant = await ctx.wait_for_participant()
        profile = parse_participant_metadata(participant.metadata, participant.identity)
        conversation = await self.open_room(
            LiveKitRoomMetadata(ctx.room.name, ctx.room.metadata, ctx.api),
            room_name=ctx.room.name,
            profile=profile,
            participant_identity=participant.identity,
        )
        _OPEN[ctx.job.id] = conversation
        identity = participant.identity
        if self.settings.recovery_target:
            conversation.attendance = self._attend(ctx, conversation, identity)

        async def flush_on_shutdown(reason: str) -> None:
            # After the session closed and on_session_end ran: whatever is still queued is
            # sent, or left in the spool for the next process in this pod.
            _OPEN.pop(ctx.job.id, None)
            await conversation.aclose(self.settings.flush_timeout_s)

        ctx.add_shutdown_callback(flush_on_shutdown)

        @ctx.room.on("participant_metadata_changed")
        def _on_metadata(p: rtc.Participant, old: str, new: str) -> None:
            if p.identity == identity:
                changed = parse_participant_metadata(new, identity)
                task = asyncio.create_task(conversation.update_profile(changed))
                task.add_done_callback(_log_failure)

        @ctx.room.on("participant_disconnected")
        def _on_left(p: rtc.RemoteParticipant) -> None:
            if p.identity == identity:
                conversation.state.user_left = True
                conversation.state.end_reason = "participant_disconnected"

        return conversation

    async def open_room(
        self,
        room: RoomMetadata,
        *,
        room_name: str,
        profile: UserProfile,
        participant_identity: str = "",
    ) -> Conversation:
        """The same without LiveKit: `room` holds the room layer (`FileRoomMetadata` for a
        terminal). The caller closes the conversation (`aclose`)."""
        backend = BackendClient(self.settings)
        await backend.start()
        state = await open_conversation(
            settings=self.settings,
            backend=backend,
            room=room,
            room_name=room_name,
            profile=profile,
            participant_identity=participant_identity,
        )
        return Conversation(state, backend)

    def _attend(self, ctx: JobContext, conversation: Conversation, user: str) -> Attendance:
        job = recovery_pb2.Job(
            room_name=ctx.room.name,
            job_id=ctx.job.id,
            dispatch_id=ctx.job.dispatch_id,
            agent_name=ctx.job.agent_name,
            dispatch_metadata=ctx.job.metadata,
            conversation_id=conversation.conversation_id,
            agent_identity=ctx.room.local_participant.identity,
            user_identity=user,
            resumed=conversation.resumed,
        )
        target = self.settings.recovery_target or ""
        return Attendance(target, agent_token(self.settings, STATE_SCOPES), job)

    def conversation(self, ctx: JobContext) -> Conversation | None:
        """The conversation `open` returned for this job, while the job runs."""
        return _OPEN.get(ctx.job.id)

    async def on_session_end(self, ctx: JobContext) -> None:
        """Pass as `rtc_session(on_session_end=...)`: LiveKit runs it after the session,
        even when the entrypoint crashed. The conversation is ended (if the session's close
        did not) and every write flushed before the job process goes away."""
        conversation = _OPEN.get(ctx.job.id)
        if conversation is None:
            return
        conversation.end(conversation.state.end_reason or "job_ended")
        await conversation.end_attendance()
        flushed = await conversation.backend.flush(self.settings.flush_timeout_s)
        if not flushed:
            log.warning("session ended with writes still queued; they wait in the spool")


def restored_item_id(item_id: str) -> str:
    """The chat item id of a restored turn: stable, and short and plain enough for every
    provider (OpenAI's Realtime API refuses ids over 32 characters or outside
    [A-Za-z0-9_-], and then every item chained after it)."""
    return "r_" + hashlib.blake2s(item_id.encode(), digest_size=12).hexdigest()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("profile update failed", exc_info=task.exception())
