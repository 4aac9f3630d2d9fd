"""`make bench-agent`: what the agent's state handling costs the voice path.

1. state_svc (embedded SQLite) and context_svc run as processes; a user gets --history
   earlier turns over 10 conversations, indexed by context_svc from the change feed.
2. turns through the real AgentSession (LiveKit's own turn handling, preemptive generation
   on by default) with the loopback fake OpenAI LLM (fixed time to first token, --ttft-ms):
   an STT reports each turn as a streaming server does (end of speech, then the final
   transcript), the end of turn follows the endpointing delay (--endpointing-ms). Run with
   enrichment on (the state layer's EnrichedLLM), off (the bare LLM), and, for comparison,
   the way the seed did it (Enrich in on_user_turn_completed, added to the chat context).
   Per turn: was the reply the preemptive generation (LiveKit's own log line says so), and
   how long after the end of turn did the LLM request go out (0 when it went out before).
3. enqueue: the time a handler spends handing one message event to the BackendClient
   (building the event, the spool write, the queue): --events back to back (the summary's
   figure), then a fifth as many one per event-loop wake-up (see _enqueue_times), while
   the sender and state_svc store them. context_svc is paused (SIGSTOP) meanwhile: on this
   two-core machine its indexing of those messages would otherwise take the CPU from the
   measurement, which in a deployment runs in another pod.
4. enrichment wait, context_svc hung: a request whose enrichment was not started earlier
   (the worst case) against a server that accepts connections and never answers. The
   breaker is disabled for this phase so every call waits for the budget; a second line
   shows the default breaker, which answers at once once open.

Prints JSON lines; the last one is the summary, with each figure's limit and the verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import signal
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2
from livekit.agents import Agent, llm
from livekit.plugins import openai
from pydantic import SecretStr

from bench.servers import context_service, state_service
from tests.support.fake_openai import FakeOpenAI, fake_openai, message_text
from tests.support.turns import framework_log
from voiceagent_backbone.agent_svc import Conversation, FileRoomMetadata, StateLayer
from voiceagent_backbone.agent_svc.backend import BackendClient
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.conversation import ConversationState
from voiceagent_backbone.agent_svc.enrichment import TurnEnricher
from voiceagent_backbone.agent_svc.history import HistoryWindow
from voiceagent_backbone.agent_svc.metadata import UserProfile
from voiceagent_backbone.agent_svc.terminal import typed_session
from voiceagent_backbone.api.context.v1 import context_pb2, context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2, state_pb2_grpc
from voiceagent_backbone.servicekit.auth import mint_token
from voiceagent_backbone.servicekit.client import create_channel
from voiceagent_backbone.servicekit.ids import uuid7

TENANT = "bench"
USER = "bench-user"
_TOPICS = [
    "my sister Maria moved to Porto last spring",
    "I am training for a half marathon in October",
    "our dog Rex is afraid of thunderstorms",
    "I work as a nurse on night shifts",
    "we are planning a trip to Japan next year",
    "my favourite food is mushroom risotto",
    "I started learning the cello in January",
    "my son Leo plays football on Saturdays",
    "the car needs new tyres before winter",
    "I prefer green tea over coffee in the morning",
]
_QUESTIONS = [
    "Where does my sister live now?",
    "How is my marathon training going?",
    "What is my dog scared of?",
    "What do I do for work?",
    "Where are we travelling next year?",
    "What do I like to eat?",
    "Which instrument am I learning?",
    "When does my son play football?",
    "What does the car need?",
    "What do I drink in the morning?",
]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def _seed(state_port: int, context_port: int, jwt_key: str, turns: int) -> None:
    token = mint_token(jwt_key, tenant=TENANT, scopes=["state.read", "state.write", "context.read"])
    channel = create_channel(f"127.0.0.1:{state_port}", token=lambda: token)
    stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
    rng = random.Random(7)
    per_conversation = max(1, turns // 10)
    written = 0
    for _ in range(10):
        cid = uuid7()
        await stub.CreateConversation(
            state_pb2.CreateConversationRequest(conversation_id=cid, room_name="r", user_ids=[USER])
        )
        events = []
        for i in range(per_conversation):
            ts = timestamp_pb2.Timestamp()
            ts.GetCurrentTime()
            topic = rng.choice(_TOPICS)
            text = f"{topic}, and {rng.choice(_TOPICS)}" if i % 2 else f"By the way, {topic}."
            events.append(
                state_pb2.Event(
                    event_id=uuid7(),
                    type=state_pb2.EVENT_TYPE_USER_MESSAGE
                    if i % 2 == 0
                    else state_pb2.EVENT_TYPE_AGENT_MESSAGE,
                    role=state_pb2.ROLE_USER if i % 2 == 0 else state_pb2.ROLE_AGENT,
                    text=text,
                    client_time=ts,
                )
            )
        for start in range(0, len(events), 100):
            await stub.AppendEvents(
                state_pb2.AppendEventsRequest(
                    conversation_id=cid, events=events[start : start + 100]
                )
            )
        written += len(events)
    await channel.close(None)
    # Wait until context_svc has indexed them all.
    cchannel = create_channel(f"127.0.0.1:{context_port}", token=lambda: token)
    cstub = context_pb2_grpc.ContextServiceStub(cchannel)  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = await cstub.GetIndexStatus(context_pb2.GetIndexStatusRequest())
        if status.indexed_turns >= written:
            break
        await asyncio.sleep(0.5)
    await cchannel.close(None)


def _settings(
    workdir: Path, jwt_key: str, state_port: int, context_port: int, **extra: Any
) -> AgentSettings:
    return AgentSettings(
        tenant=TENANT,
        state_target=f"127.0.0.1:{state_port}",
        context_target=f"127.0.0.1:{context_port}",
        auth_jwt_key=SecretStr(jwt_key),
        spool_dir=workdir / f"spool-{uuid7()[-8:]}",
        **extra,
    )


async def _conversation(settings: AgentSettings) -> tuple[ConversationState, TurnEnricher]:
    backend = BackendClient(settings)
    await backend.start()
    state = ConversationState(
        conversation_id=uuid7(),
        resumed=False,
        room_name="bench",
        agent_name="bench",
        backend=backend,
        history=HistoryWindow(settings.history_window),
        profile=UserProfile(user_id=USER, display_name="Bench"),
    )
    backend.writer.create_conversation(
        state_pb2.CreateConversationRequest(
            conversation_id=state.conversation_id, room_name="bench", user_ids=[USER]
        )
    )
    return state, TurnEnricher(backend, state)


async def _enqueue_times(state: ConversationState, events: int, paced: bool) -> list[float]:
    """Hand-off times of message events. Back to back: handlers firing in a row (a turn
    produces a transcription, a message and a speech record at once), the sender and
    state_svc storing them in between every 100. One per wake-up: the loop sleeps 1 ms
    before each, so every call starts on a cold CPU cache (this measures the machine too)."""
    times: list[float] = []
    for i in range(events):
        if paced:
            await asyncio.sleep(0.001)
        elif i % 100 == 99:
            await asyncio.sleep(0)
        started = time.perf_counter()
        state.record_message("user", f"message number {i} {_TOPICS[i % 10]}", f"item-{i}", False)
        times.append((time.perf_counter() - started) * 1e6)
    return times


async def _enrich_wait_times(enricher: TurnEnricher, turns: int) -> list[float]:
    """The wait of a request whose enrichment was not started earlier (the worst case:
    normally it starts at the final transcript)."""
    times: list[float] = []
    for i in range(turns):
        question = f"{_QUESTIONS[i % len(_QUESTIONS)]} ({i})"
        started = time.perf_counter()
        await enricher.context_for(question)
        times.append((time.perf_counter() - started) * 1000)
    return times


class _TimedAgent(Agent):
    """The benchmark's own agent: notes when LiveKit decided each turn had ended (the hook
    runs at the end of turn; it leaves the chat context alone, as the state layer does)."""

    def __init__(self) -> None:
        super().__init__(instructions="You are the benchmark's agent. Answer briefly.")
        self.ended_at: dict[str, float] = {}

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        self.ended_at[new_message.text_content or ""] = time.monotonic()


class _HookEnrichingAgent(_TimedAgent):
    """The way the seed enriched (the baseline): Enrich in on_user_turn_completed, the block
    added to the turn's chat context. LiveKit then discards every preemptive reply."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self._conversation = conversation

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        await super().on_user_turn_completed(turn_ctx, new_message)
        state = self._conversation.state
        response = await self._conversation.backend.reader.enrich(
            state.conversation_id, state.profile.user_id, new_message.text_content or ""
        )
        if response is not None and response.context_block:
            turn_ctx.add_message(role="system", content=response.context_block)


