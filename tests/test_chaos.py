"""Chaos: writers and Watch consumers under load while both state_svc replicas and FerretDB
are killed with SIGKILL and started again, and context_svc is killed while it is behind on
the feed.

Every component is a real process on loopback: FerretDB (restarted on the same data
directory and port), two state_svc replicas on one database, and context_svc following the
feed through either replica (restarted on the same index file). Writers send each request
to one replica, then the other, retrying UNAVAILABLE and DEADLINE_EXCEEDED with the same
event ids until a reply acknowledges them. Watch consumers resume from the last cursor
they received whenever their stream breaks.

Afterwards: every acknowledged event is stored exactly once with the sequence number its
acknowledgement gave, each conversation's sequence is 1..n, both replicas serve the same
feed and each consumer got exactly that feed (its tenant's part of it), once each and in
order, and context_svc's index holds every turn.

The faults, in order, each followed by progress of the writers: SIGKILL state replica 0 and
restart it; SIGKILL FerretDB and restart it; SIGKILL replica 1 and restart it; make the
writers send bigger batches until context_svc is well behind, SIGKILL it and restart it.
Every run of every process logs to its own file in the test's tmp_path (state0-1.log,
state0-2.log, ...). About a minute on two cores.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.support.ferretdb import ferretdb_command
from tests.support.processes import ChildProcess, free_port
from tests.support.state import event
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit import auth
from voiceagent_backbone.servicekit.client import create_channel

pytestmark = pytest.mark.ferretdb

TENANTS = ("chaos-a", "chaos-b")
CONVERSATIONS_PER_TENANT = 4
WRITERS = 6  # three per tenant, on the same conversations: replicas race for seqs
APPEND_TIMEOUT_S = 2.0  # one attempt; then the same request again, to the other replica
ACK_DEADLINE_S = 45.0  # a request not acknowledged by then fails the test
RESEND_PROBABILITY = 0.05  # an acknowledged request again, as after a lost reply
# context_svc must be this many turns behind the feed when it is killed.
CONTEXT_BEHIND_TURNS = 30
DATABASE = "chaos"
WORDS = ("garden", "weather", "train", "recipe", "concert", "doctor", "holiday", "budget")


# -- processes ---------------------------------------------------------------------------


class Restartable:
    """A service process the test kills with SIGKILL and starts again with the same
    command, port and data. Each run logs to its own file (name-1.log, name-2.log, ...)."""

    def __init__(
        self,
        name: str,
        args: Sequence[str | os.PathLike[str]],
        port: int,
        workdir: Path,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 30,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.port = port
        self.workdir = workdir
        self.env = env or {}
        self.ready_timeout_s = ready_timeout_s
        self.runs = 0
        self.proc: ChildProcess | None = None

    def start(self) -> None:
        """Blocking: from the event loop, use `asyncio.to_thread(service.start)`."""
        self.runs += 1
        log = self.workdir / f"{self.name}-{self.runs}.log"
        self.proc = ChildProcess(self.args, log, self.env)
        self.proc.wait_for_port(self.port, self.ready_timeout_s, f"{self.name} (run {self.runs})")

    def kill(self) -> None:
        proc = self.proc
        assert proc is not None, f"{self.name} never started"
        assert proc.alive(), f"{self.name} is not running"
        proc.signal(signal.SIGKILL)
        proc.wait(timeout_s=10)
        proc.stop()  # closes its log

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()


@dataclass
class Rig:
    workdir: Path
    jwt_key: str
    ferretdb: Restartable
    replicas: list[Restartable]
    context: Restartable
    index_path: Path

    def logs(self) -> str:
        return f"(logs in {self.workdir})"


@pytest.fixture
def rig(tmp_path: Path, jwt_key: str) -> Iterator[Rig]:
    """FerretDB, two state_svc replicas on one database, context_svc following either."""
    ferret_port = free_port()
    ferret_dir = tmp_path / "ferretdb"
    ferretdb = Restartable(
        "ferretdb", ferretdb_command(ferret_dir, ferret_port), ferret_port, tmp_path
    )
    uri = f"mongodb://127.0.0.1:{ferret_port}/"
    replicas = []
    for i in range(2):
        port = free_port()
        env = {
            "STATE_PORT": str(port),
            "STATE_METRICS_PORT": "-1",
            "STATE_AUTH_JWT_KEY": jwt_key,
            "STATE_MONGODB_URI": uri,
            "STATE_MONGODB_DATABASE": DATABASE,
            "STATE_MONGODB_WRITE_CONCERN": "1",
            # A dead database is noticed in 2 s, not 5: appends fail over sooner.
            "STATE_MONGODB_TIMEOUT_MS": "2000",
            "STATE_GRACE_PERIOD_S": "1",
            "STATE_FEED_POLL_INTERVAL_S": "0.05",
        }
        replicas.append(
            Restartable(
                f"state{i}",
                [sys.executable, "-m", "voiceagent_backbone.state_svc"],
                port,
                tmp_path,
                env,
            )
        )
    index_path = tmp_path / "context.sqlite3"
    context_port = free_port()
    context = Restartable(
        "context",
        [sys.executable, "-m", "voiceagent_backbone.context_svc"],
        context_port,
        tmp_path,
        {
            "CONTEXT_PORT": str(context_port),
            "CONTEXT_METRICS_PORT": "-1",
            "CONTEXT_AUTH_JWT_KEY": jwt_key,
            # Both replicas, round robin: the feed goes on through whichever is up.
            "CONTEXT_STATE_TARGET": "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas),
            "CONTEXT_INDEX_PATH": str(index_path),
            "CONTEXT_FEED_BATCH": "64",
            "CONTEXT_FEED_RETRY_MAX_S": "0.5",
            "CONTEXT_GRACE_PERIOD_S": "1",
        },
        ready_timeout_s=90,
    )
    started: list[Restartable] = []
    try:
        for service in (ferretdb, *replicas, context):
            started.append(service)
            service.start()
        yield Rig(tmp_path, jwt_key, ferretdb, replicas, context, index_path)
    finally:
        for service in reversed(started):
            service.stop()


# -- clients -----------------------------------------------------------------------------


def bearer(jwt_key: str, tenant: str, scopes: str) -> tuple[tuple[str, str], ...]:
    token = auth.mint_token(jwt_key, tenant=tenant, scopes=scopes.split(), ttl_s=3600)
    return (("authorization", f"Bearer {token}"),)


@contextlib.asynccontextmanager
async def channels(ports: Sequence[int]) -> AsyncIterator[list[grpc.aio.Channel]]:
    """No retries in the channel (the test retries, with the same ids), and reconnects
    every 0.1-1 s, so a restarted server is found again quickly."""
    opened = [
        create_channel(
            f"127.0.0.1:{port}",
            retry=False,
            extra_options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        for port in ports
    ]
    try:
        yield opened
    finally:
        for channel in opened:
            await channel.close(None)


def state_stub(channel: grpc.aio.Channel) -> state_pb2_grpc.StateServiceStub:
    return state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]


def context_stub(channel: grpc.aio.Channel) -> context_pb2_grpc.ContextServiceStub:
    return context_pb2_grpc.ContextServiceStub(channel)  # type: ignore[no-untyped-call]


RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class Acked:
    tenant: str
    conversation_id: str
    seq: int
    token: str  # a word written only into this event's text


@dataclass
class Ledger:
    """What the writers were told: every acknowledged event, and anything odd."""

    acked: dict[str, Acked] = field(default_factory=dict)
    failed_attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    retried_requests: int = 0
    resent_requests: int = 0
    at_context_kill: int = 0  # how many were acknowledged when context_svc was killed
    anomalies: list[str] = field(default_factory=list)

    def count(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self.acked)
        return sum(1 for a in self.acked.values() if a.tenant == tenant)


async def append_until_acked(
    stubs: Sequence[state_pb2_grpc.StateServiceStub],
    request: pb.AppendEventsRequest,
    metadata: tuple[tuple[str, str], ...],
    first_replica: int,
    ledger: Ledger,
) -> tuple[pb.AppendEventsResponse, int]:
    """Sends the request to one replica, then the other, ...; returns the reply and the
    attempt that got it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ACK_DEADLINE_S
    attempt = 0
    while True:
        stub = stubs[(first_replica + attempt) % len(stubs)]
        try:
            reply: pb.AppendEventsResponse = await stub.AppendEvents(
                request, metadata=metadata, timeout=APPEND_TIMEOUT_S
            )
            return reply, attempt
        except grpc.aio.AioRpcError as exc:
            ledger.failed_attempts[exc.code().name] += 1
            if exc.code() not in RETRIED:
                raise AssertionError(
                    f"AppendEvents failed with {exc.code().name}: {exc.details()}"
                ) from exc
            if loop.time() > deadline:
                raise AssertionError(
                    f"an append was not acknowledged within {ACK_DEADLINE_S}s: "
                    f"{exc.code().name} {exc.details()}"
                ) from exc
        attempt += 1
        await asyncio.sleep(min(0.05 * 2**attempt, 0.5))


