"""A fake OpenAI HTTP API on loopback, for offline tests of agents built on livekit-plugins-openai.

It speaks the real wire protocol of the endpoints livekit-plugins-openai 1.8.9 calls through
the openai SDK, so the plugin's own code runs unchanged against it:

* ``POST /v1/chat/completions``: streaming (SSE ``chat.completion.chunk`` events, usage chunk
  when ``stream_options.include_usage``, ``data: [DONE]``) and non-streaming JSON; the reply
  comes from a *responder* (text, or text plus tool calls).
* ``POST /v1/audio/transcriptions``: multipart upload; ``json``, ``verbose_json``, ``text``,
  ``srt`` and ``vtt`` answers; the text comes from a *transcriber* or a FIFO of scripted
  transcripts.
* ``POST /v1/audio/speech``: a chirp whose length follows the text (``tts_ms_per_word``,
  at least ``tts_min_ms``), as raw ``pcm`` (24 kHz, 16-bit mono, little-endian), ``wav``, or
  ``mp3``/``opus``/``aac``/``flac`` encoded with PyAV; the body streams in chunks, or as SSE
  ``speech.audio.delta`` events when ``stream_format`` is ``"sse"`` (what the plugin asks for
  with its default model, gpt-4o-mini-tts).
* ``GET /v1/models`` and ``GET /v1/models/{id}``.

Every request needs a bearer token (401 otherwise, with the real API's error body) and is
recorded for assertions. The server runs on aiohttp in a thread of its own with its own event
loop, so sync and async tests use it alike::

    with fake_openai(responder=lambda messages: "Hi there.") as server:
        llm = openai.LLM(model="gpt-4.1", base_url=server.base_url, api_key="test-key")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import re
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

from tests.support.loopback import LoopbackServer

TTS_SAMPLE_RATE = 24000
DEFAULT_TRANSCRIPT = "What is the weather like today?"
DEFAULT_MODELS = (
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o-mini",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe",
    "whisper-1",
    "gpt-4o-mini-tts",
    "tts-1",
)
MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # the real API's limit for audio uploads
REDACTED = "<redacted>"

# What the real API declares for each speech response_format.
SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# PyAV container and codec for the compressed formats.
_AV_FORMATS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}
# tts-1 and tts-1-hd bill by character and cannot stream SSE.
_AUDIO_ONLY_TTS_MODELS = {"tts-1", "tts-1-hd"}
_LANGUAGE_NAMES = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "ja": "japanese",
    "zh": "chinese",
}


@dataclass(frozen=True)
class ToolCall:
    """A function call the fake model makes; ``arguments`` is sent as JSON text."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = ""

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    """A chat reply with tool calls; a responder may return this instead of a plain string."""

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()


Message = dict[str, Any]
Responder = Callable[[list[Message]], "str | Reply"]
Transcriber = Callable[[bytes], str]


@dataclass(frozen=True)
class Upload:
    """The file part of a multipart request."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One request as the server received it. ``status`` is set once the answer starts."""

    method: str
    path: str  # e.g. "/v1/chat/completions"
    query: dict[str, str]
    headers: dict[str, str]  # the Authorization value replaced by REDACTED
    json: Any = None  # the parsed JSON body, None without one
    form: dict[str, str | list[str]] = field(default_factory=dict)  # multipart fields
    upload: Upload | None = None
    audio_duration_s: float | None = None  # decoded duration of an uploaded audio file
    status: int | None = None
    received_at: float = field(default_factory=time.monotonic)

    @property
    def endpoint(self) -> str:
        """The path below /v1, e.g. "/chat/completions"."""
        return self.path.removeprefix("/v1")


