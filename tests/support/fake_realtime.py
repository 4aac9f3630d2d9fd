"""A fake OpenAI Realtime API on loopback, for offline tests of realtime LiveKit agents.

It speaks the websocket protocol (the GA event names) that livekit-plugins-openai 1.8.9's
``openai.realtime.RealtimeModel`` speaks, so the plugin's own code runs unchanged against it:
``RealtimeModel(base_url=server.base_url, api_key="test-key")`` connects to
``ws://127.0.0.1:PORT/v1/realtime?model=...``.

Client events and what the fake answers, as the real server does:

* the connection itself: ``session.created``; a missing or wrong bearer key gets an ``error``
  event with code ``invalid_api_key`` and a close with code 3000 (the real server accepts the
  upgrade and refuses on the socket, it does not answer 401);
* ``session.update``: ``session.updated`` with the merged session;
* ``conversation.item.create``: ``conversation.item.added`` then ``conversation.item.done``,
  or an ``error`` naming the client's ``event_id`` when the item is refused. Item ids are
  checked as the real API checks them (``^[a-zA-Z0-9_-]+$``, at most 32 characters), so a
  client that replays history with longer ids is refused here as it would be in production;
* ``conversation.item.delete`` / ``.truncate`` / ``.retrieve``: ``conversation.item.deleted``
  / ``.truncated`` / ``.retrieved``;
* ``input_audio_buffer.append`` / ``.clear`` / ``.commit``: nothing / ``...cleared`` /
  ``...committed`` plus the user audio item (``input_audio_buffer_commit_empty`` under 100 ms);
* ``response.create``: ``response.created`` (echoing the request's ``metadata``, which the
  plugin uses to match its request), ``response.output_item.added``,
  ``conversation.item.added``, ``response.content_part.added``, then
  ``response.output_audio_transcript.delta`` with ``response.output_audio.delta`` (PCM16,
  24 kHz mono) for audio output, or ``response.output_text.delta`` for text output, their
  ``.done`` events, ``response.content_part.done``, ``response.output_item.done``,
  ``conversation.item.done`` and ``response.done`` with usage. The reply text comes from a
  *responder* given the server-side conversation (default "I heard: <last user text>");
* ``response.cancel``: with no response in flight (replies are sent at once), the real error
  "Cancellation failed: no active response found".

:meth:`FakeRealtime.fail_next_response` makes the next ``response.create`` fail with an
``error`` event instead. Every event in both directions is recorded; every client event is
validated against the openai SDK's ``RealtimeClientEvent`` (refused with an ``error`` like
the real server) and every server event against ``RealtimeServerEvent`` (a mismatch is a bug
in this fake, kept in ``protocol_errors``). The server runs on aiohttp in a thread of its
own, like :mod:`tests.support.fake_openai`::

    with fake_realtime() as server:
        model = openai.realtime.RealtimeModel(base_url=server.base_url, api_key="test-key")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import itertools
import json
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter, ValidationError

from tests.support.fake_openai import REDACTED, chirp_pcm
from tests.support.loopback import LoopbackServer

SAMPLE_RATE = 24000
DEFAULT_API_KEY = "test-key"
ITEM_ID_MAX = 32  # the real API refuses longer item ids
ITEM_ID_PATTERN = r"^[a-zA-Z0-9_-]+$"
MIN_COMMIT_MS = 100  # the real API refuses to commit less audio
AUDIO_CHUNK_MS = 100
CLOSE_POLICY = 3000  # the close code the real server uses after an auth error

Item = dict[str, Any]
Responder = Callable[[list[Item]], str]
Direction = Literal["client", "server"]
_Handler = Callable[["Connection", web.WebSocketResponse, Item], Awaitable[None]]

_CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
_SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
_ITEM_ID = re.compile(ITEM_ID_PATTERN)
_ALPHABET = string.ascii_letters + string.digits


def _new_id(prefix: str) -> str:
    """An id shaped like the real ones, e.g. "item_CQn5ggXdBAIOnbxYcVi5o"."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(21))


def item_text(item: Item) -> str:
    """The text of a message item: its text parts and audio transcripts, joined."""
    parts = item.get("content") or []
    texts = [p.get("text") or p.get("transcript") or "" for p in parts if isinstance(p, dict)]
    return " ".join(t for t in texts if t)


def default_responder(items: list[Item]) -> str:
    """ "I heard: <the last user message's text>"."""
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return f"I heard: {item_text(item)}"
    return "Hello! How can I help?"


