"""`python -m voiceagent_backbone.agent_svc chat`: talk to the real agent in a terminal, by typing.

The same Assistant and state layer as the voice worker; typed lines enter through
`TypedTurnSTT`, so each one takes the spoken-turn path (final transcript, enrichment, end of
turn). There is no LiveKit room: the room layer is a JSON file under .run/, so
running the chat again in the same "room" resumes the same conversation.

What the user sees is on stdout: the prompt, the agent's replies and one-line notices (the
conversation not stored, say). Logs go to stderr, or with `--log-file` to that file, and with
them everything else this process writes to stderr (gRPC's own messages included); errors
that end the chat stay on the terminal, one line each.

Ctrl-C ends the chat at once: the conversation is ended, its writes are flushed to state_svc
within a few seconds or left in the spool (every write is there before it is sent; the next
chat sends them), and the exit status is 130. A second Ctrl-C leaves without waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
from livekit.agents import AgentSession, llm
from livekit.agents.types import NOT_GIVEN
from pydantic import ValidationError

from voiceagent_backbone.agent_svc.agent import Assistant
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.layer import Conversation, StateLayer
from voiceagent_backbone.agent_svc.metadata import UserProfile
from voiceagent_backbone.agent_svc.providers import OFFLINE_LABEL, OfflineResponder, TypedTurnSTT
from voiceagent_backbone.agent_svc.session import FileRoomMetadata
from voiceagent_backbone.agent_svc.writer import DurableWriter
from voiceagent_backbone.servicekit.cli import configuration_error
from voiceagent_backbone.servicekit.logging import configure_logging

log = logging.getLogger(__name__)
NAME = "agent_svc chat"
_REPLY_TIMEOUT_S = 60.0
# After Ctrl-C the last writes get this long to reach state_svc; past it they stay in the
# spool, where they already are. Measured on loopback: a few milliseconds.
_INTERRUPT_FLUSH_S = 3.0
# While state_svc refuses every write, waiting the whole flush timeout changes nothing.
_REFUSED_FLUSH_S = 1.0
_SESSION_CLOSE_S = 5.0
# After Ctrl-C the process is gone by then, whatever still runs (a write's spool record is
# on disk before it is sent, so nothing is lost by leaving).
_INTERRUPT_DEADLINE_S = 6.0
EXIT_INTERRUPTED = 130
EXIT_NOT_STORED = 1
# Refusals that a retry cannot cure: the agent's credentials are wrong or missing.
_CREDENTIALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m voiceagent_backbone.agent_svc chat",
        description=(
            "Chat with the agent in this terminal. /quit or Ctrl-D ends the conversation, "
            "Ctrl-C leaves at once; the same --room resumes it next time. Settings come from "
            "AGENT_* environment variables (python -m voiceagent_backbone.agent_svc --help)."
        ),
    )
    parser.add_argument("--room", default="terminal", help="room name (one conversation per room)")
    parser.add_argument("--user", default=os.environ.get("USER") or "demo-user", help="user id")
    parser.add_argument("--name", default="", help="display name used in greetings")
    parser.add_argument("--language", default="en", help="preferred language code")
    parser.add_argument("--rooms-dir", type=Path, default=Path(".run/chat-rooms"))
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="write logs (and anything else sent to stderr) to this file, not the terminal",
    )
    args = parser.parse_args(argv)
    if not args.room.strip() or "/" in args.room:
        parser.error("--room must be a non-empty name without '/'")
    if not args.user.strip():
        parser.error("--user must not be empty")
    return args


def typed_session(
    model: llm.LLM[Any], endpointing_s: float = 0.0
) -> tuple[AgentSession[Any], TypedTurnSTT]:
    """A session without audio whose user turns are typed lines (`TypedTurnSTT.type_line`)
    on LiveKit's own turn handling: preemptive generation (on by default) from the final
    transcript, the end of turn `endpointing_s` after it, then on_user_turn_completed."""
    typed = TypedTurnSTT()
    session: AgentSession[Any] = AgentSession(
        stt=typed,
        llm=model,
        vad=None,
        turn_handling={
            "turn_detection": "stt",
            "endpointing": {"min_delay": endpointing_s, "max_delay": endpointing_s + 0.5},
            "interruption": {"enabled": False},
        },
        # A typed line arrives whole: at close no transcript is on its way (the default
        # waits 2 s for one, which Ctrl-C and /quit would always wait out).
        session_close_transcript_timeout=0.1,
    )
    return session, typed


class Terminal:
    """Where the user reads: the conversation on stdout; errors on the terminal's stderr,
    which stays the terminal when the logs go to a file."""

    def __init__(self, errors: TextIO) -> None:
        self.errors = errors

    def line(self, text: str) -> None:
        print(text, flush=True)

    def prompt(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def error(self, text: str) -> None:
        print(text, file=self.errors, flush=True)


class LineReader:
    """Lines typed on a file descriptor, read by the event loop when there is something to
    read. `input()` in a thread would leave that thread blocked in read() on Ctrl-C, and
    the interpreter waits for it before it exits (until the next Enter)."""

    def __init__(self, fd: int) -> None:
        self._own_fd = os.isatty(fd)
        if self._own_fd:
            # A terminal's input can vanish between "readable" and the read (Ctrl-C flushes
            # it), and a blocking read would then stop the event loop. A non-blocking file
            # description of our own leaves the shell's as it is.
            fd = os.open(os.ttyname(fd), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        self._fd = fd
        self._partial = bytearray()
        self._lines: collections.deque[str] = collections.deque()
        self._eof = False
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_reader(fd, self._fill)
            self._watched = True
        except (PermissionError, ValueError):
            # A regular file or /dev/null cannot be watched, and reading one never blocks.
            self._watched = False

    def _fill(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._partial += data
            *complete, rest = bytes(self._partial).split(b"\n")
            self._partial = bytearray(rest)
            self._lines.extend(line.decode(errors="replace") for line in complete)
        else:
            self._eof = True
            if self._partial:
                self._lines.append(bytes(self._partial).decode(errors="replace"))
                self._partial.clear()
            self.close()
        self._ready.set()

    async def readline(self) -> str | None:
        """The next line without its newline; None at the end of input (Ctrl-D)."""
        while not self._lines and not self._eof:
            if not self._watched:
                self._fill()
                continue
            self._ready.clear()
            await self._ready.wait()
        return self._lines.popleft() if self._lines else None

    def close(self) -> None:
        if self._watched:
            self._watched = False
            self._loop.remove_reader(self._fd)
        if self._own_fd:
            self._own_fd = False
            os.close(self._fd)


@dataclass
class Outcome:
    """How the chat ended, for the lines printed after it and the exit status."""

    conversation_id: str = ""
    stored: bool = False
    interrupted: bool = False
    # One line saying why the conversation is not (yet) stored, when it is not.
    not_stored: str = ""


def refusal(writer: DurableWriter) -> str:
    """Why the writes wait, in words a user can act on; "" while they go through."""
    failure = writer.last_failure
    if failure is None:
        return ""
    code = failure.code()
    details = (failure.details() or "").strip()
    reason = f"{code.name}: {details}" if details else code.name
    if code in _CREDENTIALS:
        return (
            f"state_svc refuses this chat's writes ({reason}); check AGENT_AUTH_JWT_KEY, "
            "AGENT_AUTH_JWT_KEY_FILE or AGENT_AUTH_TOKEN_FILE"
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"state_svc does not answer at AGENT_STATE_TARGET ({reason})"
    return f"state_svc does not take this chat's writes ({reason})"


class TerminalChat:
    def __init__(
        self, settings: AgentSettings, args: argparse.Namespace, terminal: Terminal
    ) -> None:
        self.settings = settings
        self.args = args
        self.terminal = terminal
        self.conversation: Conversation | None = None
        self.session: AgentSession[Any] | None = None
        self.outcome = Outcome()
        self._replied = asyncio.Event()
        self._told = ""
        # The last line is out: leaving now needs no words.
        self.said_goodbye = False

    @property
    def spool_dir(self) -> Path:
        return self.settings.spool_dir

    async def run(self) -> Outcome:
        """The conversation until /quit, Ctrl-D or Ctrl-C, then its end and flush."""
        loop = asyncio.get_running_loop()
        talk = asyncio.create_task(self.talk(), name="chat")

        def interrupt() -> None:
            if self.outcome.interrupted:  # a second Ctrl-C
                self.leave_now()
            self.outcome.interrupted = True
            deadline = threading.Timer(_INTERRUPT_DEADLINE_S, self.leave_now)
            deadline.daemon = True
            deadline.start()
            talk.cancel()

        loop.add_signal_handler(signal.SIGINT, interrupt)
        try:
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await talk
            finally:  # the conversation ends and is flushed however the talk ended
                await self.close()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        return self.outcome

    def leave_now(self) -> None:
        """Exit at once: every write is in the spool file before it is sent, and the next
        chat sends what state_svc has not acknowledged."""
        if not self.said_goodbye:
            self.terminal.line(
                f"\nStopped without waiting; what was not stored yet waits in {self.spool_dir}."
            )
        os._exit(EXIT_INTERRUPTED)

    async def talk(self) -> None:
        settings, args = self.settings, self.args
        profile = UserProfile(
            user_id=args.user, display_name=args.name, preferences={"language": args.language}
        )
        self.conversation = conversation = await StateLayer(settings).open_room(
            FileRoomMetadata(args.rooms_dir / f"{args.room}.json"),
            room_name=args.room,
            profile=profile,
            participant_identity=args.user,
        )
        self.outcome.conversation_id = conversation.conversation_id
        key = settings.openai_key()
        if key:
            from livekit.plugins import openai

            model: llm.LLM[Any] = openai.LLM(
                model=settings.llm_model,
                api_key=key,
                base_url=settings.openai_base_url or NOT_GIVEN,
            )
            self.terminal.line(f"(using OpenAI model {settings.llm_model})")
        else:
            model = OfflineResponder()
            self.terminal.line(
                f"{OFFLINE_LABEL} OPENAI_API_KEY is not set: replies come from a local offline "
                "responder that repeats you and quotes what enrichment remembered."
            )
        session, typed = typed_session(conversation.enriched(model))
        self.session = session
        session.on("conversation_item_added", self._show)
        await conversation.start(session, Assistant(conversation, settings.default_language))
        await self._wait_reply()  # the greeting
        self.terminal.line(
            "Type a message and press Enter; /quit (or Ctrl-D) ends the conversation, "
            "Ctrl-C leaves at once."
        )
        reader = LineReader(sys.stdin.fileno())
        try:
            while True:
                self.terminal.prompt("you> ")
                line = await reader.readline()
                if line is None:
                    self.terminal.line("")
                    return
                line = line.strip()
                if line in ("/quit", "/exit"):
                    return
                if not line:
                    continue
                self._replied.clear()
                typed.type_line(line)
                await self._wait_reply()
        finally:
            reader.close()

    def _show(self, ev: Any) -> None:
        item = ev.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant":
            self.terminal.line(f"agent> {item.text_content}")
            self._replied.set()

    async def _wait_reply(self) -> None:
        try:
            await asyncio.wait_for(self._replied.wait(), _REPLY_TIMEOUT_S)
        except TimeoutError:
            self.terminal.line("(no reply in time; the log says why)")
        self._tell_write_trouble()

    def _tell_write_trouble(self) -> None:
        """Once per cause, in one line: the conversation is not being stored right now."""
        if self.conversation is None:
            return
        why = refusal(self.conversation.backend.writer)
        if why and why != self._told:
            self.terminal.line(
                f"(not stored for now: {why}; what you say waits in {self.spool_dir})"
            )
        self._told = why

    async def close(self) -> None:
        """End the conversation and flush its writes (bounded); fill in the outcome."""
        conversation, outcome = self.conversation, self.outcome
        if conversation is None:  # interrupted before the conversation was open
            return
        conversation.state.end_reason = "user_initiated"
        if outcome.interrupted:
            conversation.state.user_left = True  # no farewell: the user has gone
        if self.session is not None:
            try:
                await asyncio.wait_for(self.session.aclose(), _SESSION_CLOSE_S)
            except Exception:
                log.warning("the session did not close cleanly", exc_info=True)
        writer = conversation.backend.writer
        timeout = self.settings.flush_timeout_s
        if outcome.interrupted:
            timeout = min(timeout, _INTERRUPT_FLUSH_S)
        if writer.last_failure is not None:
            timeout = min(timeout, _REFUSED_FLUSH_S)
        flushed = await conversation.aclose(timeout)
        outcome.stored = flushed and writer.rejected == 0
        if outcome.stored:
            return
        if writer.rejected:
            outcome.not_stored = (
                f"state_svc rejected {writer.rejected} of its writes for good (they are kept "
                f"in {self.spool_dir / 'rejected.log'})"
            )
        else:
            why = refusal(writer) or "state_svc did not take every write in time"
            outcome.not_stored = (
                f"{why}; {writer.pending} writes wait in {self.spool_dir}, and the next chat "
                "that state_svc accepts sends them"
            )


def _logs_to(path: Path) -> TextIO:
    """Sends this process's stderr (fd 2, so C libraries' messages too) to `path`; returns
    a stream on the terminal's stderr for errors the user must see."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
    return terminal


