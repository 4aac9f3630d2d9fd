"""Replies bounded by bytes, not by counts, and a feed lag that tells the truth.

160 events of 32,000 bytes each (every one within STATE_MAX_TEXT_BYTES) make 5 MB: more than
the 4 MiB message limit in any page of 1,000 or feed batch of 256. Every read still returns
all of them, over several replies that each fit a default gRPC client, and context_svc,
started behind all of them, indexes every one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.context import context_settings, eventually, running_context
from tests.support.processes import free_port
from tests.support.state import StateHandle, event, new_conversation, running_state, state_settings
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.state.v1 import state_pb2 as pb

EVENTS = 160
TEXT_BYTES = 32_000
LIMIT = 4 * 1024 * 1024


def big_text(i: int) -> str:
    words = f"event {i} talks about the weather in Porto and the dog Rex ".split()
    text = " ".join(words[j % len(words)] for j in range(TEXT_BYTES // 5))
    return text[:TEXT_BYTES]


@pytest.fixture(scope="module")
async def state(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[StateHandle]:
    settings = state_settings("sqlite", tmp_path_factory.mktemp("large"), jwt_key, None)
    async with running_state(settings, jwt_key) as handle:
        yield handle


@pytest.fixture(scope="module")
async def conversation_id(state: StateHandle) -> str:
    cid = (await new_conversation(state)).conversation_id
    events = [event(text=big_text(i)) for i in range(EVENTS)]
    for start in range(0, EVENTS, 40):  # a request has the same 4 MiB limit
        await state.stub().AppendEvents(
            pb.AppendEventsRequest(conversation_id=cid, events=events[start : start + 40]),
            metadata=state.metadata(),
        )
    return cid


@pytest.mark.parametrize("mode", ["page_size", "last_n"])
async def test_history_of_large_events_comes_in_pages_that_fit(
    state: StateHandle, conversation_id: str, mode: str
) -> None:
    request = pb.GetHistoryRequest(conversation_id=conversation_id)
    if mode == "page_size":
        request.page_size = 1000
    else:
        request.last_n = 1000
    seqs: list[int] = []
    replies = 0
    while True:
        reply = await state.stub().GetHistory(request, metadata=state.metadata())
        replies += 1
        assert reply.ByteSize() <= LIMIT
        seqs.extend(e.seq for e in reply.events)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    assert seqs == list(range(1, EVENTS + 1))
    assert replies >= 2


async def test_watch_splits_a_large_batch_into_replies_that_fit(
    state: StateHandle, conversation_id: str
) -> None:
    call = state.stub().Watch(
        pb.WatchRequest(max_batch=1000, stop_at_end=True), metadata=state.metadata()
    )
    seqs: list[int] = []
    replies: list[pb.WatchResponse] = []
    async for reply in call:
        assert reply.ByteSize() <= LIMIT
        replies.append(reply)
        seqs.extend(c.event.seq for c in reply.changes if c.event.conversation_id)
    assert seqs == list(range(1, EVENTS + 1))
    with_changes = [r for r in replies if r.changes]
    assert len(with_changes) >= 2
    # Only the reply that ends the batch says caught up; those before it count the rest.
    assert [r.caught_up for r in with_changes] == [False] * (len(with_changes) - 1) + [True]
    assert with_changes[0].backlog > 0


async def test_context_svc_far_behind_indexes_every_large_event(
    tmp_path: Path, jwt_key: str, state: StateHandle, conversation_id: str
) -> None:
    settings = context_settings(tmp_path, jwt_key, state.port, feed_batch=256)
    async with running_context(settings, jwt_key) as ctx:
        await eventually(
            lambda: ctx.domain.turns_by_tenant.get("tenant-a", 0) >= EVENTS,
            f"{EVENTS} large turns indexed",
            timeout_s=240,
        )
        status = await ctx.stub().GetIndexStatus(
            cpb.GetIndexStatusRequest(), metadata=ctx.metadata()
        )
        assert status.feed_connected
        assert status.feed_error == ""


async def test_index_status_shows_the_lag_of_a_feed_that_fails(
    tmp_path: Path, jwt_key: str
) -> None:
    """state_svc unreachable: the status says the feed is down and why, and the lag grows
    instead of reading 0."""
    settings = context_settings(tmp_path, jwt_key, free_port())
    async with running_context(settings, jwt_key) as ctx:

        async def status() -> cpb.GetIndexStatusResponse:
            reply: cpb.GetIndexStatusResponse = await ctx.stub().GetIndexStatus(
                cpb.GetIndexStatusRequest(), metadata=ctx.metadata()
            )
            return reply

        await eventually(lambda: ctx.domain.progress.error != "", "the first feed failure")
        first = await status()
        await asyncio.sleep(1.0)
        later = await status()
        # Enrich says so too: its answer may miss what was stored meanwhile.
        enriched = await ctx.stub().Enrich(
            cpb.EnrichRequest(user_id="user-1", text="anything"), metadata=ctx.metadata()
        )
    assert not first.feed_connected
    assert first.feed_error == "UNAVAILABLE"
    assert later.lag_seconds >= first.lag_seconds + 0.9
    assert enriched.memory_lag_seconds >= later.lag_seconds


async def test_without_auth_context_svc_follows_the_feed(tmp_path: Path, jwt_key: str) -> None:
    """AUTH_DISABLED on both services (a local setup): the feed needs no token then, and
    context_svc indexes what state_svc stores."""
    settings = state_settings(
        "sqlite", tmp_path, jwt_key, None, auth_jwt_key=None, auth_disabled=True
    )
    async with running_state(settings, jwt_key) as state:
        stub = state.stub()
        created = await stub.CreateConversation(
            pb.CreateConversationRequest(room_name="open", user_ids=["user-1"])
        )
        await stub.AppendEvents(
            pb.AppendEventsRequest(
                conversation_id=created.conversation.conversation_id,
                events=[event(text="Nobody needs a token here.")],
            )
        )
        context = context_settings(
            tmp_path, jwt_key, state.port, auth_jwt_key=None, auth_disabled=True
        )
        async with running_context(context, jwt_key) as ctx:
            await eventually(
                lambda: ctx.domain.turns_by_tenant.get("default", 0) == 1, "the turn indexed"
            )