@dataclass
class Load:
    """Shared switches of the writers."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    burst: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def check(self) -> None:
        """Raises what made a writer fail (it would otherwise show only at the end)."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"{task.get_name()} failed") from task.exception()


async def writer(
    index: int,
    tenant: str,
    conversations: Sequence[str],
    stubs: Sequence[state_pb2_grpc.StateServiceStub],
    jwt_key: str,
    load: Load,
    ledger: Ledger,
) -> None:
    rng = random.Random(index)
    metadata = bearer(jwt_key, tenant, "state.read state.write")
    last_seq: dict[str, int] = collections.defaultdict(int)  # this writer's, per conversation
    sent: list[pb.AppendEventsRequest] = []
    number = 0
    while not load.stop.is_set():
        conversation_id = rng.choice(conversations)
        size = rng.randint(10, 20) if load.burst.is_set() else rng.randint(1, 3)
        tokens = [f"kq{uuid.uuid4().hex[:10]}" for _ in range(size)]
        events = []
        for i, token in enumerate(tokens):
            user = (number + i) % 2 == 0
            speaker = "caller" if user else "assistant"
            events.append(
                event(
                    pb.EVENT_TYPE_USER_MESSAGE if user else pb.EVENT_TYPE_AGENT_MESSAGE,
                    f"{speaker} {index}-{number}-{i} {token} about the {rng.choice(WORDS)}",
                    pb.ROLE_USER if user else pb.ROLE_AGENT,
                    participant_identity=speaker,
                )
            )
        request = pb.AppendEventsRequest(conversation_id=conversation_id, events=events)
        reply, attempt = await append_until_acked(stubs, request, metadata, number, ledger)
        ledger.retried_requests += attempt > 0
        seqs = record(ledger, tenant, request, reply, tokens, first_try=attempt == 0)
        if (
            seqs != sorted(seqs)
            or len(set(seqs)) != len(seqs)
            or seqs[0] <= last_seq[conversation_id]
        ):
            ledger.anomalies.append(
                f"writer {index}: request {number} got seqs {seqs} in {conversation_id}, "
                f"after its earlier acknowledged seq {last_seq[conversation_id]}"
            )
        last_seq[conversation_id] = max(last_seq[conversation_id], *seqs)
        sent.append(request)
        number += 1
        if rng.random() < RESEND_PROBABILITY:
            again = rng.choice(sent)
            reply, _ = await append_until_acked(stubs, again, metadata, number + 1, ledger)
            ledger.resent_requests += 1
            record(ledger, tenant, again, reply, [], first_try=False)
            if not all(r.duplicate for r in reply.results):
                ledger.anomalies.append(
                    f"writer {index}: a request acknowledged before was stored again: {reply}"
                )
        await asyncio.sleep(rng.uniform(0.1, 0.3))


