"""`make bench-load`: how many simulated conversations state_svc and context_svc sustain
together on this machine.

state_svc (embedded SQLite, or MongoDB with --backend mongodb: MONGODB_URI or FerretDB) and
context_svc run as processes. Each simulated conversation takes a turn every
--turn-interval seconds (with jitter): its three events (final transcription, user message,
agent reply) in one AppendEvents, and one Enrich for the user's words, as the agent does.
--watchers Watch streams follow the feed meanwhile (half the tenant's, half all tenants').

The number of conversations doubles from --start until a step breaks a limit (append p99
over --append-p99-ms, Enrich p95 over --enrich-p95-ms, or any error), then bisects between
the last good and the first bad. Each step runs --step-s seconds. The client runs on the
same two cores as the services: the figure is what this machine sustains, client included.

Prints a JSON line per step and, last, the summary: the largest number of conversations
within the limits, its latencies, and each process's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from bench.servers import context_service, mongodb, state_service_process
from voiceagent_backbone.api.context.v1 import context_pb2, context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2, state_pb2_grpc
from voiceagent_backbone.servicekit.auth import mint_token
from voiceagent_backbone.servicekit.client import create_channel
from voiceagent_backbone.servicekit.ids import uuid7

TENANT = "load"
_SAYINGS = [
    "I would like to move my appointment to Thursday",
    "My sister Maria lives in Porto now",
    "Can you remind me what we said about the insurance",
    "The car needs new tyres before winter",
    "I prefer green tea in the morning",
    "Our dog Rex is afraid of thunderstorms",
]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


def _emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


@dataclass
class Step:
    conversations: int
    append_ms: list[float] = field(default_factory=list)
    enrich_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    watched: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def _events(text: str) -> list[state_pb2.Event]:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()

    def one(kind: state_pb2.EventType, role: state_pb2.Role, words: str) -> state_pb2.Event:
        return state_pb2.Event(event_id=uuid7(), type=kind, role=role, text=words, client_time=now)

    return [
        one(state_pb2.EVENT_TYPE_TRANSCRIPTION, state_pb2.ROLE_USER, text),
        one(state_pb2.EVENT_TYPE_USER_MESSAGE, state_pb2.ROLE_USER, text),
        one(state_pb2.EVENT_TYPE_AGENT_MESSAGE, state_pb2.ROLE_AGENT, f"I see: {text.lower()}."),
    ]


async def _conversation(
    state: state_pb2_grpc.StateServiceStub,
    context: context_pb2_grpc.ContextServiceStub,
    step: Step,
    user: str,
    interval_s: float,
    until: float,
) -> None:
    rng = random.Random(user)
    try:
        created = await state.CreateConversation(
            state_pb2.CreateConversationRequest(room_name=f"room-{user}", user_ids=[user]),
            timeout=10,
        )
    except grpc.aio.AioRpcError as exc:
        step.error(f"create:{exc.code().name}")
        return
    cid = created.conversation.conversation_id
    await asyncio.sleep(rng.uniform(0, interval_s))  # spread the turns
    while time.monotonic() < until:
        started = time.monotonic()
        text = rng.choice(_SAYINGS)
        try:
            await state.AppendEvents(
                state_pb2.AppendEventsRequest(conversation_id=cid, events=_events(text)),
                timeout=10,
            )
            step.append_ms.append((time.monotonic() - started) * 1000)
        except grpc.aio.AioRpcError as exc:
            step.error(f"append:{exc.code().name}")
        enrich_started = time.monotonic()
        try:
            await context.Enrich(
                context_pb2.EnrichRequest(
                    conversation_id=cid, user_id=user, text=text, max_items=6, token_budget=600
                ),
                timeout=2,
            )
            step.enrich_ms.append((time.monotonic() - enrich_started) * 1000)
        except grpc.aio.AioRpcError as exc:
            step.error(f"enrich:{exc.code().name}")
        await asyncio.sleep(
            max(0.0, interval_s * rng.uniform(0.8, 1.2) - (time.monotonic() - started))
        )


async def _watcher(
    state: state_pb2_grpc.StateServiceStub, step: Step, all_tenants: bool, until: float
) -> None:
    call = state.Watch(
        state_pb2.WatchRequest(all_tenants=all_tenants), timeout=until - time.monotonic()
    )
    try:
        async for reply in call:
            step.watched += len(reply.changes)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            step.error(f"watch:{exc.code().name}")


async def _step(
    args: argparse.Namespace,
    state: state_pb2_grpc.StateServiceStub,
    context: context_pb2_grpc.ContextServiceStub,
    conversations: int,
) -> Step:
    step = Step(conversations)
    until = time.monotonic() + args.step_s
    run = uuid7()[-8:]
    tasks = [
        _conversation(state, context, step, f"u{run}-{i}", args.turn_interval, until)
        for i in range(conversations)
    ]
    tasks += [_watcher(state, step, i % 2 == 1, until) for i in range(args.watchers)]
    await asyncio.gather(*tasks)
    return step


def _within(step: Step, args: argparse.Namespace) -> bool:
    return (
        not step.errors
        and bool(step.append_ms)
        and _pct(step.append_ms, 99) <= args.append_p99_ms
        and _pct(step.enrich_ms, 95) <= args.enrich_p95_ms
    )


def _line(
    step: Step, args: argparse.Namespace, procs: dict[str, subprocess.Popen[bytes]]
) -> dict[str, Any]:
    return {
        "phase": "step",
        "conversations": step.conversations,
        "turns": len(step.append_ms),
        "append_p50_ms": round(statistics.median(step.append_ms), 1) if step.append_ms else None,
        "append_p99_ms": round(_pct(step.append_ms, 99), 1),
        "enrich_p50_ms": round(statistics.median(step.enrich_ms), 1) if step.enrich_ms else None,
        "enrich_p95_ms": round(_pct(step.enrich_ms, 95), 1),
        "watched_changes": step.watched,
        "errors": step.errors,
        "within_limits": _within(step, args),
        "rss_mb": {name: _rss_mb(p.pid) for name, p in procs.items()},
    }


async def run(args: argparse.Namespace) -> None:
    jwt_key = secrets.token_urlsafe(48)
    token = mint_token(
        jwt_key,
        tenant=TENANT,
        scopes=["state.read", "state.write", "state.feed", "context.read"],
        ttl_s=3 * 3600,
    )
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            uri, kind = (
                (None, "sqlite")
                if args.backend == "sqlite"
                else stack.enter_context(mongodb(workdir))
            )
            database = f"load_{uuid7()[-8:]}" if uri else ""
            with (
                state_service_process(workdir, jwt_key, uri, database, kind) as (
                    state_port,
                    state_proc,
                ),
                context_service(workdir, jwt_key, state_port) as (context_port, context_proc),
            ):
                procs = {"state_svc": state_proc, "context_svc": context_proc}
                async with (
                    create_channel(f"127.0.0.1:{state_port}", token=lambda: token) as sch,
                    create_channel(f"127.0.0.1:{context_port}", token=lambda: token) as cch,
                ):
                    state = state_pb2_grpc.StateServiceStub(sch)  # type: ignore[no-untyped-call]
                    context = context_pb2_grpc.ContextServiceStub(cch)  # type: ignore[no-untyped-call]
                    await _step(args, state, context, 2)  # warm-up: channels, model
                    best: dict[str, Any] | None = None
                    good, bad = 0, 0
                    n = args.start
                    while n <= args.max:
                        line = _line(await _step(args, state, context, n), args, procs)
                        _emit(line)
                        if line["within_limits"]:
                            good, best = n, line
                            if bad:
                                break
                            n *= 2
                        else:
                            bad = n
                            break
                    # Bisect between the last good and the first bad step.
                    while bad and bad - good > max(2, good // 8):
                        n = (good + bad) // 2
                        line = _line(await _step(args, state, context, n), args, procs)
                        _emit(line)
                        if line["within_limits"]:
                            good, best = n, line
                        else:
                            bad = n
                    _emit(
                        {
                            "bench": "load",
                            "backend": kind,
                            "sustained_conversations": good,
                            "first_failing_conversations": bad or None,
                            "turn_interval_s": args.turn_interval,
                            "watchers": args.watchers,
                            "append_p99_limit_ms": args.append_p99_ms,
                            "enrich_p95_limit_ms": args.enrich_p95_ms,
                            "append_p99_ms": best["append_p99_ms"] if best else None,
                            "enrich_p95_ms": best["enrich_p95_ms"] if best else None,
                            "rss_mb": best["rss_mb"] if best else None,
                        }
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "mongodb"], default="sqlite")
    parser.add_argument("--turn-interval", type=float, default=4.0, help="seconds per turn")
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--step-s", type=float, default=20.0)
    parser.add_argument("--start", type=int, default=10)
    parser.add_argument("--max", type=int, default=2560)
    parser.add_argument("--append-p99-ms", type=float, default=100.0)
    parser.add_argument("--enrich-p95-ms", type=float, default=50.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
