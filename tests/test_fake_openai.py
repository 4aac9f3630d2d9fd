"""The fake OpenAI API speaks the real protocol: livekit-plugins-openai's own LLM, STT and TTS
run against it unchanged, and espeak-ng speech is real enough for silero VAD."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai as openai_sdk
import pytest
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import vad as lk_vad
from livekit.plugins import openai, silero

from tests.support.fake_openai import (
    DEFAULT_TRANSCRIPT,
    REDACTED,
    FakeOpenAI,
    Message,
    Reply,
    ToolCall,
    fake_openai,
    message_text,
)
from tests.support.speech import (
    frames_duration_s,
    read_wav,
    silence_frames,
    synthesize_speech,
    wav_frames,
)

pytestmark = pytest.mark.timeout(20)

API_KEY = "test-key"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with fake_openai() as running:
        yield running


def _chat_ctx(text: str) -> lk_llm.ChatContext:
    ctx = lk_llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a test agent.")
    ctx.add_message(role="user", content=text)
    return ctx


async def _chat(model: openai.LLM, text: str) -> tuple[str, list[lk_llm.ChatChunk]]:
    chunks: list[lk_llm.ChatChunk] = []
    async with model.chat(chat_ctx=_chat_ctx(text)) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    reply = "".join(c.delta.content or "" for c in chunks if c.delta is not None)
    return reply, chunks


# -- chat completions -------------------------------------------------------------------


async def test_plugin_llm_streams_the_default_reply(server: FakeOpenAI) -> None:
    model = openai.LLM(model="gpt-4.1", base_url=server.base_url, api_key=API_KEY)
    try:
        reply, chunks = await _chat(model, "What time is it in Paris?")
    finally:
        await model.aclose()

    assert reply == "I heard: What time is it in Paris?"
    # several content deltas, then a usage chunk (the plugin asks for include_usage)
    assert sum(1 for c in chunks if c.delta is not None and c.delta.content) >= 4
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1
    assert usage[0].completion_tokens > 0
    assert usage[0].total_tokens == usage[0].prompt_tokens + usage[0].completion_tokens

    (request,) = server.requests_to("/chat/completions")
    assert request.method == "POST"
    assert request.status == 200
    assert request.json["model"] == "gpt-4.1"
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}
    assert [m["role"] for m in request.json["messages"]] == ["system", "user"]
    assert request.headers["Authorization"] == REDACTED
    assert API_KEY not in json.dumps(request.headers)


async def test_plugin_llm_uses_the_responder_and_streams_tool_calls() -> None:
    seen: list[list[Message]] = []

    def responder(messages: list[Message]) -> str | Reply:
        seen.append(messages)
        if len(seen) == 1:
            return Reply(tool_calls=[ToolCall("lookup_order", {"order_id": "A-1234"})])
        return "Your order ships tomorrow."

    @lk_llm.function_tool
    async def lookup_order(order_id: str) -> str:
        """Look up an order.

        Args:
            order_id: the order number
        """
        return "ships tomorrow"

    with fake_openai(responder=responder, first_token_delay_s=0.2) as server:
        model = openai.LLM(model="gpt-4.1-mini", base_url=server.base_url, api_key=API_KEY)
        try:
            started = time.monotonic()
            calls: list[lk_llm.FunctionToolCall] = []
            async with model.chat(
                chat_ctx=_chat_ctx("Where is my order?"), tools=[lookup_order]
            ) as stream:
                async for chunk in stream:
                    if chunk.delta is not None and chunk.delta.tool_calls:
                        calls.extend(chunk.delta.tool_calls)
            assert time.monotonic() - started >= 0.2
            reply, _ = await _chat(model, "Thanks")
        finally:
            await model.aclose()

    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("lookup_order", {"order_id": "A-1234"})
    ]
    assert calls[0].call_id.startswith("call_")
    assert reply == "Your order ships tomorrow."
    assert message_text(seen[0][-1]) == "Where is my order?"
    first = server.requests_to("/chat/completions")[0]
    assert first.json["tools"][0]["function"]["name"] == "lookup_order"


def test_sdk_non_streaming_completion_and_models(server: FakeOpenAI) -> None:
    client = openai_sdk.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    with client:
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Ping"}]}],
        )
        models = client.models.list()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "I heard: Ping"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert "gpt-4.1" in [m.id for m in models.data]


def test_requests_without_a_bearer_token_get_401(server: FakeOpenAI) -> None:
    body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401
    error: dict[str, Any] = json.loads(caught.value.read())["error"]
    assert error["type"] == "invalid_request_error"
    assert "API key" in error["message"]
    assert server.requests[-1].status == 401

    with fake_openai(api_key="right") as strict:
        client = openai_sdk.OpenAI(base_url=strict.base_url, api_key="wrong", max_retries=0)
        with client, pytest.raises(openai_sdk.AuthenticationError) as denied:
            client.models.list()
    assert denied.value.code == "invalid_api_key"


# -- transcriptions ---------------------------------------------------------------------


async def test_plugin_stt_recognizes_espeak_speech(server: FakeOpenAI, tmp_path: Path) -> None:
    wav = synthesize_speech("Please book a table for two at seven.", tmp_path / "book.wav")
    samples, rate = read_wav(wav)
    spoken_s = len(samples) / rate
    server.queue_transcripts("Please book a table for two at seven.")

    model = openai.STT(base_url=server.base_url, api_key=API_KEY)  # gpt-4o-mini-transcribe
    assert not model.capabilities.streaming  # so it posts to /audio/transcriptions
    event = await model.recognize(wav_frames(wav, 48000, 20))
    second = await model.recognize(wav_frames(wav, 16000, 10))
    await model.aclose()
    await model._client.close()  # STT.aclose() leaves its HTTP client open (plugin 1.8.9)

    assert event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT
    assert event.alternatives[0].text == "Please book a table for two at seven."
    assert event.alternatives[0].language == "en"
    assert second.alternatives[0].text == DEFAULT_TRANSCRIPT  # the FIFO ran out

    first, _ = server.requests_to("/audio/transcriptions")
    assert first.form["model"] == "gpt-4o-mini-transcribe"
    assert first.form["response_format"] == "json"
    assert first.form["language"] == "en"
    assert first.upload is not None
    assert first.upload.filename == "file.wav"
    durations = server.transcription_durations
    assert all(d is not None and abs(d - spoken_s) < 0.05 for d in durations), durations


async def test_plugin_stt_whisper_gets_verbose_json(tmp_path: Path) -> None:
    wav = synthesize_speech("Good morning.", tmp_path / "morning.wav", 24000)
    heard: list[bytes] = []

    def transcriber(audio: bytes) -> str:
        heard.append(audio)
        return "good morning"

    with fake_openai(transcriber=transcriber) as server:
        model = openai.STT(model="whisper-1", base_url=server.base_url, api_key=API_KEY)
        event = await model.recognize(wav_frames(wav, 24000))
        await model.aclose()
        await model._client.close()
        (request,) = server.requests_to("/audio/transcriptions")

    assert event.alternatives[0].text == "good morning"
    assert request.form["response_format"] == "verbose_json"
    assert heard
    assert heard[0][:4] == b"RIFF"


# -- speech -----------------------------------------------------------------------------


async def _synthesize(model: openai.TTS, text: str) -> float:
    frames = []
    async with model.synthesize(text) as stream:
        async for audio in stream:
            frames.append(audio.frame)
    assert frames
    assert all(f.sample_rate == 24000 and f.num_channels == 1 for f in frames)
    return frames_duration_s(frames)


@pytest.mark.parametrize(
    ("model_name", "response_format", "body_kind"),
    [
        ("gpt-4o-mini-tts", "pcm", "sse"),
        ("tts-1", "pcm", "audio"),
        ("tts-1", "wav", "audio"),
        ("gpt-4o-mini-tts", None, "sse"),  # the plugin's default: mp3 over SSE
        ("tts-1", "opus", "audio"),
    ],
)
async def test_plugin_tts_audio_lasts_as_long_as_the_text(
    server: FakeOpenAI, model_name: str, response_format: str | None, body_kind: str
) -> None:
    text = "one two three four five six seven eight nine ten"  # 10 words: 600 ms
    if response_format is None:
        model = openai.TTS(model=model_name, base_url=server.base_url, api_key=API_KEY)
    else:
        model = openai.TTS(
            model=model_name,
            base_url=server.base_url,
            api_key=API_KEY,
            response_format=response_format,
        )
    try:
        duration = await _synthesize(model, text)
        short = await _synthesize(model, "Hi.")  # at least 300 ms
    finally:
        await model.aclose()

    # compressed formats add a few ms of encoder padding
    assert duration == pytest.approx(0.6, abs=0.06)
    assert short == pytest.approx(0.3, abs=0.06)
    request = server.requests_to("/audio/speech")[0]
    assert request.json["input"] == text
    assert request.json["response_format"] == (response_format or "mp3")
    assert request.json["stream_format"] == body_kind


async def test_tts_streams_its_body_in_chunks() -> None:
    with fake_openai(tts_chunk_ms=50, tts_chunk_interval_s=0.05) as server:
        client = openai_sdk.AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        arrivals: list[float] = []
        async with (
            client,
            client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="ash", input="a b c d e f g h i j", response_format="pcm"
            ) as response,
        ):
            assert response.headers["content-type"] == "audio/pcm"
            body = b""
            async for piece in response.iter_bytes():
                arrivals.append(time.monotonic())
                body += piece
    assert len(body) == 24000 * 2 * 6 // 10  # 600 ms of 16-bit samples
    assert arrivals[-1] - arrivals[0] >= 0.3  # spread over the 12 chunks


# -- speech realism ---------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [48000, 16000])
async def test_silero_vad_hears_espeak_speech(tmp_path: Path, sample_rate: int) -> None:
    wav = synthesize_speech(
        "Hello, I would like to change my delivery address.",
        tmp_path / "speech.wav",
        sample_rate,
    )
    frames = [
        *silence_frames(0.5, sample_rate),
        *wav_frames(wav, sample_rate, 10, trailing_silence_s=1.5),
    ]
    vad = silero.VAD.load()
    stream = vad.stream()
    for frame in frames:
        stream.push_frame(frame)
    stream.end_input()
    events: list[lk_vad.VADEvent] = []
    async for event in stream:
        if event.type != lk_vad.VADEventType.INFERENCE_DONE:
            events.append(event)
    await stream.aclose()

    kinds = [e.type for e in events]
    assert kinds[0] == lk_vad.VADEventType.START_OF_SPEECH, kinds
    assert kinds[-1] == lk_vad.VADEventType.END_OF_SPEECH, kinds
    spoken_s = frames_duration_s(wav_frames(wav, sample_rate))
    speech_s = sum(e.speech_duration for e in events if e.type == "end_of_speech")
    assert speech_s == pytest.approx(spoken_s, rel=0.35)