def record(
    ledger: Ledger,
    tenant: str,
    request: pb.AppendEventsRequest,
    reply: pb.AppendEventsResponse,
    tokens: Sequence[str],
    first_try: bool,
) -> list[int]:
    """Adds a reply's acknowledgements to the ledger; returns their seqs."""
    if [r.event_id for r in reply.results] != [e.event_id for e in request.events]:
        ledger.anomalies.append(f"results do not match the request's events: {reply}")
    seqs = []
    for i, result in enumerate(reply.results):
        seqs.append(result.seq)
        known = ledger.acked.get(result.event_id)
        if known is not None:
            if known.seq != result.seq or not result.duplicate:
                ledger.anomalies.append(
                    f"event {result.event_id} acknowledged at seq {known.seq}, now at "
                    f"{result.seq} (duplicate={result.duplicate})"
                )
            continue
        if first_try and result.duplicate:
            ledger.anomalies.append(
                f"event {result.event_id} was new and its first attempt said duplicate"
            )
        ledger.acked[result.event_id] = Acked(
            tenant, request.conversation_id, result.seq, tokens[i] if tokens else ""
        )
    return seqs


# -- watchers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    event_id: str
    tenant: str
    conversation_id: str
    seq: int


@dataclass
class Watcher:
    """A Watch consumer that resumes from its last cursor after any stream error, on the
    next of its replicas."""

    name: str
    replicas: Sequence[int]
    metadata: tuple[tuple[str, str], ...]
    all_tenants: bool
    max_batch: int
    delivered: list[Delivered] = field(default_factory=list)
    cursor: str = ""
    streams: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    async def run(self, stubs: Sequence[state_pb2_grpc.StateServiceStub]) -> None:
        while True:
            stub = stubs[self.replicas[self.streams % len(self.replicas)]]
            self.streams += 1
            call = stub.Watch(
                pb.WatchRequest(
                    cursor=self.cursor, all_tenants=self.all_tenants, max_batch=self.max_batch
                ),
                metadata=self.metadata,
            )
            try:
                async for reply in call:
                    for change in reply.changes:
                        if change.HasField("event"):
                            e = change.event
                            self.delivered.append(
                                Delivered(e.event_id, e.tenant_id, e.conversation_id, e.seq)
                            )
                        self.cursor = change.cursor
                self.errors["ended"] += 1  # a live stream never ends by itself
            except grpc.aio.AioRpcError as exc:
                self.errors[exc.code().name] += 1
            await asyncio.sleep(0.2)


