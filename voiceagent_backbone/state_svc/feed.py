"""The change feed of one replica: one reader of the database, any number of Watch streams.

Before, every Watch stream polled the database itself: 200 streams were 200 pollers, and
appends and health checks waited behind them. Now the replica's `FeedHub` alone follows the
global feed (every tenant), on each local write at once and every `feed_poll_interval_s`
for writes of other replicas, and keeps a window of the most recent changes in memory
(bounded by `feed_window_bytes`). A stream whose cursor lies in the window is served from
it, filtered by its tenant, without touching the database. A stream further behind reads
the database itself, in batches, at most `feed_catch_up_readers` of them at a time, until
it reaches the window.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import math
import time

from voiceagent_backbone.state_svc import metrics
from voiceagent_backbone.state_svc.model import Change
from voiceagent_backbone.state_svc.store.base import ConversationStore, StoreError

log = logging.getLogger(__name__)

_READ_BATCH = 500
# How often the hub reads the feed even though the head estimate shows nothing new.
EXACT_POLL_S = 10.0


class FeedSignal:
    """Wakes whoever waits on the feed as soon as something is written in this replica."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)


def _size(change: Change) -> int:
    """A change's memory in the window, roughly: its texts and a fixed overhead."""
    event = change.event
    if event is None:
        return 256
    return 512 + len(event.text) + len(str(event.payload)) + len(str(event.detail))


class FeedHub:
    def __init__(
        self,
        store: ConversationStore,
        signal: FeedSignal,
        *,
        poll_interval_s: float,
        window_bytes: int,
        catch_up_readers: int,
    ) -> None:
        self._store = store
        self._signal = signal
        self._poll_interval_s = poll_interval_s
        self._window_bytes = window_bytes
        self._catch_up = asyncio.Semaphore(catch_up_readers)
        self._changes: collections.deque[Change] = collections.deque()
        self._seqs: collections.deque[int] = collections.deque()
        self._bytes = 0
        # The window covers feed positions (start, head].
        self._start = 0
        self._head = 0
        self._advanced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._read_at = -math.inf

    @property
    def head(self) -> int:
        return self._head

    async def start(self) -> None:
        """Begin at the current end of the feed (idempotent)."""
        if self._task is not None:
            return
        head = await self._store.feed_head_estimate()
        if self._task is not None:  # another caller started it meanwhile
            return
        self._start = self._head = head
        self._task = asyncio.create_task(self._run(), name="FeedHub")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        """Read up to the end of the feed now (a new stream with stop_at_end must see every
        write acknowledged before it started, also on other replicas)."""
        async with self._refresh_lock:
            while await self._read_more():
                pass

    async def _poll(self) -> None:
        """Read what is new, if the store's estimate of the head says there is any.

        The estimate is cheap (the announced head, and what this replica wrote), where
        reading the feed is not: on FerretDB v1 (SQLite) every query of the events, even one
        by _id, scans the whole collection, so a caught-up hub that read every poll spent
        its replica's share of the database on scans that found nothing. A write stored and
        never announced (its writer died in between) is found by the read every
        EXACT_POLL_S, or when a later write's announcement passes it.
        """
        now = time.monotonic()
        recently = now - self._read_at < EXACT_POLL_S
        if recently and await self._store.feed_head_estimate() <= self._head:
            return
        self._read_at = now
        await self.refresh()

    async def _run(self) -> None:
        while True:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                log.warning("feed read failed; retrying", extra={"error": str(exc)})
            except Exception:
                log.exception("feed read failed; retrying")
            await self._signal.wait(self._poll_interval_s)

    async def _read_more(self) -> bool:
        """One batch from the database into the window; True if it was full."""
        async with metrics.timed("read_feed", self._store.name):
            changes = await self._store.read_feed(self._head, _READ_BATCH, None)
        if not changes:
            return False
        for change in changes:
            self._changes.append(change)
            self._seqs.append(change.feed_seq)
            self._bytes += _size(change)
        self._head = changes[-1].feed_seq
        while self._bytes > self._window_bytes and len(self._changes) > 1:
            dropped = self._changes.popleft()
            self._seqs.popleft()
            self._bytes -= _size(dropped)
            self._start = dropped.feed_seq
        metrics.FEED_WINDOW_CHANGES.set(len(self._changes))
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()
        return len(changes) == _READ_BATCH

    async def wait_beyond(self, cursor: int, timeout_s: float) -> None:
        """Until the window's head passes `cursor` (or the timeout)."""
        while self._head <= cursor:
            event = self._advanced
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except TimeoutError:
                return

    async def read(
        self, cursor: int, limit: int, tenant_id: str | None
    ) -> tuple[list[Change], int]:
        """Up to `limit` changes after `cursor` (the tenant's, or all), and the position
        read up to: from the window when it covers the cursor, else from the database."""
        start = self._start
        if cursor >= start:
            return self._from_window(cursor, limit, tenant_id)
        metrics.FEED_CATCH_UP_READS.inc()
        async with self._catch_up, metrics.timed("read_feed_catch_up", self._store.name):
            changes = await self._store.read_feed(cursor, limit, tenant_id)
        position = changes[-1].feed_seq if changes else cursor
        if len(changes) < limit:
            # The read found every change of this stream up to the end of the feed, which
            # lies at or beyond where the window started then: go on from the window.
            position = max(position, start)
        return [c for c in changes if _tenant(c) is not None], position

    def _from_window(
        self, cursor: int, limit: int, tenant_id: str | None
    ) -> tuple[list[Change], int]:
        first = bisect.bisect_right(self._seqs, cursor)
        out: list[Change] = []
        position = cursor
        for i in range(first, len(self._changes)):
            change = self._changes[i]
            position = change.feed_seq
            owner = _tenant(change)  # None: a tombstone, which only moves the cursor on
            if owner is not None and tenant_id in (None, owner):
                out.append(change)
                if len(out) >= limit:
                    break
        else:
            position = max(position, self._head)
        return out, position


def _tenant(change: Change) -> str | None:
    """The change's tenant; None for a tombstone (it only moves cursors on)."""
    if change.event is not None:
        return change.event.tenant_id
    if change.deletion is not None:
        return change.deletion.tenant_id
    if change.knowledge is not None:
        return change.knowledge.tenant_id
    return None