@dataclass(frozen=True)
class RecordedEvent:
    """One websocket message as sent or received; ``connection`` counts from 0."""

    connection: int
    direction: Direction
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))


@dataclass
class Connection:
    """One websocket: how it was opened, and its server-side session and conversation."""

    index: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # the Authorization value replaced by REDACTED
    authorized: bool = False
    session: dict[str, Any] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    conversation_id: str = field(default_factory=lambda: _new_id("conv"))


@dataclass(frozen=True)
class _Failure:
    message: str
    type: str
    code: str | None


class _Refused(Exception):
    """A client event the real server would refuse: answered with an ``error`` event."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _default_session(model: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": SAMPLE_RATE}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": _new_id("sess"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "include": None,
        "audio": {
            "input": {
                "format": pcm,
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": pcm, "voice": "alloy", "speed": 1.0},
        },
    }


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """session.update semantics: nested objects merge, other values replace."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _split_words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or [text]


class FakeRealtime:
    """The running fake; create it with :func:`fake_realtime`. Options may be changed live."""

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        api_key: str | None = DEFAULT_API_KEY,
        audio_ms_per_word: int = 40,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder: Responder = responder or default_responder
        self.api_key = api_key  # None: any non-empty bearer key
        self.audio_ms_per_word = audio_ms_per_word
        self._server = LoopbackServer("fake-realtime", self._dispatch, host, port, 1024**2)
        self.protocol_errors: list[str] = []  # server events the SDK types reject (fake bugs)
        self._lock = threading.Lock()
        self._events: list[RecordedEvent] = []
        self._connections: list[Connection] = []
        self._failures: deque[_Failure] = deque()
        self._sockets: set[web.WebSocketResponse] = set()
        self._handlers: dict[str, _Handler] = {
            "session.update": self._session_update,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.retrieve": self._item_retrieve,
            "input_audio_buffer.append": self._audio_append,
            "input_audio_buffer.clear": self._audio_clear,
            "input_audio_buffer.commit": self._audio_commit,
            "response.cancel": self._response_cancel,
            "response.create": self._response_create,
        }

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """http://HOST:PORT"""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """http://HOST:PORT/v1, for ``RealtimeModel(base_url=...)`` (it appends /realtime)."""
        return f"{self.url}/v1"

    # -- scripting ---------------------------------------------------------------------

    def fail_next_response(
        self, message: str, *, type_: str = "server_error", code: str | None = None
    ) -> None:
        """Answer the next ``response.create`` with an ``error`` event (its ``event_id`` the
        request's) instead of a response. A ``type_``/``code`` such as ``insufficient_quota``
        is one the plugin treats as fatal; others it reports as recoverable."""
        with self._lock:
            self._failures.append(_Failure(message, type_, code))

    # -- what happened -----------------------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections)

    def events(
        self,
        type_: str | None = None,
        *,
        direction: Direction = "client",
        connection: int | None = None,
    ) -> list[dict[str, Any]]:
        """Recorded events (client ones unless ``direction="server"``), oldest first;
        ``connection`` may be negative (-1: the latest websocket)."""
        with self._lock:
            if connection is not None and connection < 0:
                connection += len(self._connections)
            return [
                copy.deepcopy(e.data)
                for e in self._events
                if e.direction == direction
                and (type_ is None or e.type == type_)
                and (connection is None or e.connection == connection)
            ]

    def conversation(self, connection: int = -1) -> list[Item]:
        """The server-side conversation of a websocket, in order."""
        with self._lock:
            return copy.deepcopy(self._connections[connection].items)

    def clear(self) -> None:
        """Forget every event, connection and scripted failure (between sessions: a
        websocket still open keeps its old connection index)."""
        with self._lock:
            self._events.clear()
            self._connections.clear()
            self._failures.clear()
            self.protocol_errors.clear()

    async def wait_for(
        self,
        type_: str,
        *,
        count: int = 1,
        direction: Direction = "client",
        connection: int | None = None,
        timeout_s: float = 10.0,
    ) -> list[dict[str, Any]]:
        """Wait (without blocking the caller's loop) until ``count`` such events are
        recorded; returns them all."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.events(type_, direction=direction, connection=connection)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} {direction} {type_} events after {timeout_s}s"
                )
            await asyncio.sleep(0.02)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    def start(self, timeout_s: float = 10.0) -> None:
        self._server.start(timeout_s)

    async def _close_sockets(self) -> None:
        # Open websockets first: the runner would otherwise wait out its timeout.
        for ws in list(self._sockets):
            await ws.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.stop(timeout_s, before=self._close_sockets)

    # -- the websocket -----------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/v1/realtime":
            return _http_error(404, f"Invalid URL ({request.method} {request.path})")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            return _http_error(400, "This endpoint only accepts websocket connections.")
        await ws.prepare(request)
        with self._lock:
            conn = Connection(
                index=len(self._connections),
                path=request.path,
                query=dict(request.query),
                headers={
                    k: (REDACTED if k.lower() == "authorization" else v)
                    for k, v in request.headers.items()
                },
            )
            self._connections.append(conn)
        self._sockets.add(ws)
        try:
            refusal = self._auth_refusal(request)
            if refusal is not None:
                await self._error(conn, ws, refusal, type_="invalid_request_error")
                await ws.close(code=CLOSE_POLICY, message=b"invalid_request_error.invalid_api_key")
                return ws
            conn.authorized = True
            conn.session = _default_session(request.query.get("model", "gpt-realtime"))
            await self._send(conn, ws, {"type": "session.created", "session": conn.session})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(conn, ws, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._error(conn, ws, _Refused("Binary frames are not supported."))
        finally:
            self._sockets.discard(ws)
        return ws

    def _auth_refusal(self, request: web.Request) -> _Refused | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _Refused(
                "You didn't provide an API key. You need to provide your API key in an"
                " Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        if self.api_key is not None and token != self.api_key:
            return _Refused(
                "Incorrect API key provided. You can find your API key at"
                " https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    async def _send(self, conn: Connection, ws: web.WebSocketResponse, event: Item) -> None:
        event = {"event_id": _new_id("event"), **event}
        try:
            _SERVER_EVENT.validate_python(event)
        except ValidationError as exc:
            self.protocol_errors.append(f"{event.get('type')}: {exc}")
        # A copy: the fake goes on changing the session and items an event refers to.
        self._record(RecordedEvent(conn.index, "server", copy.deepcopy(event)))
        await ws.send_str(json.dumps(event))

    async def _error(
        self,
        conn: Connection,
        ws: web.WebSocketResponse,
        refused: _Refused,
        *,
        type_: str = "invalid_request_error",
        event_id: str | None = None,
    ) -> None:
        error = {
            "type": type_,
            "code": refused.code,
            "message": refused.message,
            "param": refused.param,
            "event_id": event_id,
        }
        await self._send(conn, ws, {"type": "error", "error": error})

    def _record(self, event: RecordedEvent) -> None:
        with self._lock:
            self._events.append(event)

    async def _on_text(self, conn: Connection, ws: web.WebSocketResponse, raw: str) -> None:
        try:
            event = json.loads(raw)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            await self._error(conn, ws, _Refused("The event is not a JSON object."))
            return
        self._record(RecordedEvent(conn.index, "client", event))
        event_id = event.get("event_id")
        try:
            _CLIENT_EVENT.validate_python(event)
            handler = self._handlers.get(str(event.get("type")))
            if handler is None:
                raise _Refused(f"Invalid value: '{event.get('type')}'.", param="type")
            await handler(conn, ws, event)
        except ValidationError as exc:
            refused = _Refused(
                f"Invalid client event: {exc.errors()[0]['msg']}", code="invalid_value"
            )
            await self._error(conn, ws, refused, event_id=event_id)
        except _Refused as refused:
            await self._error(conn, ws, refused, event_id=event_id)

    # -- client events -----------------------------------------------------------------

    async def _session_update(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        _merge(conn.session, ev["session"])
        await self._send(conn, ws, {"type": "session.updated", "session": conn.session})

    def _index_after(self, conn: Connection, previous_item_id: str | None) -> int:
        if previous_item_id is None:
            return len(conn.items)
        if previous_item_id == "root":
            return 0
        for i, item in enumerate(conn.items):
            if item["id"] == previous_item_id:
                return i + 1
        raise _Refused(
            f"Previous item with id '{previous_item_id}' not found.",
            param="previous_item_id",
            code="invalid_value",
        )

    async def _add_item(
        self, conn: Connection, ws: web.WebSocketResponse, item: Item, position: int
    ) -> None:
        with self._lock:  # conversation() reads the items from the test's thread
            conn.items.insert(position, item)
        previous = conn.items[position - 1]["id"] if position else None
        for type_ in ("conversation.item.added", "conversation.item.done"):
            await self._send(conn, ws, {"type": type_, "previous_item_id": previous, "item": item})

    async def _item_create(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        item = copy.deepcopy(ev["item"])
        item_id = item.get("id") or _new_id("item")
        if len(item_id) > ITEM_ID_MAX:
            raise _Refused(
                f"Invalid 'item.id': string too long. Expected a string with maximum length"
                f" {ITEM_ID_MAX}, but got a string with length {len(item_id)} instead.",
                param="item.id",
                code="string_above_max_length",
            )
        if not _ITEM_ID.match(item_id):
            raise _Refused(
                "Invalid 'item.id': string does not match pattern. Expected a string that"
                f" matches the pattern '{ITEM_ID_PATTERN}'.",
                param="item.id",
                code="invalid_value",
            )
        if any(i["id"] == item_id for i in conn.items):
            raise _Refused(
                f"Item with item_id '{item_id}' already exists.",
                param="item.id",
                code="item_create_duplicate_item_id",
            )
        position = self._index_after(conn, ev.get("previous_item_id"))
        item.update(id=item_id, object="realtime.item", status="completed")
        await self._add_item(conn, ws, item, position)

    def _find(self, conn: Connection, item_id: str) -> int:
        for i, item in enumerate(conn.items):
            if item["id"] == item_id:
                return i
        raise _Refused(
            f"Item with item_id '{item_id}' not found.", param="item_id", code="invalid_value"
        )

    async def _item_delete(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        index = self._find(conn, ev["item_id"])
        with self._lock:
            del conn.items[index]
        await self._send(conn, ws, {"type": "conversation.item.deleted", "item_id": ev["item_id"]})

    async def _item_truncate(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        self._find(conn, ev["item_id"])
        fields = {k: ev[k] for k in ("item_id", "content_index", "audio_end_ms")}
        await self._send(conn, ws, {"type": "conversation.item.truncated", **fields})

    async def _item_retrieve(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        item = conn.items[self._find(conn, ev["item_id"])]
        await self._send(conn, ws, {"type": "conversation.item.retrieved", "item": item})

    async def _audio_append(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        conn.audio += base64.b64decode(ev["audio"])

    async def _audio_clear(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        conn.audio.clear()
        await self._send(conn, ws, {"type": "input_audio_buffer.cleared"})

    async def _audio_commit(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        buffered_ms = len(conn.audio) * 1000 // (SAMPLE_RATE * 2)
        if buffered_ms < MIN_COMMIT_MS:
            raise _Refused(
                "Error committing input audio buffer: buffer too small. Expected at least"
                f" {MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        item_id = _new_id("item")
        previous = conn.items[-1]["id"] if conn.items else None
        item = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        conn.audio.clear()
        committed = {"previous_item_id": previous, "item_id": item_id}
        await self._send(conn, ws, {"type": "input_audio_buffer.committed", **committed})
        await self._add_item(conn, ws, item, len(conn.items))

    async def _response_cancel(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        # Every response is sent whole on response.create: none is ever in flight here.
        raise _Refused(
            "Cancellation failed: no active response found", code="response_cancel_not_active"
        )

    async def _response_create(self, conn: Connection, ws: web.WebSocketResponse, ev: Item) -> None:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            refused = _Refused(failure.message, code=failure.code)
            await self._error(conn, ws, refused, type_=failure.type, event_id=ev.get("event_id"))
            return
        params: dict[str, Any] = ev.get("response") or {}
        in_conversation = params.get("conversation", "auto") != "none"
        modalities = params.get("output_modalities") or conn.session.get("output_modalities")
        audio = "audio" in (modalities or ["audio"])
        text = self.responder(copy.deepcopy(conn.items))
        voice = conn.session.get("audio", {}).get("output", {}).get("voice", "alloy")
        response: dict[str, Any] = {
            "object": "realtime.response",
            "id": _new_id("resp"),
            "status": "in_progress",
            "status_details": None,
            "output": [],
            "conversation_id": conn.conversation_id if in_conversation else None,
            "output_modalities": ["audio"] if audio else ["text"],
            "max_output_tokens": params.get(
                "max_output_tokens", conn.session.get("max_output_tokens", "inf")
            ),
            "audio": {
                "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": voice}
            },
            "usage": None,
            "metadata": params.get("metadata"),
        }
        item: Item = {
            "id": _new_id("item"),
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        where = {"response_id": response["id"], "item_id": item["id"], "output_index": 0}
        part = {**where, "content_index": 0}

        await self._send(conn, ws, {"type": "response.created", "response": response})
        await self._send(
            conn,
            ws,
            {
                "type": "response.output_item.added",
                "response_id": response["id"],
                "output_index": 0,
                "item": item,
            },
        )
        if in_conversation:
            with self._lock:
                conn.items.append(item)
            previous = conn.items[-2]["id"] if len(conn.items) > 1 else None
            await self._send(
                conn,
                ws,
                {"type": "conversation.item.added", "previous_item_id": previous, "item": item},
            )
        empty = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        await self._send(conn, ws, {"type": "response.content_part.added", **part, "part": empty})
        words = _split_words(text)
        if audio:
            pcm = chirp_pcm(max(len(words) * self.audio_ms_per_word, AUDIO_CHUNK_MS) / 1000)
            data = pcm.astype("<i2").tobytes()
            step = SAMPLE_RATE * 2 * AUDIO_CHUNK_MS // 1000
            chunks = [data[i : i + step] for i in range(0, len(data), step)]
            for word, chunk in itertools.zip_longest(words, chunks):
                if word is not None:
                    delta = {"type": "response.output_audio_transcript.delta", "delta": word}
                    await self._send(conn, ws, {**delta, **part})
                if chunk is not None:
                    b64 = base64.b64encode(chunk).decode()
                    await self._send(
                        conn, ws, {"type": "response.output_audio.delta", **part, "delta": b64}
                    )
            await self._send(conn, ws, {"type": "response.output_audio.done", **part})
            await self._send(
                conn,
                ws,
                {"type": "response.output_audio_transcript.done", **part, "transcript": text},
            )
            content: Item = {"type": "output_audio", "transcript": text}
            done_part: Item = {"type": "audio", "transcript": text}
        else:
            for word in words:
                await self._send(
                    conn, ws, {"type": "response.output_text.delta", **part, "delta": word}
                )
            await self._send(conn, ws, {"type": "response.output_text.done", **part, "text": text})
            content = {"type": "output_text", "text": text}
            done_part = {"type": "text", "text": text}
        await self._send(
            conn, ws, {"type": "response.content_part.done", **part, "part": done_part}
        )
        with self._lock:
            item.update(status="completed", content=[content])
        await self._send(
            conn,
            ws,
            {
                "type": "response.output_item.done",
                "response_id": response["id"],
                "output_index": 0,
                "item": item,
            },
        )
        if in_conversation:
            index = next(i for i, it in enumerate(conn.items) if it is item)
            previous = conn.items[index - 1]["id"] if index else None
            await self._send(
                conn,
                ws,
                {"type": "conversation.item.done", "previous_item_id": previous, "item": item},
            )
        input_tokens = sum(len(item_text(i).split()) for i in conn.items if i is not item)
        output_tokens = len(words)
        response.update(
            status="completed",
            output=[item],
            usage={
                "total_tokens": input_tokens + output_tokens,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "input_token_details": {
                    "text_tokens": input_tokens,
                    "audio_tokens": 0,
                    "image_tokens": 0,
                    "cached_tokens": 0,
                    "cached_tokens_details": {
                        "text_tokens": 0,
                        "audio_tokens": 0,
                        "image_tokens": 0,
                    },
                },
                "output_token_details": {
                    "text_tokens": output_tokens,
                    "audio_tokens": output_tokens if audio else 0,
                },
            },
        )
        await self._send(conn, ws, {"type": "response.done", "response": response})


def _http_error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    return web.json_response(body, status=status)


@contextlib.contextmanager
def fake_realtime(
    *,
    responder: Responder | None = None,
    api_key: str | None = DEFAULT_API_KEY,
    audio_ms_per_word: int = 40,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[FakeRealtime]:
    """Run the fake Realtime API on HOST:PORT (loopback, ephemeral port) for the block.

    responder: the server-side conversation (a list of item dicts) -> the reply text;
        default "I heard: <last user message>".
    api_key: the only bearer key accepted (any non-empty one when None).
    audio_ms_per_word: how much reply audio each word of the reply gets.
    """
    server = FakeRealtime(
        responder=responder,
        api_key=api_key,
        audio_ms_per_word=audio_ms_per_word,
        host=host,
        port=port,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
