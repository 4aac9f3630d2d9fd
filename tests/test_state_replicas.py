"""Several state_svc replicas on one MongoDB-wire database: concurrency and failover.

Replicas are real processes; clients are real gRPC clients that retry like the agent's
BackendClient does (same event ids, so retries are idempotent).
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.ferretdb import MongoTarget
from tests.support.processes import ChildProcess, free_port
from tests.support.state import event
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit import auth
from voiceagent_backbone.servicekit.client import create_channel

pytestmark = pytest.mark.ferretdb

TENANT = "tenant-replicas"


def start_replica(
    name: str, mongo: MongoTarget, database: str, jwt_key: str, log_dir: Path
) -> tuple[ChildProcess, int]:
    port = free_port()
    env = {
        "STATE_PORT": str(port),
        "STATE_METRICS_PORT": "-1",
        "STATE_AUTH_JWT_KEY": jwt_key,
        "STATE_MONGODB_URI": mongo.uri,
        "STATE_MONGODB_DATABASE": database,
        "STATE_MONGODB_WRITE_CONCERN": "1" if mongo.kind == "ferretdb" else "majority",
        "STATE_GRACE_PERIOD_S": "2",
        "STATE_FEED_POLL_INTERVAL_S": "0.05",
    }
    proc = ChildProcess(
        [sys.executable, "-m", "voiceagent_backbone.state_svc"], log_dir / f"{name}.log", env
    )
    proc.wait_for_port(port, timeout_s=30, what=name)
    return proc, port


@pytest.fixture
def replicas(
    mongo: MongoTarget, jwt_key: str, log_dir: Path
) -> Iterator[list[tuple[ChildProcess, int]]]:
    database = f"{mongo.database}_replicas_{uuid.uuid4().hex[:6]}"
    started = [start_replica(f"replica{i}", mongo, database, jwt_key, log_dir) for i in range(2)]
    try:
        yield started
    finally:
        for proc, _ in started:
            proc.stop()


def token(jwt_key: str) -> str:
    scopes = ["state.read", "state.write", "state.feed"]
    return auth.mint_token(jwt_key, tenant=TENANT, scopes=scopes, ttl_s=3600)


def stub_for(channel: grpc.aio.Channel) -> state_pb2_grpc.StateServiceStub:
    return state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]


async def append_with_retries(
    stubs: list[state_pb2_grpc.StateServiceStub],
    request: pb.AppendEventsRequest,
    rng: random.Random,
) -> tuple[pb.AppendEventsResponse, bool]:
    """Send to a random replica; on failure, the same batch again to any replica.
    Returns the reply and whether an earlier attempt failed (it may have stored events)."""
    last: Exception | None = None
    for attempt in range(40):
        try:
            reply: pb.AppendEventsResponse = await rng.choice(stubs).AppendEvents(
                request, timeout=10
            )
            return reply, attempt > 0
        except grpc.aio.AioRpcError as exc:
            last = exc
            FAILURES.append(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5))
    raise AssertionError(f"append kept failing: {last}")


FAILURES: list[str] = []


async def run_writers(
    ports: list[int],
    jwt_key: str,
    conversations: list[str],
    total_events: int,
    writers: int,
    retry_probability: float,
    on_progress: asyncio.Event | None = None,
) -> dict[str, dict[str, int]]:
    """Appends `total_events` over the conversations; returns conversation -> id -> seq."""
    tok = token(jwt_key)
    channels = [create_channel(f"127.0.0.1:{p}", token=lambda: tok) for p in ports]
    stubs = [stub_for(c) for c in channels]
    acknowledged: dict[str, dict[str, int]] = defaultdict(dict)
    per_writer = total_events // writers
    written = 0

    async def writer(index: int) -> None:
        nonlocal written
        rng = random.Random(index)
        conversation_id = conversations[index % len(conversations)]
        remaining = per_writer
        sent: list[pb.AppendEventsRequest] = []
        while remaining:
            size = min(remaining, rng.randint(1, 25))
            request = pb.AppendEventsRequest(
                conversation_id=conversation_id,
                events=[event(text=f"w{index}-{per_writer - remaining + i}") for i in range(size)],
            )
            reply, retried = await append_with_retries(stubs, request, rng)
            for e, r in zip(request.events, reply.results, strict=True):
                assert retried or not r.duplicate, FAILURES[-5:]
                acknowledged[conversation_id][e.event_id] = r.seq
            sent.append(request)
            remaining -= size
            written += size
            if on_progress is not None and written >= total_events // 3:
                on_progress.set()
            # Injected retries: an earlier batch again, as after a lost response.
            if rng.random() < retry_probability:
                again = rng.choice(sent)
                retry, _ = await append_with_retries(stubs, again, rng)
                for e, r in zip(again.events, retry.results, strict=True):
                    assert r.duplicate
                    assert r.seq == acknowledged[conversation_id][e.event_id]

    try:
        await asyncio.gather(*(writer(i) for i in range(writers)))
    finally:
        for channel in channels:
            await channel.close(None)
    return acknowledged


async def create_conversations(port: int, jwt_key: str, count: int) -> list[str]:
    tok = token(jwt_key)
    async with create_channel(f"127.0.0.1:{port}", token=lambda: tok) as channel:
        stub = stub_for(channel)
        ids = []
        for i in range(count):
            reply = await stub.CreateConversation(
                pb.CreateConversationRequest(room_name=f"room-{i}", user_ids=[f"user-{i}"])
            )
            ids.append(reply.conversation.conversation_id)
        return ids


async def check_store(
    port: int, jwt_key: str, acknowledged: dict[str, dict[str, int]], expected_total: int
) -> None:
    """Every conversation gapless from 1, no duplicates; the feed holds exactly these events,
    each conversation in order."""
    tok = token(jwt_key)
    async with create_channel(f"127.0.0.1:{port}", token=lambda: tok) as channel:
        stub = stub_for(channel)
        stored_total = 0
        for conversation_id, acked in acknowledged.items():
            seqs: list[int] = []
            ids: list[str] = []
            page = ""
            while True:
                reply = await stub.GetHistory(
                    pb.GetHistoryRequest(
                        conversation_id=conversation_id, page_size=1000, page_token=page
                    )
                )
                seqs += [e.seq for e in reply.events]
                ids += [e.event_id for e in reply.events]
                page = reply.next_page_token
                if not page:
                    break
            assert seqs == list(range(1, len(seqs) + 1)), "sequence has a gap or disorder"
            assert len(set(ids)) == len(ids), "an event is stored twice"
            assert set(ids) == set(acked), "stored events differ from acknowledged ones"
            assert {i: s for i, s in zip(ids, seqs, strict=True)} == acked
            stored_total += len(ids)
        assert stored_total == expected_total

        feed_ids: list[str] = []
        last_seq: dict[str, int] = defaultdict(int)
        async for response in stub.Watch(
            pb.WatchRequest(all_tenants=True, stop_at_end=True, max_batch=1000)
        ):
            for change in response.changes:
                e = change.event
                assert e.seq == last_seq[e.conversation_id] + 1, "feed out of order"
                last_seq[e.conversation_id] = e.seq
                feed_ids.append(e.event_id)
        assert len(feed_ids) == expected_total
        assert len(set(feed_ids)) == expected_total
        assert set(feed_ids) == {i for acked in acknowledged.values() for i in acked}


@pytest.mark.timeout(1200)  # FerretDB answers range queries by scanning: minutes, not seconds
async def test_two_replicas_twenty_writers_ten_thousand_events(
    replicas: list[tuple[ChildProcess, int]], jwt_key: str
) -> None:
    ports = [port for _, port in replicas]
    conversations = await create_conversations(ports[0], jwt_key, 10)

    consumer_ids: list[str] = []
    tok = token(jwt_key)

    async def follow_feed() -> None:
        # A live consumer on the other replica, from the start, while writes happen. Like
        # any feed consumer it resumes from its last cursor when the stream breaks.
        cursor = ""
        async with create_channel(f"127.0.0.1:{ports[1]}", token=lambda: tok) as channel:
            for _ in range(50):
                try:
                    async for response in stub_for(channel).Watch(
                        pb.WatchRequest(all_tenants=True, max_batch=500, cursor=cursor)
                    ):
                        consumer_ids.extend(c.event.event_id for c in response.changes)
                        if response.changes:
                            cursor = response.changes[-1].cursor
                        if len(consumer_ids) >= 10_000:
                            return
                except grpc.aio.AioRpcError as exc:
                    FAILURES.append(f"watch: {exc.code().name}")
                    await asyncio.sleep(0.5)

    consumer = asyncio.create_task(follow_feed())
    acknowledged = await run_writers(ports, jwt_key, conversations, 10_000, 20, 0.25)
    await asyncio.wait_for(consumer, 300)
    await check_store(ports[0], jwt_key, acknowledged, 10_000)
    assert len(consumer_ids) == 10_000
    assert set(consumer_ids) == {i for acked in acknowledged.values() for i in acked}


async def test_kill_9_of_a_replica_loses_and_duplicates_nothing(
    replicas: list[tuple[ChildProcess, int]], jwt_key: str
) -> None:
    ports = [port for _, port in replicas]
    conversations = await create_conversations(ports[1], jwt_key, 4)
    progress = asyncio.Event()

    async def killer() -> None:
        await progress.wait()
        replicas[0][0].signal(signal.SIGKILL)

    kill = asyncio.create_task(killer())
    acknowledged = await run_writers(ports, jwt_key, conversations, 3_000, 8, 0.1, progress)
    await kill
    assert not replicas[0][0].alive()
    await check_store(ports[1], jwt_key, acknowledged, 3_000)
