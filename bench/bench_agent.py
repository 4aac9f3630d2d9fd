"""`make bench-agent`: what the agent's state handling costs the voice path.

1. state_svc (embedded SQLite) and context_svc run as processes; a user gets --history
   earlier turns over 10 conversations, indexed by context_svc from the change feed.
2. turn hook, context_svc up: StatefulAgent.on_user_turn_completed (history, Enrich over
   gRPC with the configured budget, injection) for --turns questions.
3. enqueue: the time a handler spends handing one message event to the BackendClient
   (building the event, the spool write, the queue): --events back to back (the summary's
   figure), then a fifth as many one per event-loop wake-up (see _enqueue_times), while
   the sender and state_svc store them. context_svc is paused (SIGSTOP) meanwhile: on this
   two-core machine its indexing of those messages would otherwise take the CPU from the
   measurement, which in a deployment runs in another pod.
4. turn hook, context_svc hung: the same against a server that accepts connections and never
   answers. The breaker is disabled for this phase so every call waits for the budget (the
   worst case); a second line shows the default breaker, which answers at once once open.

Prints JSON lines; the last one is the summary.
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
from pydantic import SecretStr

from bench.servers import context_service, state_service
from voiceagent_backbone.agent_svc.backend import BackendClient
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.conversation import ConversationState
from voiceagent_backbone.agent_svc.enrichment import TurnEnricher
from voiceagent_backbone.agent_svc.history import HistoryWindow
from voiceagent_backbone.agent_svc.metadata import UserProfile
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
    backend.create_conversation(
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


async def _hook_times(enricher: TurnEnricher, turns: int) -> list[float]:
    """The wait of a request whose enrichment was not started earlier (the worst case:
    normally it starts at the final transcript)."""
    times: list[float] = []
    for i in range(turns):
        question = f"{_QUESTIONS[i % len(_QUESTIONS)]} ({i})"
        started = time.perf_counter()
        await enricher.context_for(question)
        times.append((time.perf_counter() - started) * 1000)
    return times


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

            # 2. turn hook, context up (before the enqueue phase: context_svc would
            # otherwise still be indexing its 10,000 messages while this runs)
            settings = _settings(workdir, jwt_key, state_port, context_port)
            state, agent = await _conversation(settings)
            await _hook_times(agent, 10)  # warm-up (channels, model caches)
            up = await _hook_times(agent, args.turns)
            _emit(
                {
                    "phase": "turn_hook_context_up",
                    "turns": args.turns,
                    "p50_ms": round(statistics.median(up), 2),
                    "p95_ms": round(_pct(up, 95), 2),
                    "p99_ms": round(_pct(up, 99), 2),
                }
            )
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
                hung_times = await _hook_times(hagent, args.hung_turns)
                await hstate.backend.aclose(10)
                default = _settings(workdir, jwt_key, state_port, hung_port)
                bstate, bagent = await _conversation(default)
                breaker_times = await _hook_times(bagent, args.hung_turns)
                await bstate.backend.aclose(10)
            _emit(
                {
                    "phase": "turn_hook_context_hung",
                    "turns": args.hung_turns,
                    "breaker": "disabled",
                    "p50_ms": round(statistics.median(hung_times), 2),
                    "p99_ms": round(_pct(hung_times, 99), 2),
                    "max_ms": round(max(hung_times), 2),
                }
            )
            _emit(
                {
                    "phase": "turn_hook_context_hung",
                    "turns": args.hung_turns,
                    "breaker": "default",
                    "p50_ms": round(statistics.median(breaker_times), 2),
                    "p99_ms": round(_pct(breaker_times, 99), 2),
                }
            )
            _emit(
                {
                    "bench": "agent",
                    "enqueue_p99_us": round(_pct(enqueue_us, 99), 1),
                    "turn_hook_p50_ms": round(statistics.median(up), 2),
                    "turn_hook_p95_ms": round(_pct(up, 95), 2),
                    "turn_hook_p99_ms_context_hung": round(_pct(hung_times, 99), 2),
                    "budget_ms": settings.enrich_budget_ms,
                }
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--history", type=int, default=1000, help="earlier turns of the user")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--hung-turns", type=int, default=100)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