def default_responder(messages: list[Message]) -> str:
    """ "I heard: <the last user message's text>"."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return f"I heard: {message_text(message)}"
    return "Hello! How can I help?"


def message_text(message: Message) -> str:
    """The text of a chat message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def wav_duration_s(data: bytes) -> float | None:
    """The duration of a WAV file, or None if the bytes are not a WAV file."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate = wav.getframerate()
            # count the data actually present: streamed WAV headers may claim more
            frame_bytes = wav.getsampwidth() * wav.getnchannels()
            frames = len(wav.readframes(wav.getnframes()))
            return frames / frame_bytes / rate if rate and frame_bytes else None
    except (wave.Error, EOFError):
        return None


def audio_duration_s(data: bytes) -> float | None:
    """The duration of an audio file: WAV read directly, other formats decoded with PyAV."""
    duration = wav_duration_s(data)
    if duration is not None:
        return duration
    try:
        import av

        samples, rate = 0, 0
        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(audio=0):
                samples += frame.samples
                rate = frame.sample_rate
        return samples / rate if rate else None
    except Exception:
        return None


def chirp_pcm(duration_s: float, sample_rate: int = TTS_SAMPLE_RATE) -> npt.NDArray[np.int16]:
    """An audible rising tone (220 to 440 Hz) with short fades, as int16 samples."""
    n = max(1, round(duration_s * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    f0, f1 = 220.0, 440.0
    phase = 2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * max(duration_s, 1e-6)))
    signal = 0.3 * np.sin(phase)
    fade = min(n // 2, round(0.01 * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[-fade:] *= ramp[::-1]
    return (signal * 32767).astype("<i2")


def encode_audio(
    pcm: npt.NDArray[np.int16], response_format: str, sample_rate: int = TTS_SAMPLE_RATE
) -> bytes:
    """Mono int16 samples in a speech response_format (pcm, wav, mp3, opus, aac, flac)."""
    if response_format == "pcm":
        return pcm.astype("<i2").tobytes()
    if response_format == "wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(pcm.astype("<i2").tobytes())
        return out.getvalue()
    container_format, codec = _AV_FORMATS[response_format]
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _error(
    status: int, message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=_request_id_header())


def _request_id_header() -> dict[str, str]:
    return {"x-request-id": f"req_{uuid.uuid4().hex}"}


def _invalid(message: str, param: str | None = None) -> web.Response:
    return _error(400, message, type_="invalid_request_error", param=param)


def _count_tokens(text: str) -> int:
    """A rough token count: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _split_deltas(text: str) -> list[str]:
    """The reply cut into word-sized content deltas, as a model streams them."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


class FakeOpenAI:
    """The running fake; create it with :func:`fake_openai`. Options may be changed live."""

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        transcriber: Transcriber | Iterable[str] | None = None,
        default_transcript: str = DEFAULT_TRANSCRIPT,
        first_token_delay_s: float = 0.0,
        token_interval_s: float = 0.0,
        api_key: str | None = None,
        tts_ms_per_word: int = 60,
        tts_min_ms: int = 300,
        tts_chunk_ms: int = 100,
        tts_chunk_interval_s: float = 0.0,
        models: Sequence[str] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder: Responder = responder or default_responder
        self.transcriber: Transcriber | None = None
        self.default_transcript = default_transcript
        self.first_token_delay_s = first_token_delay_s
        self.token_interval_s = token_interval_s
        self.api_key = api_key
        self.tts_ms_per_word = tts_ms_per_word
        self.tts_min_ms = tts_min_ms
        self.tts_chunk_ms = tts_chunk_ms
        self.tts_chunk_interval_s = tts_chunk_interval_s
        self.models = list(models)
        self._transcripts: deque[str] = deque()
        if callable(transcriber):
            self.transcriber = transcriber
        elif transcriber is not None:
            self._transcripts.extend(transcriber)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._server = LoopbackServer(
            "fake-openai", self._dispatch, host, port, MAX_UPLOAD_BYTES + 1024 * 1024
        )

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """http://HOST:PORT"""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """http://HOST:PORT/v1, for ``base_url=`` of the openai SDK and the plugin."""
        return f"{self.url}/v1"

    # -- scripting ---------------------------------------------------------------------

    def queue_transcripts(self, *texts: str) -> None:
        """Transcripts for the next uploads, in order; used before the transcriber."""
        with self._lock:
            self._transcripts.extend(texts)

    def pending_transcripts(self) -> list[str]:
        with self._lock:
            return list(self._transcripts)

    # -- recorded requests -------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        """The requests to one endpoint, named below /v1 (e.g. "/chat/completions")."""
        with self._lock:
            return [r for r in self._requests if r.endpoint == endpoint]

    @property
    def transcription_durations(self) -> list[float | None]:
        """The decoded audio duration of each transcription upload, in seconds."""
        return [r.audio_duration_s for r in self.requests_to("/audio/transcriptions")]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for_requests(
        self, endpoint: str, count: int = 1, timeout_s: float = 10.0
    ) -> list[RecordedRequest]:
        """Block until ``count`` requests reached ``endpoint``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [r for r in self._requests if r.endpoint == endpoint]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(found)} of {count} requests to {endpoint} after {timeout_s}s"
                    )
                self._changed.wait(left)

    async def wait_for_requests_async(
        self, endpoint: str, count: int = 1, timeout_s: float = 10.0
    ) -> list[RecordedRequest]:
        """:meth:`wait_for_requests` without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.requests_to(endpoint)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} requests to {endpoint} after {timeout_s}s"
                )
            await asyncio.sleep(0.02)

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    def start(self, timeout_s: float = 10.0) -> None:
        self._server.start(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.stop(timeout_s)

    # -- HTTP --------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={
                k: (REDACTED if k.lower() == "authorization" else v)
                for k, v in request.headers.items()
            },
        )
        bad_body: web.Response | None = None
        try:
            await self._read_body(request, record)
        except ValueError as exc:
            bad_body = _invalid(str(exc))
        self._record(record)
        response = self._check_auth(request) or bad_body or await self._route(request, record)
        record.status = response.status
        return response

    async def _read_body(self, request: web.Request, record: RecordedRequest) -> None:
        if not request.can_read_body:
            return
        content_type = request.content_type
        if content_type == "application/json":
            raw = await request.read()
            try:
                record.json = json.loads(raw) if raw else None
            except json.JSONDecodeError as exc:
                raise ValueError(
                    "We could not parse the JSON body of your request. (HINT: This likely means"
                    " you aren't using your HTTP library correctly. The OpenAI API expects a JSON"
                    " payload, but what was sent was not valid JSON."
                ) from exc
        elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.post()
            for key in form:
                values = form.getall(key)
                for value in values:
                    if isinstance(value, web.FileField):
                        record.upload = Upload(
                            field=key,
                            filename=value.filename,
                            content_type=value.content_type,
                            data=value.file.read(),
                        )
                texts = [str(v) for v in values if not isinstance(v, web.FileField)]
                if texts:
                    record.form[key] = texts[0] if len(texts) == 1 else texts
            if record.upload is not None:
                record.audio_duration_s = audio_duration_s(record.upload.data)
        else:
            await request.read()

    def _check_auth(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an"
                " Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY),"
                " or as the password field (with blank username) if you're accessing the API"
                " from your browser and are prompted for a username and password. You can"
                " obtain an API key from https://platform.openai.com/account/api-keys.",
                type_="invalid_request_error",
            )
        if self.api_key is not None and token != self.api_key:
            return _error(
                401,
                "Incorrect API key provided. You can find your API key at"
                " https://platform.openai.com/account/api-keys.",
                type_="invalid_request_error",
                code="invalid_api_key",
            )
        return None

    async def _route(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        method, endpoint = request.method, record.endpoint
        if request.path.startswith("/v1/"):
            if method == "POST" and endpoint == "/chat/completions":
                return await self._chat(request, record)
            if method == "POST" and endpoint == "/audio/transcriptions":
                return await self._transcribe(request, record)
            if method == "POST" and endpoint == "/audio/speech":
                return await self._speech(request, record)
            if method == "GET" and endpoint == "/models":
                return self._models()
            if method == "GET" and endpoint.startswith("/models/"):
                return self._model(endpoint.removeprefix("/models/"))
        return _error(404, f"Invalid URL ({method} {request.path})", type_="invalid_request_error")

    def _models(self) -> web.Response:
        data = [self._model_object(m) for m in self.models]
        return web.json_response({"object": "list", "data": data}, headers=_request_id_header())

    def _model(self, model: str) -> web.Response:
        if model not in self.models:
            return _error(
                404,
                f"The model '{model}' does not exist",
                type_="invalid_request_error",
                param="model",
                code="model_not_found",
            )
        return web.json_response(self._model_object(model), headers=_request_id_header())

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1700000000, "owned_by": "system"}

    # -- chat completions --------------------------------------------------------------

    async def _chat(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        body = record.json
        if not isinstance(body, dict):
            return _invalid("You must provide a JSON body.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _invalid("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _invalid(
                "Invalid 'messages': empty array. Expected an array with minimum length 1,"
                " but got an empty array instead.",
                "messages",
            )
        result = self.responder(messages)
        reply = result if isinstance(result, Reply) else Reply(text=result)
        calls = [
            call
            if call.id
            else ToolCall(call.name, call.arguments, f"call_{uuid.uuid4().hex[:24]}")
            for call in reply.tool_calls
        ]
        prompt_tokens = sum(_count_tokens(message_text(m)) for m in messages)
        completion_tokens = _count_tokens(reply.text) + sum(
            _count_tokens(c.name + c.arguments_json()) for c in calls
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        finish_reason = "tool_calls" if calls else "stop"
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0penai",
        }
        if self.first_token_delay_s > 0:
            await asyncio.sleep(self.first_token_delay_s)

        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply.text or None,
                "refusal": None,
                "annotations": [],
            }
            if calls:
                message["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json()},
                    }
                    for c in calls
                ]
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            completion = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return web.json_response(completion, headers=_request_id_header())

        stream_options = body.get("stream_options") or {}
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **_request_id_header(),
            }
        )
        await response.prepare(request)

        async def send(choices: list[dict[str, Any]], usage_value: Any = None) -> None:
            chunk: dict[str, Any] = {**base, "object": "chat.completion.chunk", "choices": choices}
            if include_usage:
                chunk["usage"] = usage_value
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

        role = {"role": "assistant", "content": None if calls else "", "refusal": None}
        await send(delta(role))
        for i, piece in enumerate(_split_deltas(reply.text)):
            if i and self.token_interval_s > 0:
                await asyncio.sleep(self.token_interval_s)
            await send(delta({"content": piece}))
        for index, call in enumerate(calls):
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await send(delta({"tool_calls": [head]}))
            arguments = call.arguments_json()
            for start in range(0, len(arguments), 16):
                piece = arguments[start : start + 16]
                await send(
                    delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        await send(delta({}, finish_reason))
        if include_usage:
            await send([], usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- transcriptions ----------------------------------------------------------------

    def _next_transcript(self, audio: bytes) -> str:
        with self._lock:
            if self._transcripts:
                return self._transcripts.popleft()
        if self.transcriber is not None:
            return self.transcriber(audio)
        return self.default_transcript

    async def _transcribe(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            return _invalid("Expected a multipart/form-data request body.")
        upload = record.upload
        if upload is None:
            return _invalid("you must provide a file parameter", "file")
        model = record.form.get("model")
        if not isinstance(model, str) or not model:
            return _invalid("you must provide a model parameter", "model")
        if record.audio_duration_s is None:
            return _invalid(
                "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg',"
                " 'mpga', 'oga', 'ogg', 'wav', 'webm']",
                "file",
            )
        response_format = record.form.get("response_format", "json")
        if not isinstance(response_format, str):
            return _invalid("response_format must be a string", "response_format")
        whisper = model.startswith("whisper")
        if response_format not in ("json", "text", "srt", "vtt", "verbose_json"):
            return _invalid(
                f"Invalid value: '{response_format}'. Supported values are: 'json', 'text',"
                " 'srt', 'verbose_json', and 'vtt'.",
                "response_format",
            )
        if not whisper and response_format != "json" and response_format != "text":
            return _invalid(
                f"response_format '{response_format}' is not compatible with model '{model}'."
                " Use 'json' or 'text' instead.",
                "response_format",
            )
        text = self._next_transcript(upload.data)
        duration = record.audio_duration_s
        headers = _request_id_header()
        if response_format == "text":
            return web.Response(text=f"{text}\n", content_type="text/plain", headers=headers)
        if response_format in ("srt", "vtt"):
            return web.Response(
                text=_subtitles(text, duration, vtt=response_format == "vtt"),
                content_type="text/plain",
                headers=headers,
            )
        if whisper:
            usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(duration)}
        else:
            audio_tokens = max(1, round(duration * 10))
            output_tokens = _count_tokens(text)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": output_tokens,
                "total_tokens": audio_tokens + output_tokens,
            }
        if response_format == "json":
            return web.json_response({"text": text, "usage": usage}, headers=headers)
        language = record.form.get("language")
        code = language if isinstance(language, str) and language else "en"
        verbose = {
            "task": "transcribe",
            "language": _LANGUAGE_NAMES.get(code.split("-")[0], code),
            "duration": round(duration, 2),
            "text": text,
            "segments": [
                {
                    "id": 0,
                    "seek": 0,
                    "start": 0.0,
                    "end": round(duration, 2),
                    "text": f" {text}",
                    "tokens": list(range(50364, 50364 + _count_tokens(text))),
                    "temperature": 0.0,
                    "avg_logprob": -0.2,
                    "compression_ratio": 1.0,
                    "no_speech_prob": 0.01,
                }
            ],
            "usage": usage,
        }
        return web.json_response(verbose, headers=headers)

    # -- speech ------------------------------------------------------------------------

    def speech_duration_s(self, text: str) -> float:
        """How long the audio for ``text`` lasts: tts_ms_per_word, at least tts_min_ms."""
        words = len(text.split())
        return max(self.tts_min_ms, self.tts_ms_per_word * words) / 1000

    async def _speech(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        body = record.json
        if not isinstance(body, dict):
            return _invalid("You must provide a JSON body.")
        text = body.get("input")
        if not isinstance(text, str) or not text:
            return _invalid("you must provide an input parameter", "input")
        if len(text) > 4096:
            return _invalid(
                f"[{{'type': 'string_too_long', 'loc': ('body', 'input'), 'msg': 'String should"
                f" have at most 4096 characters', 'input': '{text[:20]}...'}}]",
                "input",
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _invalid("you must provide a model parameter", "model")
        if not body.get("voice"):
            return _invalid("you must provide a voice parameter", "voice")
        response_format = body.get("response_format") or "mp3"
        if response_format not in SPEECH_CONTENT_TYPES:
            return _invalid(
                f"Invalid value: '{response_format}'. Supported values are: 'mp3', 'opus',"
                " 'aac', 'flac', 'wav', and 'pcm'.",
                "response_format",
            )
        stream_format = body.get("stream_format") or "audio"
        if stream_format not in ("audio", "sse"):
            return _invalid(
                f"Invalid value: '{stream_format}'. Supported values are: 'sse' and 'audio'.",
                "stream_format",
            )
        if stream_format == "sse" and model in _AUDIO_ONLY_TTS_MODELS:
            return _invalid(
                f"stream_format 'sse' is not supported for model '{model}'.", "stream_format"
            )

        speed = body.get("speed", 1.0)
        speed = float(speed) if isinstance(speed, int | float) and speed > 0 else 1.0
        pcm = chirp_pcm(self.speech_duration_s(text) / speed)
        audio = encode_audio(pcm, response_format)
        chunk_bytes = max(2, TTS_SAMPLE_RATE * 2 * self.tts_chunk_ms // 1000)

        sse = stream_format == "sse"
        content_type = "text/event-stream" if sse else SPEECH_CONTENT_TYPES[response_format]
        response = web.StreamResponse(
            headers={"Content-Type": content_type, **_request_id_header()}
        )
        await response.prepare(request)
        for i, start in enumerate(range(0, len(audio), chunk_bytes)):
            if i and self.tts_chunk_interval_s > 0:
                await asyncio.sleep(self.tts_chunk_interval_s)
            piece = audio[start : start + chunk_bytes]
            if sse:
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
            else:
                await response.write(piece)
        if sse:
            input_tokens = _count_tokens(text)
            output_tokens = max(1, round(len(pcm) / TTS_SAMPLE_RATE * 20))
            done = {
                "type": "speech.audio.done",
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                },
            }
            await response.write(f"data: {json.dumps(done)}\n\n".encode())
        await response.write_eof()
        return response


def _subtitles(text: str, duration: float, *, vtt: bool) -> str:
    def stamp(seconds: float) -> str:
        ms = round(seconds * 1000)
        h, rest = divmod(ms, 3_600_000)
        m, rest = divmod(rest, 60_000)
        s, ms = divmod(rest, 1000)
        return f"{h:02d}:{m:02d}:{s:02d}{'.' if vtt else ','}{ms:03d}"

    cue = f"{stamp(0)} --> {stamp(duration)}\n{text}\n"
    return f"WEBVTT\n\n{cue}\n" if vtt else f"1\n{cue}\n"


@contextlib.contextmanager
def fake_openai(
    *,
    responder: Responder | None = None,
    transcriber: Transcriber | Iterable[str] | None = None,
    default_transcript: str = DEFAULT_TRANSCRIPT,
    first_token_delay_s: float = 0.0,
    token_interval_s: float = 0.0,
    api_key: str | None = None,
    tts_ms_per_word: int = 60,
    tts_min_ms: int = 300,
    tts_chunk_ms: int = 100,
    tts_chunk_interval_s: float = 0.0,
    models: Sequence[str] = DEFAULT_MODELS,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[FakeOpenAI]:
    """Run the fake OpenAI API on HOST:PORT (loopback, ephemeral port) for the ``with`` block.

    responder: messages (the request's list of dicts) -> reply text, or a :class:`Reply`
        with tool calls; default "I heard: <last user message>".
    transcriber: WAV bytes -> transcript, or an iterable of scripted transcripts used in
        order (then ``default_transcript``); :meth:`FakeOpenAI.queue_transcripts` adds more.
    first_token_delay_s / token_interval_s: pauses before the first chat chunk / between
        content chunks.
    api_key: the only bearer token accepted (any non-empty one when None).
    tts_ms_per_word / tts_min_ms: speech length; tts_chunk_ms / tts_chunk_interval_s: the
        size of and pause between streamed body chunks.
    """
    server = FakeOpenAI(
        responder=responder,
        transcriber=transcriber,
        default_transcript=default_transcript,
        first_token_delay_s=first_token_delay_s,
        token_interval_s=token_interval_s,
        api_key=api_key,
        tts_ms_per_word=tts_ms_per_word,
        tts_min_ms=tts_min_ms,
        tts_chunk_ms=tts_chunk_ms,
        tts_chunk_interval_s=tts_chunk_interval_s,
        models=models,
        host=host,
        port=port,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
