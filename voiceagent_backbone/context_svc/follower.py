"""Follows state_svc's change feed into the memory index, from a persisted cursor.

Every tenant's feed is read (`all_tenants`, scope state.feed); each response's changes are
applied with the cursor of its last change in one store transaction, so a restart resumes
exactly after the last applied change. Connection failures are retried with backoff from
that cursor; the index keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket

import grpc

from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.context_svc import metrics, wire
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.domain import ContextDomain
from voiceagent_backbone.context_svc.shared_vectors import SharedVectors
from voiceagent_backbone.servicekit.auth import service_token
from voiceagent_backbone.servicekit.client import TokenProvider, create_channel

log = logging.getLogger(__name__)

# What context_svc does in state_svc: read every tenant's feed (state.read, state.feed),
# share vectors between replicas (state.index: shared_vectors.py), and keep knowledge
# documents and facts (state.knowledge: records.py).
STATE_SCOPES = ("state.read", "state.feed", "state.index", "state.knowledge")


def token_provider(settings: ContextSettings) -> TokenProvider | None:
    if settings.state_token is not None:
        static = settings.state_token.get_secret_value()
        return lambda: static
    return service_token(
        settings,
        settings.state_token_file,
        tenant="context_svc",
        scopes=STATE_SCOPES,
        subject="context_svc",
    )


class FeedFollower:
    def __init__(self, settings: ContextSettings, domain: ContextDomain) -> None:
        self.settings = settings
        self.domain = domain
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feed-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None

    async def _run(self) -> None:
        token = token_provider(self.settings)
        if token is None:
            log.error(
                "no token for state_svc's feed: set CONTEXT_STATE_TOKEN(_FILE) or an HS "
                "JWT key; memory will not be indexed"
            )
        # Without BDP probing the flow-control window stays at 64 KiB, so state_svc cannot
        # run far ahead of what is applied: the backlog in its responses stays a true lag.
        self._channel = create_channel(
            self.settings.state_target,
            token=token,
            retry=False,
            max_message_bytes=self.settings.max_message_bytes,
            extra_options=[("grpc.http2.bdp_probe", 0)],
        )
        stub = state_pb2_grpc.StateServiceStub(self._channel)  # type: ignore[no-untyped-call]
        embedder = self.domain.embedder
        index = str(self.settings.index_path.resolve()).encode()
        holder = f"{socket.gethostname()[:200]}:{hashlib.sha256(index).hexdigest()[:16]}"
        self.domain.shared_vectors = SharedVectors(stub, embedder.name, embedder.dim, holder)
        delay = 0.2
        while True:
            applied = self.domain.progress.applied_changes
            try:
                await self._follow(stub)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                metrics.FEED_ERRORS.inc()
                self.domain.progress.failed(exc.code().name)
                log.warning(
                    "feed interrupted; retrying",
                    extra={"code": exc.code().name, "details": exc.details(), "retry_in_s": delay},
                )
            except Exception:
                metrics.FEED_ERRORS.inc()
                self.domain.progress.failed("APPLY_FAILED")
                log.exception("applying the feed failed; retrying", extra={"retry_in_s": delay})
            # The lag keeps growing while the feed fails: the gauge says so too.
            metrics.FEED_LAG_SECONDS.set(self.domain.status().lag_seconds)
            if self.domain.progress.applied_changes > applied:
                delay = 0.2  # it made progress before failing: a fresh failure
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.feed_retry_max_s)

    async def _follow(self, stub: state_pb2_grpc.StateServiceStub) -> None:
        progress = self.domain.progress
        call = stub.Watch(
            pb.WatchRequest(
                cursor=progress.cursor, all_tenants=True, max_batch=self.settings.feed_batch
            )
        )
        async for response in call:
            progress.answered()
            if response.changes:
                first = response.changes[0]
                if first.HasField("event") and progress.pending_since_us is None:
                    progress.pending_since_us = first.event.server_time.ToMicroseconds()
                items = [i for i in (wire.feed_item(c) for c in response.changes) if i is not None]
                await self.domain.apply_feed(items, response.changes[-1].cursor)
                progress.applied_changes += len(response.changes)
                last = response.changes[-1]
                if response.backlog > 0 and last.HasField("event"):
                    # Still behind: the oldest pending change is at most this old.
                    progress.pending_since_us = last.event.server_time.ToMicroseconds()
            progress.backlog = response.backlog
            if response.backlog == 0:
                progress.pending_since_us = None
                progress.caught_up()
            metrics.FEED_LAG_EVENTS.set(progress.backlog)
            status = self.domain.status()
            metrics.FEED_LAG_SECONDS.set(status.lag_seconds)