MODES = ("on", "off", "in_hook")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


async def _session_turns(
    settings: AgentSettings,
    workdir: Path,
    server: FakeOpenAI,
    *,
    mode: str,
    turns: int,
    endpointing_s: float,
) -> list[dict[str, Any]]:
    """Turns through a real AgentSession; per turn, whether the reply was the preemptive
    generation and when its LLM request went out relative to the end of turn. Modes:
    enrichment "on" (the state layer's EnrichedLLM), "off" (the bare LLM), "in_hook" (the
    seed's way, for comparison)."""
    conversation = await StateLayer(settings).open_room(
        FileRoomMetadata(workdir / f"room-{uuid7()[-8:]}.json"),
        room_name="bench",
        profile=UserProfile(user_id=USER, display_name="Bench"),
    )
    model = openai.LLM(model="gpt-4.1-mini", base_url=server.base_url, api_key="bench-key")
    session, typed = typed_session(
        conversation.enriched(model) if mode == "on" else model, endpointing_s
    )
    agent = _HookEnrichingAgent(conversation) if mode == "in_hook" else _TimedAgent()
    replies: asyncio.Queue[str] = asyncio.Queue()

    def on_item(ev: Any) -> None:
        if isinstance(ev.item, llm.ChatMessage) and ev.item.role == "assistant":
            replies.put_nowait(ev.item.text_content or "")

    session.on("conversation_item_added", on_item)
    results: list[dict[str, Any]] = []
    with framework_log() as lines:
        await conversation.start(session, agent)
        try:
            for i in range(turns):
                text = f"{_QUESTIONS[i % len(_QUESTIONS)]} Turn {i}, {mode}."
                mark = len(lines)
                typed.type_line(text, final_after_s=0.02)
                await asyncio.wait_for(replies.get(), 30)
                requests = [
                    r
                    for r in server.requests_to("/chat/completions")
                    if _last_user_text(r.json["messages"]) == text
                ]
                # The request that answered: the last one for this transcript (a superseded
                # preemptive attempt, if any, came before it).
                sent_at = requests[-1].received_at
                ended_at = agent.ended_at[text]
                results.append(
                    {
                        "preemptive": any(
                            "using preemptive generation" in line for line in lines[mark:]
                        ),
                        "invalidated": any(
                            "preemptive generation invalidated" in line for line in lines[mark:]
                        ),
                        "eot_to_request_ms": max(0.0, sent_at - ended_at) * 1000,
                        "request_before_eot_ms": max(0.0, ended_at - sent_at) * 1000,
                    }
                )
        finally:
            await session.aclose()
            await conversation.aclose(10)
    return results


