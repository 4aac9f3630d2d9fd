"""ConversationState: one session's four state layers in one place, and the events it writes.

- room layer: `conversation_id` (from or written to room metadata) and whether it resumed;
- participant layer: `profile` (re-read when the participant's metadata changes);
- memory layer: `history`, the bounded window of recent turns;
- backend layer: `backend`, through which every change is persisted.

An agent message the agent marked with `exclude_from_memory` (a fixed greeting or farewell)
is stored like any other but flagged in its payload, {"memory": false}: context_svc does not
index it, so later calls are not "reminded" of what the agent says to everyone.
"""

from __future__ import annotations

import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from voiceagent_backbone.agent_svc.backend import BackendClient
from voiceagent_backbone.agent_svc.history import ROLE_TO_PROTO, HistoryWindow, Turn
from voiceagent_backbone.agent_svc.metadata import UserProfile
from voiceagent_backbone.api.state.v1 import state_pb2
from voiceagent_backbone.servicekit.ids import uuid7

_MAX_EVENT_TEXT = 16_000
_MAX_STACK = 8_000
# Arguments and output of a tool call, each (state_svc bounds a detail's size).
_MAX_TOOL_TEXT = 4_000
# The payload key context_svc reads (context_svc/wire.py, feed_item): false keeps an event
# out of memory; it is still stored, in the history and for resume.
MEMORY_KEY = "memory"
# Texts excluded from memory and not said yet: a few at a time (a greeting, a farewell);
# the oldest go first if an agent registers texts it never says.
_MAX_NOT_MEMORY = 16
_WORDS = re.compile(r"\w+")


def _words(text: str) -> str:
    """What is compared: the committed message may differ from the text given to `say` in
    case, punctuation and spacing (the transcript comes back from the TTS)."""
    return " ".join(_WORDS.findall(text.lower()))


def _now() -> Timestamp:
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def _struct(values: dict[str, Any]) -> Struct:
    s = Struct()
    for key, value in values.items():
        # Set field by field: Struct.update is several times slower on the handler path.
        if isinstance(value, bool):
            s.fields[key].bool_value = value
        elif isinstance(value, int | float):
            s.fields[key].number_value = value
        elif isinstance(value, str):
            s.fields[key].string_value = value
    return s