def _stored_lines(conversation_id: str, state_target: str) -> str:
    token = "$TOKEN"
    target = shlex.quote(state_target)
    return (
        f"\nConversation {conversation_id} is stored in state_svc. Look at it with grpcurl:\n\n"
        f'  grpcurl -plaintext -H "authorization: Bearer {token}" '
        f'-d \'{{"conversation_id": "{conversation_id}"}}\' '
        f"{target} voiceagent.state.v1.StateService/GetHistory\n"
        f'  grpcurl -plaintext -H "authorization: Bearer {token}" '
        f'-d \'{{"conversation_id": "{conversation_id}"}}\' '
        f"{target} voiceagent.state.v1.StateService/GetLatestSnapshot\n\n"
        "Run it again with the same --room to resume this conversation."
    )


def main(argv: list[str]) -> None:
    args = _parse(argv)
    try:
        settings = AgentSettings()
    except ValidationError as exc:
        sys.exit(configuration_error(NAME, AgentSettings, exc))
    errors: TextIO = sys.stderr
    if args.log_file is not None:
        try:
            errors = _logs_to(args.log_file)
        except OSError as exc:
            sys.exit(f"{NAME}: --log-file {str(args.log_file)!r}: {exc.strerror}")
    where = f"; the log is {args.log_file}" if args.log_file is not None else ""
    configure_logging("agent_svc", os.environ.get("AGENT_CHAT_LOG_LEVEL", "WARNING"))
    terminal = Terminal(errors)
    chat = TerminalChat(settings, args, terminal)
    try:
        outcome = asyncio.run(chat.run())
    except KeyboardInterrupt:  # before the chat's own Ctrl-C handling was in place
        terminal.line("\nInterrupted before the conversation started.")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        log.exception("the chat failed")
        terminal.error(f"{NAME}: failed: {type(exc).__name__}: {exc}{where}")
        sys.exit(1)
    text, status = last_words(outcome, settings.state_target)
    terminal.line(text)
    chat.said_goodbye = True
    sys.exit(status)


def last_words(outcome: Outcome, state_target: str) -> tuple[str, int]:
    """What the chat says as it ends, and its exit status."""
    conversation = outcome.conversation_id
    if outcome.interrupted:
        if not conversation:
            return "\nInterrupted before the conversation started.", EXIT_INTERRUPTED
        if outcome.stored:
            return (
                f"\nInterrupted: conversation {conversation} is stored; the same --room "
                "resumes it.",
                EXIT_INTERRUPTED,
            )
        return (
            f"\nInterrupted: conversation {conversation} is not stored: {outcome.not_stored}.",
            EXIT_INTERRUPTED,
        )
    if not outcome.stored:
        return (
            f"\nConversation {conversation} is not stored: {outcome.not_stored}.",
            EXIT_NOT_STORED,
        )
    return _stored_lines(conversation, state_target), 0