def _turns_line(mode: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    waits = [r["eot_to_request_ms"] for r in results]
    return {
        "phase": "session_turns",
        "enrichment": mode,
        "turns": len(results),
        "preemptive_used_ratio": round(sum(r["preemptive"] for r in results) / len(results), 3),
        "invalidated": sum(r["invalidated"] for r in results),
        "eot_to_llm_request_p50_ms": round(statistics.median(waits), 2),
        "eot_to_llm_request_p95_ms": round(_pct(waits, 95), 2),
        "eot_to_llm_request_max_ms": round(max(waits), 2),
        "request_before_eot_p50_ms": round(
            statistics.median(r["request_before_eot_ms"] for r in results), 1
        ),
    }


async def run(args: argparse.Namespace) -> None:
    jwt_key = secrets.token_urlsafe(48)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        workdir = Path(tmp)
        with (
            state_service(workdir, jwt_key, None, "", "sqlite") as state_port,
            context_service(workdir, jwt_key, state_port) as (context_port, context_proc),
        ):
            await _seed(state_port, context_port, jwt_key, args.history)
            _emit({"phase": "seeded", "history_turns": args.history})

            # 2. turns through the real AgentSession: enrichment on, off, in the hook
            settings = _settings(workdir, jwt_key, state_port, context_port)
            lines: dict[str, dict[str, Any]] = {}
            with fake_openai(first_token_delay_s=args.ttft_ms / 1000) as server:
                for mode in MODES:
                    await _session_turns(  # warm-up (channels, model caches, the fake)
                        settings,
                        workdir,
                        server,
                        mode=mode,
                        turns=3,
                        endpointing_s=args.endpointing_ms / 1000,
                    )
                    results = await _session_turns(
                        settings,
                        workdir,
                        server,
                        mode=mode,
                        turns=args.turns,
                        endpointing_s=args.endpointing_ms / 1000,
                    )
                    lines[mode] = _turns_line(mode, results)
                    _emit(lines[mode])
            state, _ = await _conversation(settings)
            # 3. enqueue
            context_proc.send_signal(signal.SIGSTOP)
            try:
                enqueue_us = await _enqueue_times(state, args.events, paced=False)
                paced_us = await _enqueue_times(state, args.events // 5, paced=True)
                flushed = await state.backend.flush(120)
            finally:
                context_proc.send_signal(signal.SIGCONT)
            for mode, times in (("back_to_back", enqueue_us), ("one_per_wakeup", paced_us)):
                _emit(
                    {
                        "phase": "enqueue",
                        "mode": mode,
                        "events": len(times),
                        "p50_us": round(statistics.median(times), 1),
                        "p99_us": round(_pct(times, 99), 1),
                        "max_us": round(max(times), 1),
                        "all_stored": flushed,
                    }
                )

            await state.backend.aclose(10)

            # 4. turn hook, context hung
            with socket.socket() as hung:
                hung.bind(("127.0.0.1", 0))
                hung.listen(1024)
                hung_port = hung.getsockname()[1]
                worst = _settings(workdir, jwt_key, state_port, hung_port, breaker_failures=10**9)
                hstate, hagent = await _conversation(worst)
                hung_times = await _enrich_wait_times(hagent, args.hung_turns)
                await hstate.backend.aclose(10)
                default = _settings(workdir, jwt_key, state_port, hung_port)
                bstate, bagent = await _conversation(default)
                breaker_times = await _enrich_wait_times(bagent, args.hung_turns)
                await bstate.backend.aclose(10)
            _emit(
                {
                    "phase": "enrich_wait_context_hung",
                    "turns": args.hung_turns,
                    "breaker": "disabled",
                    "p50_ms": round(statistics.median(hung_times), 2),
                    "p99_ms": round(_pct(hung_times, 99), 2),
                    "max_ms": round(max(hung_times), 2),
                }
            )
            _emit(
                {
                    "phase": "enrich_wait_context_hung",
                    "turns": args.hung_turns,
                    "breaker": "default",
                    "p50_ms": round(statistics.median(breaker_times), 2),
                    "p99_ms": round(_pct(breaker_times, 99), 2),
                }
            )
            on, off, in_hook = lines["on"], lines["off"], lines["in_hook"]
            budget = settings.enrich_budget_ms
            summary: dict[str, Any] = {
                "bench": "agent",
                "turns": args.turns,
                "ttft_ms": args.ttft_ms,
                "endpointing_ms": args.endpointing_ms,
                "preemptive_used_ratio": on["preemptive_used_ratio"],
                "preemptive_used_ratio_off": off["preemptive_used_ratio"],
                # The seed's way (enrichment in on_user_turn_completed), for comparison.
                "preemptive_used_ratio_in_hook": in_hook["preemptive_used_ratio"],
                "preemptive_used_ratio_min": 0.95,
                "eot_to_llm_request_p95_ms_on": on["eot_to_llm_request_p95_ms"],
                "eot_to_llm_request_p95_ms_off": off["eot_to_llm_request_p95_ms"],
                "eot_to_llm_request_p95_ms_in_hook": in_hook["eot_to_llm_request_p95_ms"],
                "eot_to_llm_request_p95_delta_ms": round(
                    on["eot_to_llm_request_p95_ms"] - off["eot_to_llm_request_p95_ms"], 2
                ),
                "eot_to_llm_request_p95_delta_limit_ms": 5.0,
                "enqueue_p99_us": round(_pct(enqueue_us, 99), 1),
                "enqueue_p99_limit_us": 100.0,
                "enrich_wait_p99_ms_context_hung": round(_pct(hung_times, 99), 2),
                "enrich_wait_limit_ms_context_hung": budget + 10,
                "budget_ms": budget,
            }
            summary["within_limits"] = (
                summary["preemptive_used_ratio"] >= summary["preemptive_used_ratio_min"]
                and summary["eot_to_llm_request_p95_delta_ms"]
                <= summary["eot_to_llm_request_p95_delta_limit_ms"]
                and summary["enqueue_p99_us"] <= summary["enqueue_p99_limit_us"]
                and summary["enrich_wait_p99_ms_context_hung"]
                <= summary["enrich_wait_limit_ms_context_hung"]
            )
            _emit(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--history", type=int, default=1000, help="earlier turns of the user")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=100, help="session turns, each mode")
    parser.add_argument("--ttft-ms", type=float, default=300.0, help="the fake LLM's TTFT")
    parser.add_argument(
        "--endpointing-ms", type=float, default=500.0, help="LiveKit's default min delay"
    )
    parser.add_argument("--hung-turns", type=int, default=100)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
