"""Starting context_svc in the test process, following a real state_svc, and talking to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from pydantic import SecretStr

from tests.support.state import StateHandle, event, running_state, state_settings
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as spb
from voiceagent_backbone.context_svc import service
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.domain import ContextDomain
from voiceagent_backbone.context_svc.embedding import Embedder
from voiceagent_backbone.context_svc.follower import FeedFollower
from voiceagent_backbone.servicekit import auth, server

CONTEXT_SCOPES = "context.read context.write"


@dataclass
class ContextHandle:
    domain: ContextDomain
    port: int
    settings: ContextSettings
    jwt_key: str
    channel: grpc.aio.Channel

    def stub(self) -> context_pb2_grpc.ContextServiceStub:
        return context_pb2_grpc.ContextServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def metadata(
        self, tenant: str = "tenant-a", scopes: str = CONTEXT_SCOPES
    ) -> tuple[tuple[str, str], ...]:
        token = auth.mint_token(self.jwt_key, tenant=tenant, scopes=scopes.split())
        return (("authorization", f"Bearer {token}"),)

    async def enrich(
        self, text: str, user_id: str = "user-1", tenant: str = "tenant-a", **fields: Any
    ) -> cpb.EnrichResponse:
        reply: cpb.EnrichResponse = await self.stub().Enrich(
            cpb.EnrichRequest(text=text, user_id=user_id, **fields),
            metadata=self.metadata(tenant),
            timeout=10,
        )
        return reply


def context_settings(tmp: Path, jwt_key: str, state_port: int, **overrides: Any) -> ContextSettings:
    common: dict[str, Any] = {
        "port": 0,
        "metrics_port": -1,
        "auth_jwt_key": SecretStr(jwt_key),
        "grace_period_s": 1,
        "index_path": tmp / "context.sqlite3",
        "state_target": f"127.0.0.1:{state_port}",
        "feed_retry_max_s": 0.5,
    }
    return ContextSettings(**{**common, **overrides})


@contextlib.asynccontextmanager
async def running_context(
    settings: ContextSettings, jwt_key: str, embedder: Embedder | None = None
) -> AsyncIterator[ContextHandle]:
    """context_svc as `python -m voiceagent_backbone.context_svc` runs it; `embedder` replaces
    the model."""
    async with service.open_domain(settings, embedder) as domain:
        follower = FeedFollower(settings, domain)
        try:
            if settings.follow_feed:
                follower.start()
            async with (
                server.running(settings, service.definition(domain)) as running,
                grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
            ):
                yield ContextHandle(domain, running.port, settings, jwt_key, channel)
        finally:
            await follower.stop()


@contextlib.asynccontextmanager
async def sqlite_state(tmp: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    """A state_svc on SQLite: where context_svc keeps knowledge documents and facts."""
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    async with running_state(state_settings("sqlite", tmp, jwt_key, None), jwt_key) as state:
        yield state


async def say(
    state: StateHandle,
    conversation_id: str,
    turns: Sequence[tuple[str, str]],
    tenant: str = "tenant-a",
) -> list[spb.Event]:
    """Appends (role, text) turns as user/agent messages; returns the sent events."""
    events = []
    for role, text in turns:
        if role == "user":
            events.append(
                event(
                    spb.EVENT_TYPE_USER_MESSAGE, text, spb.ROLE_USER, participant_identity="caller"
                )
            )
        else:
            events.append(
                event(
                    spb.EVENT_TYPE_AGENT_MESSAGE,
                    text,
                    spb.ROLE_AGENT,
                    participant_identity="assistant",
                )
            )
    await state.stub().AppendEvents(
        spb.AppendEventsRequest(conversation_id=conversation_id, events=events),
        metadata=state.metadata(tenant),
    )
    return events


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    """Waits (bounded) until check() holds: the index follows the feed asynchronously."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def indexed(handle: ContextHandle, tenant: str, turns: int) -> None:
    await eventually(
        lambda: handle.domain.turns_by_tenant.get(tenant, 0) == turns,
        f"{turns} indexed turns of {tenant}",
    )
