"""Session event handlers: persist what happens and feed the metrics.

livekit's event emitter calls handlers synchronously on the session's loop, so each one
only reads the event and hands writes to the BackendClient's queue: microseconds, never I/O.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from livekit.agents import AgentSession, APIError, llm, stt, tts
from livekit.agents.voice.events import (
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    FunctionToolsExecutedEvent,
    SpeechCreatedEvent,
    UserInputTranscribedEvent,
)
from livekit.agents.voice.speech_handle import SpeechHandle

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.agent_svc.conversation import ConversationState
from voiceagent_backbone.agent_svc.enrichment import TurnEnricher

log = logging.getLogger(__name__)


def _observe_latencies(item: llm.ChatMessage) -> None:
    """The turn's latencies, from the message's own metrics (livekit deprecated the
    metrics_collected event for them, with a warning in every session)."""
    report = item.metrics
    if item.role == "user":
        if (delay := report.get("transcription_delay")) is not None:
            metrics.STT_LATENCY.observe(delay)
        if (delay := report.get("end_of_turn_delay")) is not None:
            metrics.EOU_DELAY.observe(delay)
        return
    if (ttft := report.get("llm_node_ttft")) is not None:
        metrics.LLM_TTFT.observe(ttft)
    if (ttfb := report.get("tts_node_ttfb")) is not None:
        metrics.TTS_TTFB.observe(ttfb)


def _source_name(source: Any) -> str:
    if isinstance(source, llm.LLM | llm.RealtimeModel):
        return "llm"
    if isinstance(source, stt.STT):
        return "stt"
    if isinstance(source, tts.TTS):
        return "tts"
    return "other"


def error_message(error: object) -> str:
    """The error's text and, for a provider's API error, what the provider answered (the
    exception's own text is often generic, like "OpenAI Realtime API returned an error")."""
    text = str(error)
    body = getattr(error, "body", None)
    if isinstance(error, APIError) and body:
        try:
            detail = json.dumps(body, default=str)
        except ValueError:
            detail = repr(body)
        text = f"{text}: {detail}"
    return text


def attach_handlers(
    session: AgentSession[Any], state: ConversationState, enricher: TurnEnricher
) -> None:
    def on_transcribed(ev: UserInputTranscribedEvent) -> None:
        if ev.is_final and ev.transcript.strip():
            # Enrichment starts here, before the end of the turn is decided.
            enricher.heard(ev.transcript)
            state.record_transcription(ev.transcript, str(ev.language or ""), ev.speaker_id)

    def on_item_added(ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if isinstance(item, llm.AgentHandoff):
            state.record_handoff(item.old_agent_id or "", item.new_agent_id)
            return
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        if item.role == "user":
            enricher.turn_committed()
            metrics.TURNS.inc()
        _observe_latencies(item)
        text = item.text_content or ""
        if not text.strip():
            return
        state.history.add_text(item.id, item.role, text, item.interrupted)
        state.record_message(item.role, text, item.id, item.interrupted)

    def on_tools_executed(ev: FunctionToolsExecutedEvent) -> None:
        for call, output in ev.zipped():
            state.record_tool_call(
                call.call_id, call.name, call.arguments, output.output, output.is_error
            )

    def on_speech_created(ev: SpeechCreatedEvent) -> None:
        created = time.monotonic()
        handle = ev.speech_handle

        def done(h: SpeechHandle) -> None:
            state.record_speech(
                h.id, ev.source, ev.user_initiated, time.monotonic() - created, h.interrupted
            )

        handle.add_done_callback(done)

    def on_error(ev: ErrorEvent) -> None:
        source = _source_name(ev.source)
        error = ev.error
        recoverable = bool(getattr(error, "recoverable", False))
        exc = getattr(error, "error", None)
        exc = exc if isinstance(exc, BaseException) else None
        metrics.SESSION_ERRORS.labels(source, str(recoverable).lower()).inc()
        log.error(
            "session error",
            extra={"source": source, "recoverable": recoverable},
            exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
        )
        if not recoverable:
            state.record_error(error_message(exc or error), source, recoverable, exc)
            # The session ends because of it; say so even if no close event follows (after a
            # realtime model's fatal error, livekit-agents 1.8.9 emits none).
            state.end_reason = state.end_reason or "error"

    def on_close(ev: CloseEvent) -> None:
        reason = ev.reason.value
        log.info(
            "session closed",
            extra={"reason": reason, "conversation_id": state.conversation_id},
        )
        if ev.error is not None:
            exc = getattr(ev.error, "error", None)
            state.record_error(
                f"session closed on error: {ev.error}",
                _source_name(getattr(ev.error, "source", None)),
                False,
                exc if isinstance(exc, BaseException) else None,
            )
        # The conversation ends with the session: its final snapshot, then the end (a reason
        # set earlier, like the participant leaving, wins over the session's).
        state.finish(state.end_reason or reason)

    session.on("user_input_transcribed", on_transcribed)
    session.on("conversation_item_added", on_item_added)
    session.on("function_tools_executed", on_tools_executed)
    session.on("speech_created", on_speech_created)
    session.on("error", on_error)
    session.on("close", on_close)
