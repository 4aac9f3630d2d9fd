"""Speech and language providers: OpenAI (or any server speaking its API) and Silero VAD,
plus the two text-mode providers of the terminal chat.

- `TypedTurnSTT` turns typed lines into the STT events a spoken turn produces, in the
  order a streaming speech server sends them (START_OF_SPEECH, END_OF_SPEECH, then the
  FINAL_TRANSCRIPT), so typed turns take the same path as spoken ones: preemptive
  generation, enrichment, end of turn, `on_user_turn_completed` (text sent with
  `session.generate_reply` would skip all of it).
- `OfflineResponder` is the LLM used when no OpenAI key is set: it says plainly that it is
  offline, and answers from what the chat context holds (the user's words and the context
  enrichment injected for this turn), so memory can be seen working without any API.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import APIConnectOptions, llm, stt
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, shortuuid

from voiceagent_backbone.agent_svc.config import AgentSettings

OFFLINE_LABEL = "[offline responder]"


def openai_providers(settings: AgentSettings) -> tuple[stt.STT[Any], llm.LLM[Any], Any]:
    from livekit.plugins import openai

    key = settings.openai_key()
    if key is None:
        raise ValueError("the voice worker needs OPENAI_API_KEY (or AGENT_OPENAI_API_KEY)")
    base_url: NotGivenOr[str] = settings.openai_base_url or NOT_GIVEN
    return (
        # The HTTP transcription endpoint (VAD segments the audio): works with every server
        # that speaks OpenAI's API, not only with OpenAI's realtime websocket.
        openai.STT(
            model=settings.stt_model,
            base_url=base_url,
            api_key=key,
            use_realtime=False,
            language=settings.default_language,
        ),
        openai.LLM(model=settings.llm_model, base_url=base_url, api_key=key),
        # Raw PCM: no decoding step before the first audio frame.
        openai.TTS(
            model=settings.tts_model,
            voice=settings.tts_voice,
            base_url=base_url,
            api_key=key,
            response_format="pcm",
        ),
    )


# -- typed turns ------------------------------------------------------------------------


class TypedTurnSTT(stt.STT[Any]):
    """Speech-to-text for a keyboard: each line put with `type_line` is one user turn."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self._lines: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

    @property
    def model(self) -> str:
        return "typed-text"

    @property
    def provider(self) -> str:
        return "keyboard"

    def type_line(self, text: str, final_after_s: float = 0.0) -> None:
        """One user turn; its final transcript comes `final_after_s` after the end of
        speech, as a speech server's does."""
        self._lines.put_nowait((text, final_after_s))

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("typed turns arrive through stream()")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return _TypedTurnStream(stt=self, conn_options=conn_options, lines=self._lines)


class _TypedTurnStream(stt.RecognizeStream):
    def __init__(
        self,
        *,
        stt: TypedTurnSTT,
        conn_options: APIConnectOptions,
        lines: asyncio.Queue[tuple[str, float]],
    ) -> None:
        super().__init__(stt=stt, conn_options=conn_options)
        self._lines = lines

    async def _run(self) -> None:
        while True:
            text, final_after_s = await self._lines.get()
            request_id = shortuuid("typed_")
            data = stt.SpeechData(language="en", text=text, confidence=1.0)  # type: ignore[arg-type]
            self._event_ch.send_nowait(
                stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH, request_id=request_id)
            )
            self._event_ch.send_nowait(
                stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, request_id=request_id)
            )
            if final_after_s > 0:
                await asyncio.sleep(final_after_s)
            self._event_ch.send_nowait(
                stt.SpeechEvent(
                    type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                    request_id=request_id,
                    alternatives=[data],
                )
            )


# -- the offline responder ----------------------------------------------------------------


def offline_reply(chat_ctx: llm.ChatContext) -> str:
    """A reply built only from the chat context: what the user said and, when enrichment
    found something, the most relevant remembered line."""
    said = ""
    remembered = ""
    for item in chat_ctx.items:
        if not isinstance(item, llm.ChatMessage):
            continue
        text = item.text_content or ""
        if item.role == "user":
            said = text
        elif item.role == "system" and text.startswith("Context that may help"):
            # The most relevant line that is not this very question again, nor one of this
            # responder's own replies.
            for ln in text.splitlines()[1:]:
                if ln.strip() and said.strip() not in ln and OFFLINE_LABEL not in ln:
                    remembered = ln.strip().lstrip("- ")
                    break
    reply = f"{OFFLINE_LABEL} You said: {said.strip()!r}."
    if remembered:
        reply += f" I remember: {remembered}"
    else:
        reply += " I have nothing related from earlier conversations yet."
    return reply


class OfflineResponder(llm.LLM[Any]):
    @property
    def model(self) -> str:
        return "offline-responder"

    @property
    def provider(self) -> str:
        return "local"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _OfflineStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _OfflineStream(llm.LLMStream):
    async def _run(self) -> None:
        reply = offline_reply(self._chat_ctx)
        request_id = shortuuid("offline_")
        for word in reply.split(" "):
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id, delta=llm.ChoiceDelta(role="assistant", content=word + " ")
                )
            )
