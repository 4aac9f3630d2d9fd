"""Wires state_svc's servicer into servicekit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from servicekit.config import ServiceSettings
from servicekit.scopes import method_scopes
from servicekit.server import ServiceDefinition
from voiceagent.state.v1 import state_pb2, state_pb2_grpc

SERVICE = state_pb2.DESCRIPTOR.services_by_name["StateService"]

READ, WRITE, ADMIN = "state.read", "state.write", "state.admin"
# Following every tenant's feed is checked in the Watch handler (scope state.feed).
SCOPES = method_scopes(
    SERVICE,
    {
        "CreateConversation": WRITE,
        "GetConversation": READ,
        "FindOpenConversation": READ,
        "ListConversations": READ,
        "EndConversation": WRITE,
        "AppendEvents": WRITE,
        "GetHistory": READ,
        "SaveSnapshot": WRITE,
        "GetLatestSnapshot": READ,
        "UpsertUser": WRITE,
        "GetUser": READ,
        "Watch": READ,
        "SetRetentionPolicy": ADMIN,
        "GetRetentionPolicy": READ,
        "ExportUserData": ADMIN,
        "DeleteUserData": ADMIN,
    },
)


class StateServicer(state_pb2_grpc.StateServiceServicer):
    """The wire layer. Methods not yet built answer UNIMPLEMENTED (the generated default)."""


@contextlib.asynccontextmanager
async def build(settings: ServiceSettings) -> AsyncIterator[ServiceDefinition]:
    servicer = StateServicer()

    def register(server: grpc.aio.Server) -> None:
        state_pb2_grpc.add_StateServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    yield ServiceDefinition(
        name="state_svc",
        service_names=[SERVICE.full_name],
        method_scopes=SCOPES,
        register=register,
    )