# -- the scenario ------------------------------------------------------------------------


async def create_conversations(
    stub: state_pb2_grpc.StateServiceStub, jwt_key: str
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for tenant in TENANTS:
        metadata = bearer(jwt_key, tenant, "state.read state.write")
        out[tenant] = []
        for i in range(CONVERSATIONS_PER_TENANT):
            reply = await stub.CreateConversation(
                pb.CreateConversationRequest(
                    room_name=f"room-{i}", user_ids=[user_of(tenant, i)], agent_name="assistant"
                ),
                metadata=metadata,
                timeout=10,
            )
            out[tenant].append(reply.conversation.conversation_id)
    return out


def user_of(tenant: str, conversation_index: int) -> str:
    return f"user-{tenant}-{conversation_index}"


async def until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float, rig: Rig
) -> None:
    """Awaits `check()` every 0.1 s until it holds, bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} {rig.logs()}")
        await asyncio.sleep(0.1)


async def index_status(
    stub: context_pb2_grpc.ContextServiceStub, jwt_key: str, tenant: str
) -> cpb.GetIndexStatusResponse | None:
    try:
        reply: cpb.GetIndexStatusResponse = await stub.GetIndexStatus(
            cpb.GetIndexStatusRequest(),
            metadata=bearer(jwt_key, tenant, "context.read"),
            timeout=2,
        )
        return reply
    except grpc.aio.AioRpcError:
        return None


async def indexed_turns(stub: context_pb2_grpc.ContextServiceStub, jwt_key: str) -> int | None:
    total = 0
    for tenant in TENANTS:
        status = await index_status(stub, jwt_key, tenant)
        if status is None:
            return None
        total += status.indexed_turns
    return total


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    steps: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.steps.append(f"{time.monotonic() - self.started:6.1f}s {what}")


async def chaos(
    rig: Rig,
    ledger: Ledger,
    load: Load,
    context: context_pb2_grpc.ContextServiceStub,
    timeline: Timeline,
) -> None:
    """The faults, in order; after each restart the writers must make progress again."""

    async def progress(what: str, events: int = 40, timeout_s: float = 30) -> None:
        before = ledger.count()

        async def moved() -> bool:
            load.check()
            return ledger.count() >= before + events

        await until(moved, f"{events} acknowledged events after {what}", timeout_s, rig)
        timeline.note(f"{ledger.count()} acknowledged: writers go on after {what}")

    async def kill_and_restart(service: Restartable, down_s: float) -> None:
        await asyncio.to_thread(service.kill)
        timeline.note(f"SIGKILL {service.name} ({ledger.count()} acknowledged)")
        await asyncio.sleep(down_s)
        await asyncio.to_thread(service.start)
        timeline.note(f"{service.name} restarted")
        await progress(f"{service.name}'s restart")

    await progress("the start", events=80)
    await kill_and_restart(rig.replicas[0], 1.0)
    await kill_and_restart(rig.ferretdb, 1.5)
    await kill_and_restart(rig.replicas[1], 1.0)

    # context_svc mid-feed: bigger batches until it is well behind, then kill it.
    load.burst.set()
    behind = {"turns": 0}

    async def context_behind() -> bool:
        load.check()
        turns = await indexed_turns(context, rig.jwt_key)
        behind["turns"] = ledger.count() - (turns or 0)
        return turns is not None and behind["turns"] >= CONTEXT_BEHIND_TURNS

    await until(context_behind, f"context_svc {CONTEXT_BEHIND_TURNS} turns behind", 30, rig)
    await asyncio.to_thread(rig.context.kill)
    ledger.at_context_kill = ledger.count()
    load.burst.clear()
    timeline.note(
        f"SIGKILL context_svc, about {behind['turns']} turns behind ({ledger.count()} acknowledged)"
    )
    await asyncio.sleep(0.5)
    await asyncio.to_thread(rig.context.start)
    timeline.note("context_svc restarted")
    await progress("context_svc's restart", events=20)


@pytest.mark.timeout(240)
async def test_kills_lose_and_duplicate_nothing(rig: Rig) -> None:
    jwt_key = rig.jwt_key
    ledger, load, timeline = Ledger(), Load(), Timeline()
    async with (
        channels([r.port for r in rig.replicas]) as state_channels,
        channels([rig.context.port]) as (context_channel,),
    ):
        stubs = [state_stub(c) for c in state_channels]
        context = context_stub(context_channel)
        conversations = await create_conversations(stubs[0], jwt_key)
        feed = bearer(jwt_key, "chaos-platform", "state.read state.feed")
        watchers = [
            Watcher("feed-on-replica-0", [0], feed, True, 50),
            Watcher("feed-alternating", [0, 1], feed, True, 1000),
            Watcher(
                f"{TENANTS[0]}-on-replica-1",
                [1],
                bearer(jwt_key, TENANTS[0], "state.read"),
                False,
                7,
            ),
        ]
        watching = [asyncio.create_task(w.run(stubs), name=w.name) for w in watchers]
        writing = load.tasks = [
            asyncio.create_task(
                writer(
                    i,
                    TENANTS[i % 2],
                    conversations[TENANTS[i % 2]],
                    stubs,
                    jwt_key,
                    load,
                    ledger,
                ),
                name=f"writer-{i}",
            )
            for i in range(WRITERS)
        ]
        try:
            timeline.note("writers and watchers started")
            await chaos(rig, ledger, load, context, timeline)
            await asyncio.sleep(1.0)
            load.stop.set()
            await asyncio.gather(*writing)
            timeline.note(f"writers stopped: {ledger.count()} events acknowledged")

            assert not ledger.anomalies, "\n".join(ledger.anomalies[:20])
            for service in (rig.ferretdb, *rig.replicas, rig.context):
                assert service.alive(), f"{service.name} exited {rig.logs()}"

            await check_store(stubs, jwt_key, conversations, ledger, rig)
            timeline.note("store checked")
            reference = await check_feed(stubs, ledger, jwt_key, rig)
            timeline.note("feed checked")
            await check_watchers(watchers, reference, rig)
            timeline.note("watchers checked")
            await check_index(context, jwt_key, conversations, ledger, rig)
            timeline.note("index checked")
        finally:
            load.stop.set()
            for task in [*writing, *watching]:
                task.cancel()
            await asyncio.gather(*writing, *watching, return_exceptions=True)
            print("\n".join(timeline.steps))
            print(
                f"failed attempts {dict(ledger.failed_attempts)}, retried requests "
                f"{ledger.retried_requests}, resent {ledger.resent_requests}"
            )
            for w in watchers:
                print(f"{w.name}: {len(w.delivered)} delivered, {w.streams} streams, {w.errors}")

    # The index file after a clean stop: every acknowledged event is a turn in it, once.
    await asyncio.to_thread(rig.context.stop)
    with contextlib.closing(sqlite3.connect(f"file:{rig.index_path}?mode=ro", uri=True)) as db:
        rows = collections.Counter(db.execute("SELECT tenant_id, event_id FROM turns"))
    want = collections.Counter((a.tenant, i) for i, a in ledger.acked.items())
    assert rows == want, (
        f"the index file holds {sum(rows.values())} turns, {ledger.count()} were acknowledged: "
        f"missing {list(want - rows)[:5]}, extra {list(rows - want)[:5]} {rig.logs()}"
    )


async def check_store(
    stubs: Sequence[state_pb2_grpc.StateServiceStub],
    jwt_key: str,
    conversations: dict[str, list[str]],
    ledger: Ledger,
    rig: Rig,
) -> None:
    """Each conversation (read from one replica, then the next): seqs 1..n, every
    acknowledged event at its acknowledged seq, nothing else, nothing twice."""
    stored_total = 0
    for n, (tenant, conversation_id) in enumerate(
        (t, c) for t, ids in conversations.items() for c in ids
    ):
        replica = n % len(stubs)
        events: list[pb.Event] = []
        page, last_seq = "", 0
        while True:
            reply = await stubs[replica].GetHistory(
                pb.GetHistoryRequest(
                    conversation_id=conversation_id, page_size=1000, page_token=page
                ),
                metadata=bearer(jwt_key, tenant, "state.read"),
                timeout=30,
            )
            events.extend(reply.events)
            last_seq = reply.last_seq
            page = reply.next_page_token
            if not page:
                break
        where = f"replica {replica}, conversation {conversation_id} {rig.logs()}"
        ids_stored = [e.event_id for e in events]
        duplicates = [i for i, k in collections.Counter(ids_stored).items() if k > 1]
        assert not duplicates, f"stored more than once: {duplicates[:5]} ({where})"
        seqs = [e.seq for e in events]
        missing_seqs = sorted(set(range(1, len(seqs) + 1)) - set(seqs))
        assert seqs == list(range(1, len(seqs) + 1)), (
            f"seqs not 1..{len(seqs)}: missing {missing_seqs[:10]} ({where})"
        )
        acked = {i: a.seq for i, a in ledger.acked.items() if a.conversation_id == conversation_id}
        stored = {e.event_id: e.seq for e in events}
        lost = sorted(set(acked) - set(stored))
        assert not lost, f"acknowledged, not stored: {lost[:5]} ({where})"
        extra = sorted(set(stored) - set(acked))
        assert not extra, f"stored, never acknowledged: {extra[:5]} ({where})"
        moved = {i: (s, stored[i]) for i, s in acked.items() if stored[i] != s}
        assert not moved, f"(acknowledged seq, stored seq) differ: {moved} ({where})"
        assert last_seq == len(seqs), (
            f"the conversation's last_seq is {last_seq}, its history ends at {len(seqs)} ({where})"
        )
        stored_total += len(events)
    assert stored_total == ledger.count()


async def check_feed(
    stubs: Sequence[state_pb2_grpc.StateServiceStub], ledger: Ledger, jwt_key: str, rig: Rig
) -> list[Delivered]:
    """The whole feed from each replica (stop_at_end): the same on both, every acknowledged
    event once, each conversation in seq order. Returns it, the reference for watchers."""
    feeds: list[list[Delivered]] = []
    for stub in stubs:
        feed: list[Delivered] = []
        async for reply in stub.Watch(
            pb.WatchRequest(all_tenants=True, stop_at_end=True, max_batch=1000),
            metadata=bearer(jwt_key, "chaos-platform", "state.read state.feed"),
            timeout=60,
        ):
            feed.extend(
                Delivered(c.event.event_id, c.event.tenant_id, c.event.conversation_id, c.event.seq)
                for c in reply.changes
                if c.HasField("event")
            )
        feeds.append(feed)
    reference = feeds[0]
    assert feeds[1] == reference, f"the replicas serve different feeds {rig.logs()}"
    ids = [d.event_id for d in reference]
    assert len(set(ids)) == len(ids), "the feed holds an event twice"
    assert set(ids) == set(ledger.acked), "the feed's events are not the acknowledged ones"
    last: dict[str, int] = collections.defaultdict(int)
    for d in reference:
        assert d.seq == last[d.conversation_id] + 1, f"feed out of seq order at {d}"
        last[d.conversation_id] = d.seq
    return reference


async def check_watchers(watchers: Sequence[Watcher], reference: list[Delivered], rig: Rig) -> None:
    """Each consumer got its part of the reference feed: everything, once, in order."""

    def expected(w: Watcher) -> list[Delivered]:
        return reference if w.all_tenants else [d for d in reference if d.tenant == TENANTS[0]]

    async def all_delivered() -> bool:
        return all(len(w.delivered) >= len(expected(w)) for w in watchers)

    with contextlib.suppress(AssertionError):
        await until(all_delivered, "the watchers to catch up", 30, rig)
    await asyncio.sleep(0.5)  # anything delivered twice at the end shows up too
    for w in watchers:
        want, got = expected(w), w.delivered
        if got == want:
            continue
        got_ids = collections.Counter(d.event_id for d in got)
        twice = [i for i, n in got_ids.items() if n > 1]
        missing = [d for d in want if d.event_id not in got_ids]
        first_difference = next(
            (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
            min(len(got), len(want)),
        )
        raise AssertionError(
            f"{w.name} ({w.streams} streams, errors {dict(w.errors)}): got {len(got)} of "
            f"{len(want)} changes; {len(twice)} twice (e.g. {twice[:3]}), {len(missing)} "
            f"missing (e.g. {missing[:3]}), first difference at {first_difference} {rig.logs()}"
        )


async def check_index(
    context: context_pb2_grpc.ContextServiceStub,
    jwt_key: str,
    conversations: dict[str, list[str]],
    ledger: Ledger,
    rig: Rig,
) -> None:
    """context_svc caught up with every turn of each tenant; a sample of turns is found by
    the word only it contains."""
    loop = asyncio.get_running_loop()
    last: dict[str, cpb.GetIndexStatusResponse | None] = {}
    idle_since: float | None = None  # since when the feed has had nothing more for it

    async def settled() -> bool:
        nonlocal idle_since
        statuses = {t: await index_status(context, jwt_key, t) for t in TENANTS}
        last.update(statuses)
        if any(s is None or not s.feed_connected or s.lag_events for s in statuses.values()):
            idle_since = None
            return False
        if all(s is not None and s.indexed_turns == ledger.count(t) for t, s in statuses.items()):
            return True
        idle_since = idle_since or loop.time()
        # No lag for seconds and turns still missing (or extra): nothing more will come.
        return loop.time() - idle_since > 5

    def report() -> str:
        acknowledged = {t: ledger.count(t) for t in TENANTS}
        shown = {t: str(s).replace("\n", " ") for t, s in last.items()}
        return f"acknowledged {acknowledged}, index status {shown}"

    try:
        await until(settled, "context_svc to index every turn", 60, rig)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {report()}") from None
    indexed = {t: s.indexed_turns if s is not None else None for t, s in last.items()}
    assert indexed == {t: ledger.count(t) for t in TENANTS}, (
        f"context_svc is caught up with the feed, but its index does not hold every turn: "
        f"{report()} {rig.logs()}"
    )

    # Turns acknowledged just before context_svc was killed (it was behind: they were
    # indexed after its restart), and a few more.
    rng = random.Random(7)
    in_order = list(ledger.acked.items())
    for tenant in TENANTS:
        metadata = bearer(jwt_key, tenant, "context.read")
        mine = [(i, a) for i, a in in_order[: ledger.at_context_kill] if a.tenant == tenant]
        sample = mine[-3:] + rng.sample([(i, a) for i, a in in_order if a.tenant == tenant], 4)
        for event_id, acked in sample:
            index = conversations[tenant].index(acked.conversation_id)
            reply = await context.Enrich(
                cpb.EnrichRequest(
                    text=acked.token,
                    user_id=user_of(tenant, index),
                    conversation_id=acked.conversation_id,
                    max_items=10,
                    sources=[cpb.SOURCE_KIND_MEMORY],
                ),
                metadata=metadata,
                timeout=10,
            )
            found = [item.event_id for item in reply.items]
            assert event_id in found, (
                f"Enrich({acked.token!r}) did not find event {event_id}: {found} {rig.logs()}"
            )
