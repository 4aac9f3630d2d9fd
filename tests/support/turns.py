"""Spoken-turn timing without audio: an STT that reports a turn the way a streaming speech
server does, so LiveKit's own turn handling (preemptive generation, endpointing delay, end
of turn) runs for real.

`SpokenTurnSTT.speak(text)` emits START_OF_SPEECH, END_OF_SPEECH, then the FINAL_TRANSCRIPT
`final_after_s` later. In the session's "stt" turn-detection mode the final transcript then
starts a preemptive generation at once, and the end of turn follows the endpointing delay
after it: the gap in which enrichment has to be ready for the preemptive reply to be kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from livekit.agents import AgentSession, APIConnectOptions, llm, stt
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, shortuuid


@dataclass
class SpokenTurn:
    text: str
    final_after_s: float
    final_at: float = 0.0  # time.monotonic() when the final transcript was emitted


class SpokenTurnSTT(stt.STT[Any]):
    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self.turns: asyncio.Queue[SpokenTurn] = asyncio.Queue()
        self.spoken: list[SpokenTurn] = []

    @property
    def model(self) -> str:
        return "spoken-turns"

    @property
    def provider(self) -> str:
        return "test"

    def speak(self, text: str, final_after_s: float = 0.05) -> SpokenTurn:
        turn = SpokenTurn(text, final_after_s)
        self.spoken.append(turn)
        self.turns.put_nowait(turn)
        return turn

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("turns arrive through stream()")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _SpokenTurnStream(stt=self, conn_options=conn_options, turns=self.turns)


class _SpokenTurnStream(stt.RecognizeStream):
    def __init__(
        self,
        *,
        stt: SpokenTurnSTT,
        conn_options: APIConnectOptions,
        turns: asyncio.Queue[SpokenTurn],
    ) -> None:
        super().__init__(stt=stt, conn_options=conn_options)
        self._turns = turns

    async def _run(self) -> None:
        while True:
            turn = await self._turns.get()
            request_id = shortuuid("spoken_")
            self._event_ch.send_nowait(
                stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH, request_id=request_id)
            )
            self._event_ch.send_nowait(
                stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, request_id=request_id)
            )
            await asyncio.sleep(turn.final_after_s)
            turn.final_at = time.monotonic()
            data = stt.SpeechData(language="en", text=turn.text, confidence=1.0)  # type: ignore[arg-type]
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    request_id=request_id,
                    alternatives=[data],
                )
            )


def spoken_session(
    model: llm.LLM[Any], endpointing_s: float
) -> tuple[AgentSession[Any], SpokenTurnSTT]:
    """A session whose turns come from `SpokenTurnSTT`, with LiveKit's default preemptive
    generation and `endpointing_s` between the final transcript and the end of turn."""
    spoken = SpokenTurnSTT()
    session: AgentSession[Any] = AgentSession(
        stt=spoken,
        llm=model,
        vad=None,
        turn_handling={
            "turn_detection": "stt",
            "endpointing": {"min_delay": endpointing_s, "max_delay": endpointing_s + 1.0},
            "interruption": {"enabled": False},
        },
    )
    return session, spoken


@contextlib.contextmanager
def framework_log() -> Iterator[list[str]]:
    """LiveKit Agents' own log lines (its debug line says when a preemptive reply is used)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("livekit.agents")
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
