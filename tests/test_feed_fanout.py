"""The replica's feed hub: many Watch streams cost the database one reader, each stream gets
exactly its tenant's changes in order, a stream far behind catches up from the database,
and a consumer that stops reading is cut off instead of holding memory for ever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.agent import sample
from tests.support.state import StateHandle, event, new_conversation, running_state, state_settings
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc

STREAMS = 40
POLL_S = 0.05


def reads() -> float:
    return sample("state_store_operation_seconds_count", operation="read_feed", backend="sqlite")


@pytest.fixture
async def state(tmp_path: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    settings = state_settings(
        "sqlite",
        tmp_path,
        jwt_key,
        None,
        feed_poll_interval_s=POLL_S,
        feed_window_bytes=256 * 1024,
        watch_send_timeout_s=1.0,
        watch_heartbeat_s=0.3,
    )
    async with running_state(settings, jwt_key) as handle:
        yield handle


async def collect(
    state: StateHandle, tenant: str, all_tenants: bool, want: int, cursor: str = ""
) -> list[tuple[str, int]]:
    """(conversation, seq) of the first `want` events a live stream delivers."""
    scopes = "state.read state.feed" if all_tenants else "state.read"
    call = state.stub().Watch(
        pb.WatchRequest(all_tenants=all_tenants, cursor=cursor),
        metadata=state.metadata(tenant, scopes),
    )
    got: list[tuple[str, int]] = []
    async for reply in call:
        got.extend((c.event.conversation_id, c.event.seq) for c in reply.changes)
        if len(got) >= want:
            call.cancel()
            break
    return got


async def append(state: StateHandle, tenant: str, cid: str, n: int, text: str = "x") -> None:
    for start in range(0, n, 10):
        await state.stub().AppendEvents(
            pb.AppendEventsRequest(
                conversation_id=cid,
                events=[event(text=text) for _ in range(min(10, n - start))],
            ),
            metadata=state.metadata(tenant),
        )


async def test_many_streams_one_reader_each_gets_its_events_in_order(state: StateHandle) -> None:
    a = (await new_conversation(state, "tenant-a")).conversation_id
    b = (await new_conversation(state, "tenant-b")).conversation_id
    streams = [
        asyncio.create_task(collect(state, "tenant-a", i % 2 == 1, 100 if i % 2 == 0 else 150))
        for i in range(STREAMS)
    ]
    await asyncio.sleep(0.5)  # every stream is open and caught up
    before, idle_for = reads(), 1.0
    await asyncio.sleep(idle_for)
    idle_reads = reads() - before
    # One reader polls; 40 streams polling on their own would be 40 times as many.
    assert idle_reads <= idle_for / POLL_S * 2, idle_reads
    await append(state, "tenant-a", a, 100)
    await append(state, "tenant-b", b, 50)
    results = await asyncio.wait_for(asyncio.gather(*streams), 30)
    # Streams the consumers cancelled are gone on the server too.
    for _ in range(50):
        if sample("state_watch_streams") == 0:
            break
        await asyncio.sleep(0.05)
    assert sample("state_watch_streams") == 0
    for i, got in enumerate(results):
        mine = [(c, s) for c, s in got if c == a]
        assert mine == [(a, s) for s in range(1, 101)], i
        if i % 2 == 0:
            assert len(got) == 100, i
            assert all(c == a for c, _ in got), i  # its tenant only
        else:
            assert sorted(s for c, s in got if c == b) == list(range(1, 51)), i


async def test_a_stream_far_behind_catches_up_from_the_database(state: StateHandle) -> None:
    """The window holds 256 KiB: 200 events of 2 KiB push the start far past the first, so
    a stream from the beginning reads the database, then joins the window."""
    cid = (await new_conversation(state, "tenant-c")).conversation_id
    live = asyncio.create_task(collect(state, "tenant-c", False, 1))
    await asyncio.sleep(0.3)  # the hub runs
    await append(state, "tenant-c", cid, 200, text="y" * 2000)
    await live
    await asyncio.sleep(0.3)
    catch_ups = sample("state_feed_catch_up_reads_total")
    got = await asyncio.wait_for(collect(state, "tenant-c", False, 200), 30)
    assert [s for _, s in got] == list(range(1, 201))
    assert sample("state_feed_catch_up_reads_total") > catch_ups


async def test_a_consumer_that_stops_reading_is_cut_off(state: StateHandle) -> None:
    cid = (await new_conversation(state, "tenant-d")).conversation_id
    cut = sample("state_watch_cut_off_total")
    # A small receive window: the server's writes block as soon as the client stops reading.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{state.port}", options=[("grpc.http2.bdp_probe", 0)]
    ) as channel:
        stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.Watch(pb.WatchRequest(), metadata=state.metadata("tenant-d"))
        await call.read()  # open, then never read again
        await append(state, "tenant-d", cid, 120, text="z" * 30_000)

        async def cut_off() -> bool:
            return sample("state_watch_cut_off_total") > cut

        for _ in range(100):
            if await cut_off():
                break
            await asyncio.sleep(0.1)
        assert await cut_off(), "the stalled stream was not cut off"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await drain(call)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "resume from the last cursor" in (caught.value.details() or "")
    await asyncio.sleep(0.2)
    assert sample("state_watch_streams") == 0


async def drain(call: Any) -> None:
    """Read a stream to its end (its error raises)."""
    while await call.read() is not grpc.aio.EOF:  # type: ignore[attr-defined]
        pass