@dataclass
class ConversationState:
    conversation_id: str
    resumed: bool
    room_name: str
    agent_name: str
    backend: BackendClient
    history: HistoryWindow
    profile: UserProfile = field(default_factory=UserProfile)
    participant_identity: str = ""
    # What the previous session saved (resume): its summary of where things stood.
    snapshot: state_pb2.Snapshot | None = None
    last_seq: int = 0
    # The active agent's id (LiveKit's Agent.id), followed through handoffs.
    current_agent: str = ""
    ended: bool = False
    end_reason: str = ""
    user_left: bool = False
    # Agent texts excluded from memory and not yet committed (their words, see _words).
    not_memory: list[str] = field(default_factory=list)

    # -- writes -------------------------------------------------------------------------

    def _event(
        self, type_: int, role: int, text: str = "", payload: dict[str, Any] | None = None
    ) -> state_pb2.Event:
        return state_pb2.Event(
            event_id=uuid7(),
            type=type_,  # type: ignore[arg-type]
            role=role,  # type: ignore[arg-type]
            text=text[:_MAX_EVENT_TEXT],
            client_time=_now(),
            participant_identity=self.participant_identity if role == state_pb2.ROLE_USER else "",
            payload=_struct(payload or {}),
        )

    def record_transcription(self, text: str, language: str, speaker_id: str | None) -> None:
        event = self._event(state_pb2.EVENT_TYPE_TRANSCRIPTION, state_pb2.ROLE_USER, text)
        event.transcription.CopyFrom(
            state_pb2.TranscriptionDetail(
                final=True, language=language, speaker_id=speaker_id or ""
            )
        )
        self.backend.writer.append_event(self.conversation_id, event)

    def exclude_from_memory(self, text: str) -> None:
        """The next agent message with these words is stored flagged as not memory."""
        words = _words(text)
        if words:
            self.not_memory.append(words)
            del self.not_memory[:-_MAX_NOT_MEMORY]

    def _is_excluded(self, text: str, interrupted: bool) -> bool:
        """True (once) for an agent message registered by exclude_from_memory; an
        interrupted one matches what was said of it before the interruption."""
        said = _words(text)
        for i, words in enumerate(self.not_memory):
            if said == words or (interrupted and said and (words + " ").startswith(said + " ")):
                del self.not_memory[i]
                return True
        return False

    def record_message(self, role: str, text: str, item_id: str, interrupted: bool) -> None:
        """A user or agent message committed to the chat context."""
        type_ = (
            state_pb2.EVENT_TYPE_USER_MESSAGE
            if role == "user"
            else state_pb2.EVENT_TYPE_AGENT_MESSAGE
        )
        payload: dict[str, Any] = {"item_id": item_id, "interrupted": interrupted}
        if role == "assistant" and self.not_memory and self._is_excluded(text, interrupted):
            payload[MEMORY_KEY] = False
        event = self._event(type_, ROLE_TO_PROTO.get(role, state_pb2.ROLE_SYSTEM), text, payload)
        self.backend.writer.append_event(self.conversation_id, event)

    def record_speech(
        self,
        speech_id: str,
        source: str,
        user_initiated: bool,
        duration_s: float,
        interrupted: bool,
    ) -> None:
        event = self._event(state_pb2.EVENT_TYPE_TTS_SPEECH, state_pb2.ROLE_AGENT)
        duration = Duration()
        duration.FromNanoseconds(int(max(duration_s, 0.0) * 1e9))
        event.speech.CopyFrom(
            state_pb2.SpeechDetail(
                speech_id=speech_id,
                source=source,
                user_initiated=user_initiated,
                duration=duration,
                interrupted=interrupted,
            )
        )
        self.backend.writer.append_event(self.conversation_id, event)

    def record_error(
        self, message: str, source: str, recoverable: bool, exc: BaseException | None
    ) -> None:
        stack = ""
        if exc is not None:
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        event = self._event(state_pb2.EVENT_TYPE_ERROR, state_pb2.ROLE_SYSTEM, message)
        event.error.CopyFrom(
            state_pb2.ErrorDetail(
                message=message[:2000],
                stack_trace=stack[-_MAX_STACK:],
                source=source,
                recoverable=recoverable,
            )
        )
        self.backend.writer.append_event(self.conversation_id, event)

    def record_handoff(self, from_agent: str, to_agent: str) -> None:
        """The active agent changed (the first agent's start counts: from "")."""
        self.current_agent = to_agent
        event = self._event(state_pb2.EVENT_TYPE_AGENT_HANDOFF, state_pb2.ROLE_SYSTEM)
        event.handoff.CopyFrom(state_pb2.HandoffDetail(from_agent=from_agent, to_agent=to_agent))
        self.backend.writer.append_event(self.conversation_id, event)

    def record_tool_call(
        self, call_id: str, name: str, arguments: str, output: str, is_error: bool
    ) -> None:
        """One function tool call of the agent and what it returned."""
        event = self._event(state_pb2.EVENT_TYPE_TOOL_CALL, state_pb2.ROLE_AGENT)
        event.tool_call.CopyFrom(
            state_pb2.ToolCallDetail(
                call_id=call_id[:200],
                name=name[:200],
                arguments=arguments[:_MAX_TOOL_TEXT],
                output=output[:_MAX_TOOL_TEXT],
                is_error=is_error,
            )
        )
        self.backend.writer.append_event(self.conversation_id, event)

    def save_profile(self) -> None:
        if not self.profile.user_id:
            return
        prefs = Struct()
        prefs.update(self.profile.preferences)
        self.backend.writer.upsert_user(
            state_pb2.UserProfile(
                user_id=self.profile.user_id,
                display_name=self.profile.display_name,
                preferences=prefs,
            )
        )

    def save_snapshot(self, current_agent: str) -> None:
        userdata = _struct(
            {
                "user_id": self.profile.user_id,
                "display_name": self.profile.display_name,
                "language": self.profile.language,
                "participant_identity": self.participant_identity,
            }
        )
        snapshot = state_pb2.Snapshot(
            current_agent=current_agent, history=self.history.to_proto(), userdata=userdata
        )
        self.backend.writer.save_snapshot(self.conversation_id, snapshot)

    def finish(self, reason: str) -> None:
        """The final snapshot, then the end of the conversation (once)."""
        if self.ended:
            return
        self.save_snapshot(self.current_agent)
        self.end(reason)

    def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        self.backend.writer.end_conversation(self.conversation_id, reason)

    def load_history(self, events: list[state_pb2.Event]) -> None:
        self.history.extend(Turn.from_event(e) for e in events if e.text)
        if events:
            self.last_seq = max(self.last_seq, max(e.seq for e in events))
