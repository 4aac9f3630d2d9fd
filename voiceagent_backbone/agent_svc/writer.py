"""DurableWriter: every write of the agent, stored in state_svc without ever blocking the voice.

A handler calls `append_event` and friends, which spool the write and put it on an
in-process queue in a few microseconds; one background sender sends them in order, batching
events of the same conversation, retrying until state_svc acknowledges. Every write is
idempotent (events by their UUIDv7 id, conversations by their id, snapshots and profiles by
being whole-state puts), so a retry never duplicates anything. A spool left by a dead
process in the same folder is replayed first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.message import Message

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.agent_svc.spool import (
    EventSpool,
    OrphanSpool,
    SpoolRecord,
    claim_orphans,
    encode_record,
)
from voiceagent_backbone.api.state.v1 import state_pb2, state_pb2_grpc

log = logging.getLogger(__name__)

# Codes that mean "this write can never succeed": it goes to the rejected file instead of
# blocking every later write. Everything else (UNAVAILABLE, DEADLINE_EXCEEDED, even
# UNAUTHENTICATED from a misconfigured key) is retried: the data is kept until it lands.
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}

# op name -> (request type, state_svc method name)
_OPS: dict[str, type[Message]] = {
    "event": state_pb2.Event,
    "create_conversation": state_pb2.CreateConversationRequest,
    "end_conversation": state_pb2.EndConversationRequest,
    "save_snapshot": state_pb2.SaveSnapshotRequest,
    "upsert_user": state_pb2.UpsertUserRequest,
}


@dataclass
class _Write:
    op: str
    conversation_id: str
    message: Message
    spool: EventSpool | OrphanSpool
    queued_at: float = field(default_factory=time.monotonic)


class DurableWriter:
    def __init__(
        self,
        settings: AgentSettings,
        state: state_pb2_grpc.StateServiceStub,
        spool_dir: Path,
    ) -> None:
        self._settings = settings
        self._spool_dir = spool_dir
        self.state = state
        self._queue: collections.deque[_Write] = collections.deque()
        # Writes spooled while the memory queue was full: reloaded from the spool file.
        self._overflow_from: int | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._enqueued = 0
        self._counted = 0
        self._sender: asyncio.Task[None] | None = None
        self._spool: EventSpool | None = None
        self._orphans: list[OrphanSpool] = []
        # Why the last send failed while writes wait for a retry (None once one is stored),
        # and how many writes state_svc refused for good: what a terminal tells its user.
        self.last_failure: grpc.aio.AioRpcError | None = None
        self.rejected = 0

    async def start(self) -> None:
        """Open this process's spool, claim spools of dead processes, start the sender."""
        self._spool = EventSpool(self._spool_dir)
        self._orphans = await asyncio.to_thread(claim_orphans, self._spool_dir)
        for orphan in self._orphans:
            for record in orphan.pending_records:
                self._queue.append(self._from_record(record, orphan))
            metrics.SPOOL_PENDING.inc(len(orphan.pending_records))
        if self._queue:
            self._idle.clear()
            self._wakeup.set()
        self._sender = asyncio.create_task(self._send_loop(), name="BackendClient.sender")

    @property
    def pending(self) -> int:
        """Writes not yet acknowledged (queued in memory or only in the spool)."""
        own = self._spool.pending if self._spool else 0
        return own + sum(o.pending for o in self._orphans)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every write so far is acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def aclose(self, timeout_s: float | None = None) -> bool:
        """Flush (bounded), stop the sender. Unsent writes stay in the spool file for the
        next process."""
        flushed = await self.flush(timeout_s or self._settings.flush_timeout_s)
        self._closing = True
        self._publish_counts()
        self._wakeup.set()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._spool is not None:
            self._spool.close(remove=self._spool.pending == 0)
            metrics.SPOOL_PENDING.dec(self._spool.pending)
        if not flushed:
            log.warning(
                "closing with writes not yet stored; they stay in the spool for the next process",
                extra={"pending": self.pending},
            )
        return flushed

    # -- writes: enqueue and return ---------------------------------------------------

    def append_event(self, conversation_id: str, event: state_pb2.Event) -> None:
        self._enqueue("event", conversation_id, event)

    def create_conversation(self, request: state_pb2.CreateConversationRequest) -> None:
        self._enqueue("create_conversation", request.conversation_id, request)

    def end_conversation(self, conversation_id: str, reason: str) -> None:
        request = state_pb2.EndConversationRequest(conversation_id=conversation_id, reason=reason)
        self._enqueue("end_conversation", conversation_id, request)

    def save_snapshot(self, conversation_id: str, snapshot: state_pb2.Snapshot) -> None:
        request = state_pb2.SaveSnapshotRequest(conversation_id=conversation_id, snapshot=snapshot)
        self._enqueue("save_snapshot", conversation_id, request)

    def upsert_user(self, profile: state_pb2.UserProfile) -> None:
        self._enqueue("upsert_user", "", state_pb2.UpsertUserRequest(user=profile))

    def _enqueue(self, op: str, conversation_id: str, message: Message) -> None:
        spool = self._spool
        if spool is None or self._closing:
            raise RuntimeError("BackendClient is not running")
        spool.append(encode_record(op, conversation_id, message.SerializeToString()))
        # Counted by the sender (_publish_counts): metric updates are file writes in
        # multiprocess mode, too slow for a handler.
        self._enqueued += 1
        if self._overflow_from is None and len(self._queue) < self._settings.queue_max_events:
            self._queue.append(_Write(op, conversation_id, message, spool))
        elif self._overflow_from is None:
            # Memory is bounded; the spool is not. The sender reloads these from the file.
            self._overflow_from = spool.written - 1
            log.warning("write queue full; further writes wait in the spool file only")
        self._idle.clear()
        self._wakeup.set()

    @staticmethod
    def _from_record(record: SpoolRecord, spool: EventSpool | OrphanSpool) -> _Write:
        message = _OPS[record.op]()
        message.ParseFromString(record.message)
        return _Write(record.op, record.conversation_id, message, spool)

    # -- the sender ---------------------------------------------------------------------

    async def _refill_from_spool(self) -> None:
        """Load writes that only went to the spool file (the memory queue was full)."""
        own, start = self._spool, self._overflow_from
        if start is None or own is None:
            return
        records = await asyncio.to_thread(own.read_from, start)
        take = records[: self._settings.queue_max_events]
        self._queue.extend(self._from_record(r, own) for r in take)
        # Decided here on the loop, not in the reading thread: writes spooled while the
        # file was being read are picked up by the next refill.
        following = start + len(take)
        self._overflow_from = None if following >= own.written else following

    def _next_batch(self) -> list[_Write]:
        first = self._queue[0]
        batch = [first]
        if first.op != "event":
            return batch
        for write in list(self._queue)[1 : self._settings.batch_max_events]:
            if (
                write.op != "event"
                or write.conversation_id != first.conversation_id
                or write.spool is not first.spool
            ):
                break
            batch.append(write)
        return batch

    def _publish_counts(self) -> None:
        new = self._enqueued - self._counted
        if new:
            self._counted = self._enqueued
            metrics.EVENTS_QUEUED.inc(new)
            metrics.EVENTS_SPOOLED.inc(new)
            metrics.SPOOL_PENDING.inc(new)

    async def _send_loop(self) -> None:
        backoff = 0.05
        while True:
            self._publish_counts()
            if not self._queue:
                await self._refill_from_spool()
            if not self._queue:
                if self.pending == 0:
                    self._idle.set()
                    self._finish_orphans()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            first = self._queue[0]
            linger = self._settings.batch_linger_ms / 1000
            waited = time.monotonic() - first.queued_at
            if (
                first.op == "event"
                and len(self._queue) < self._settings.batch_max_events
                and waited < linger
                and not self._closing
            ):
                await asyncio.sleep(linger - waited)
            batch = self._next_batch()
            try:
                if self._settings.spool_fsync:
                    await asyncio.to_thread(batch[0].spool.sync)
                await self._send(batch)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _PERMANENT:
                    await self._reject(batch, exc)
                    continue
                self.last_failure = exc
                metrics.BACKEND_ERRORS.labels(_operation(batch[0].op)).inc()
                log.warning(
                    "state_svc write failed; retrying (writes wait in the spool)",
                    extra={"code": exc.code().name, "pending": self.pending, "retry_s": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._settings.send_retry_max_s)
                continue
            backoff = 0.05
            self.last_failure = None
            self._acknowledge(batch)

    def _acknowledge(self, batch: list[_Write]) -> None:
        self._publish_counts()
        for _ in batch:
            self._queue.popleft()
        spool = batch[0].spool
        spool.ack(len(batch))
        if isinstance(spool, OrphanSpool):
            metrics.EVENTS_REPLAYED.inc(len(batch))
        metrics.EVENTS_SENT.inc(len(batch))
        metrics.SPOOL_PENDING.dec(len(batch))

    async def _send(self, batch: list[_Write]) -> None:
        timeout = self._settings.send_timeout_s
        first = batch[0]
        if first.op == "event":
            request = state_pb2.AppendEventsRequest(
                conversation_id=first.conversation_id,
                events=[w.message for w in batch],  # type: ignore[misc]
            )
            await self.state.AppendEvents(request, timeout=timeout)
        elif first.op == "create_conversation":
            await self.state.CreateConversation(first.message, timeout=timeout)
        elif first.op == "end_conversation":
            await self.state.EndConversation(first.message, timeout=timeout)
        elif first.op == "save_snapshot":
            await self.state.SaveSnapshot(first.message, timeout=timeout)
        elif first.op == "upsert_user":
            await self.state.UpsertUser(first.message, timeout=timeout)
        else:  # pragma: no cover - _OPS is closed
            raise AssertionError(first.op)

    async def _reject(self, batch: list[_Write], exc: grpc.aio.AioRpcError) -> None:
        """A write state_svc can never accept. A batch is retried one by one so that only
        the bad write is set aside; it is kept in `rejected.log` with the reason."""
        if len(batch) > 1:
            for write in batch:
                try:
                    await self._send([write])
                except grpc.aio.AioRpcError as single_exc:
                    if single_exc.code() not in _PERMANENT:
                        return  # transient: the main loop retries from this write on
                    await self._reject([write], single_exc)
                    continue
                self._acknowledge([write])
            return
        write = batch[0]
        line = encode_record(write.op, write.conversation_id, write.message.SerializeToString())
        rejected = self._spool_dir / "rejected.log"
        reason = f"# {exc.code().name}: {exc.details()}\n".encode()
        await asyncio.to_thread(_append_file, rejected, reason + line)
        self.rejected += 1
        metrics.EVENTS_REJECTED.inc()
        metrics.BACKEND_ERRORS.labels(_operation(write.op)).inc()
        log.error(
            "state_svc rejected a write; kept in the spool folder's rejected.log",
            extra={"op": write.op, "code": exc.code().name, "details": exc.details()},
        )
        self._queue.popleft()
        write.spool.ack(1)
        metrics.SPOOL_PENDING.dec()

    def _finish_orphans(self) -> None:
        for orphan in self._orphans:
            log.info(
                "replayed a spool left by an earlier process", extra={"file": orphan.path.name}
            )
            orphan.close(remove=True)
        self._orphans = []


def _operation(op: str) -> str:
    """The state_svc method a spooled write goes out as (the metrics' operation label)."""
    return "append_events" if op == "event" else op


def _append_file(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)
