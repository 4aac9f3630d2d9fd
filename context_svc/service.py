"""Wires context_svc's servicer into servicekit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from servicekit.config import ServiceSettings
from servicekit.scopes import method_scopes
from servicekit.server import ServiceDefinition
from voiceagent.context.v1 import context_pb2, context_pb2_grpc

SERVICE = context_pb2.DESCRIPTOR.services_by_name["ContextService"]

READ, WRITE = "context.read", "context.write"
SCOPES = method_scopes(
    SERVICE,
    {
        "Enrich": READ,
        "IngestDocument": WRITE,
        "DeleteDocument": WRITE,
        "ListDocuments": READ,
        "UpsertFacts": WRITE,
        "ListFacts": READ,
        "DeleteFact": WRITE,
        "GetIndexStatus": READ,
    },
)


class ContextServicer(context_pb2_grpc.ContextServiceServicer):
    """The wire layer. Methods not yet built answer UNIMPLEMENTED (the generated default)."""


@contextlib.asynccontextmanager
async def build(settings: ServiceSettings) -> AsyncIterator[ServiceDefinition]:
    servicer = ContextServicer()

    def register(server: grpc.aio.Server) -> None:
        context_pb2_grpc.add_ContextServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    yield ServiceDefinition(
        name="context_svc",
        service_names=[SERVICE.full_name],
        method_scopes=SCOPES,
        register=register,
    )
