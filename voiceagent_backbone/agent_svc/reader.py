"""FailOpenReader: the agent's reads, each bounded by a deadline and a circuit breaker.

Reads on the turn path (enrichment) and at session start (history, snapshot) fail open: the
caller gets None and the call goes on without them; every failure is counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from voiceagent_backbone.agent_svc import metrics
from voiceagent_backbone.agent_svc.breaker import CircuitBreaker
from voiceagent_backbone.agent_svc.config import AgentSettings
from voiceagent_backbone.api.context.v1 import context_pb2, context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2, state_pb2_grpc

log = logging.getLogger(__name__)


class FailOpenReader:
    def __init__(
        self,
        settings: AgentSettings,
        state: state_pb2_grpc.StateServiceStub,
        context: context_pb2_grpc.ContextServiceStub,
    ) -> None:
        self._settings = settings
        self.state = state
        self.context = context
        self.state_breaker = CircuitBreaker(
            "state", failures=settings.breaker_failures, open_s=settings.breaker_open_s
        )
        self.context_breaker = CircuitBreaker(
            "context", failures=settings.breaker_failures, open_s=settings.breaker_open_s
        )

    async def _state_read(
        self, operation: str, call: Callable[[float], Awaitable[Any]]
    ) -> Any | None:
        """A read at session start: the response, `_NOT_FOUND`, or None when state_svc did
        not answer in time or the breaker is open (the session goes on without it)."""
        if not self.state_breaker.allow():
            return None
        timeout_s = self._settings.read_timeout_s
        try:
            response = await asyncio.wait_for(call(timeout_s), timeout_s + 0.05)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
            if code == grpc.StatusCode.NOT_FOUND:
                self.state_breaker.record_success()
                return _NOT_FOUND
            self.state_breaker.record_failure()
            metrics.BACKEND_ERRORS.labels(operation).inc()
            log.warning(
                "backend read failed; going on without it",
                extra={"operation": operation, "code": code.name if code else "TIMEOUT"},
            )
            return None
        self.state_breaker.record_success()
        return response

    async def enrich(
        self, conversation_id: str, user_id: str, text: str
    ) -> context_pb2.EnrichResponse | None:
        """Context for this turn within the budget, or None (timeout and errors counted)."""
        if not user_id:
            metrics.ENRICH_FAILURES.labels("no_user").inc()
            return None
        budget = self._settings.enrich_budget_ms / 1000
        request = context_pb2.EnrichRequest(
            conversation_id=conversation_id,
            user_id=user_id,
            text=text[:4000],
            max_items=self._settings.enrich_max_items,
            token_budget=self._settings.enrich_token_budget,
        )
        started = time.perf_counter()
        if not self.context_breaker.allow():
            metrics.ENRICH_FAILURES.labels("circuit_open").inc()
            return None
        try:
            response: context_pb2.EnrichResponse = await asyncio.wait_for(
                self.context.Enrich(request, timeout=budget), budget
            )
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            self.context_breaker.record_failure()
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
            if code in (None, grpc.StatusCode.DEADLINE_EXCEEDED):
                metrics.ENRICH_TIMEOUTS.inc()
            else:
                metrics.ENRICH_FAILURES.labels("error").inc()
                metrics.BACKEND_ERRORS.labels("enrich").inc()
            log.info(
                "enrichment skipped for this turn",
                extra={"code": code.name if code else "TIMEOUT", "budget_ms": budget * 1000},
            )
            return None
        finally:
            metrics.ENRICH_SECONDS.observe(time.perf_counter() - started)
        self.context_breaker.record_success()
        return response

    async def history(self, conversation_id: str, last_n: int) -> list[state_pb2.Event] | None:
        """The last messages of a conversation; [] for an unknown one, None on failure."""
        request = state_pb2.GetHistoryRequest(
            conversation_id=conversation_id,
            types=[state_pb2.EVENT_TYPE_USER_MESSAGE, state_pb2.EVENT_TYPE_AGENT_MESSAGE],
            last_n=last_n,
        )
        response = await self._state_read(
            "get_history", lambda t: self.state.GetHistory(request, timeout=t)
        )
        if response is None:
            return None
        return [] if response is _NOT_FOUND else list(response.events)

    async def latest_snapshot(self, conversation_id: str) -> state_pb2.Snapshot | None:
        request = state_pb2.GetLatestSnapshotRequest(conversation_id=conversation_id)
        response = await self._state_read(
            "get_snapshot", lambda t: self.state.GetLatestSnapshot(request, timeout=t)
        )
        if response is None or response is _NOT_FOUND or not response.HasField("snapshot"):
            return None
        snapshot: state_pb2.Snapshot = response.snapshot
        return snapshot


_NOT_FOUND = object()
