"""Starting state_svc in the test process on either store, and talking to it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from pydantic import SecretStr

from tests.support.ferretdb import MongoTarget
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit import auth, server
from voiceagent_backbone.servicekit.ids import uuid7
from voiceagent_backbone.state_svc import service
from voiceagent_backbone.state_svc.config import StateSettings
from voiceagent_backbone.state_svc.domain import StateDomain

ALL_SCOPES = "state.read state.write state.admin state.feed state.index state.knowledge"


@dataclass
class StateHandle:
    domain: StateDomain
    port: int
    backend: str
    settings: StateSettings
    jwt_key: str
    channel: grpc.aio.Channel

    def stub(self) -> state_pb2_grpc.StateServiceStub:
        return state_pb2_grpc.StateServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def metadata(
        self, tenant: str = "tenant-a", scopes: str = ALL_SCOPES
    ) -> tuple[tuple[str, str], ...]:
        token = auth.mint_token(self.jwt_key, tenant=tenant, scopes=scopes.split())
        return (("authorization", f"Bearer {token}"),)


def state_settings(
    backend: str, tmp: Path, jwt_key: str, mongo: MongoTarget | None, **overrides: Any
) -> StateSettings:
    common: dict[str, Any] = {
        "port": 0,
        "metrics_port": -1,
        "auth_jwt_key": SecretStr(jwt_key),
        "grace_period_s": 1,
        "feed_poll_interval_s": 0.05,
    }
    if backend == "mongodb":
        assert mongo is not None
        common["mongodb_uri"] = SecretStr(mongo.uri)
        # A database per server, so every test starts empty.
        common["mongodb_database"] = f"{mongo.database}_{uuid.uuid4().hex[:8]}"
        common["mongodb_write_concern"] = "1" if mongo.kind == "ferretdb" else "majority"
    else:
        common["sqlite_path"] = tmp / f"state-{uuid.uuid4().hex[:8]}.sqlite3"
    return StateSettings(**{**common, **overrides})


@contextlib.asynccontextmanager
async def running_state(settings: StateSettings, jwt_key: str) -> AsyncIterator[StateHandle]:
    """state_svc without its background sweeper: tests run sweeps themselves."""
    async with (
        service.open_domain(settings) as domain,
        server.running(settings, service.definition(domain)) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        backend = "mongodb" if settings.mongodb_uri is not None else "sqlite"
        yield StateHandle(domain, running.port, backend, settings, jwt_key, channel)
        if settings.mongodb_uri is not None:
            await domain.store.drop_database()  # type: ignore[attr-defined]


def event(
    event_type: int = pb.EVENT_TYPE_USER_MESSAGE,
    text: str = "hello",
    role: int = pb.ROLE_USER,
    **fields: Any,
) -> pb.Event:
    when = fields.pop("client_time", None)
    if when is None:
        when = timestamp_pb2.Timestamp()
        when.GetCurrentTime()
    return pb.Event(
        event_id=fields.pop("event_id", uuid7()),
        type=event_type,  # type: ignore[arg-type]
        role=role,  # type: ignore[arg-type]
        text=text,
        client_time=when,
        **fields,
    )


async def new_conversation(
    handle: StateHandle,
    tenant: str = "tenant-a",
    user_ids: tuple[str, ...] = ("user-1",),
    room: str | None = None,
) -> pb.Conversation:
    reply = await handle.stub().CreateConversation(
        pb.CreateConversationRequest(
            room_name=room or f"room-{uuid.uuid4().hex[:6]}",
            user_ids=list(user_ids),
            participant_identities=[f"identity-{u}" for u in user_ids],
            agent_name="assistant",
        ),
        metadata=handle.metadata(tenant),
    )
    conversation: pb.Conversation = reply.conversation
    return conversation
