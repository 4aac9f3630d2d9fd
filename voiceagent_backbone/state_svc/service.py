"""Wires state_svc together: store, domain, servicer, background retention, servicekit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator

import grpc

from voiceagent_backbone.api.state.v1 import state_pb2, state_pb2_grpc
from voiceagent_backbone.servicekit.config import (
    ConfigurationError,
    ServiceSettings,
    env_name,
    path_error,
)
from voiceagent_backbone.servicekit.logging import redact
from voiceagent_backbone.servicekit.page_tokens import KEY_BYTES, PageTokens
from voiceagent_backbone.servicekit.scopes import method_scopes
from voiceagent_backbone.servicekit.server import ServiceDefinition
from voiceagent_backbone.state_svc.config import StateSettings
from voiceagent_backbone.state_svc.domain import StateDomain
from voiceagent_backbone.state_svc.servicer import StateServicer
from voiceagent_backbone.state_svc.store.base import ConversationStore, StoreError
from voiceagent_backbone.state_svc.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

SERVICE = state_pb2.DESCRIPTOR.services_by_name["StateService"]

READ, WRITE, ADMIN = "state.read", "state.write", "state.admin"
# The embeddings of every tenant: a platform scope (state.admin does not include it).
INDEX = "state.index"
# Every tenant's knowledge documents and user facts, the tenant named in the request: a
# platform scope too.
KNOWLEDGE = "state.knowledge"
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
        "ClaimEmbeddings": INDEX,
        "PutEmbeddings": INDEX,
        "GetEmbeddings": INDEX,
        "ListEmbeddings": INDEX,
        "PutDocument": KNOWLEDGE,
        "GetDocument": KNOWLEDGE,
        "ListDocuments": KNOWLEDGE,
        "DeleteDocument": KNOWLEDGE,
        "PutFacts": KNOWLEDGE,
        "ListFacts": KNOWLEDGE,
        "DeleteFact": KNOWLEDGE,
    },
)


def make_store(settings: StateSettings) -> ConversationStore:
    if settings.mongodb_uri is not None:
        from voiceagent_backbone.state_svc.store.mongo import MongoStore

        return MongoStore(
            settings.mongodb_uri.get_secret_value(),
            settings.mongodb_database,
            write_concern=settings.mongodb_write_concern,
            timeout_ms=settings.mongodb_timeout_ms,
            ttl_backstop_s=settings.ttl_backstop_s,
        )
    return SqliteStore(settings.sqlite_path, settings.sqlite_synchronous)


def mongodb_hosts(uri: str) -> str:
    """The hosts a MongoDB URI names, without its credentials: `db1:27017,db2:27017`."""
    rest = uri.partition("://")[2]
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    return authority.rpartition("@")[2] or "?"


async def check_mongodb(settings: StateSettings) -> None:
    """Raises a ConfigurationError naming STATE_MONGODB_URI unless a server answers within
    mongodb_start_timeout_ms (the store's own timeouts are longer, for a running service)."""
    from pymongo import AsyncMongoClient
    from pymongo.errors import ConfigurationError as BadUri
    from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

    assert settings.mongodb_uri is not None
    uri = settings.mongodb_uri.get_secret_value()
    variable = env_name(StateSettings, "mongodb_uri")
    wait_ms = settings.mongodb_start_timeout_ms
    try:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=wait_ms, connectTimeoutMS=wait_ms, appname="state_svc"
        )
    except BadUri as exc:
        message = f"{variable}: not a usable MongoDB URI: {redact(str(exc))}"
        raise ConfigurationError(message) from exc
    try:
        await client.admin.command("ping")
    except ServerSelectionTimeoutError as exc:
        # "host:port: [Errno 111] Connect call failed (...) (configured timeouts: ...)"
        reasons = [
            str(server.error).split(" (configured timeouts", 1)[0].removeprefix(f"{host}:{port}: ")
            for (host, port), server in client.topology_description.server_descriptions().items()
            if server.error is not None
        ]
        reason = redact(reasons[0]) if reasons else "no server fit to use answered"
        raise ConfigurationError(
            f"{variable}: the database at {mongodb_hosts(uri)} is unreachable: {reason} (no "
            f"answer within {wait_ms / 1000:g} s; "
            f"{env_name(StateSettings, 'mongodb_start_timeout_ms')} sets the wait)"
        ) from exc
    except PyMongoError as exc:
        raise ConfigurationError(
            f"{variable}: the database at {mongodb_hosts(uri)}: {redact(str(exc))}"
        ) from exc
    finally:
        await client.close()


async def open_store(settings: StateSettings) -> ConversationStore:
    """The store, open; a database it cannot reach or a file it cannot create is a
    ConfigurationError naming the variable to change."""
    if settings.mongodb_uri is not None:
        await check_mongodb(settings)
    store = make_store(settings)
    try:
        await store.open()
    except (StoreError, OSError, sqlite3.Error) as exc:
        with contextlib.suppress(Exception):
            await store.close()
        if settings.mongodb_uri is not None:
            where = f"{env_name(StateSettings, 'mongodb_uri')}: the database at "
            where += mongodb_hosts(settings.mongodb_uri.get_secret_value())
            raise ConfigurationError(f"{where}: {redact(str(exc))}") from exc
        raise path_error(
            StateSettings, "sqlite_path", settings.sqlite_path, "the database file", exc
        ) from exc
    return store


@contextlib.asynccontextmanager
async def open_domain(settings: StateSettings) -> AsyncIterator[StateDomain]:
    store = await open_store(settings)
    log.info("store open", extra={"backend": store.name})
    # One key per database: a page token or cursor from one replica reads on any other,
    # and after a restart.
    page_tokens = PageTokens(await store.shared_secret("page_tokens", KEY_BYTES))
    domain = StateDomain(store, settings, page_tokens)
    try:
        yield domain
    finally:
        await domain.aclose()
        await store.close()


def definition(domain: StateDomain) -> ServiceDefinition:
    servicer = StateServicer(domain, domain.page_tokens)

    def register(server: grpc.aio.Server) -> None:
        state_pb2_grpc.add_StateServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return ServiceDefinition(
        name="state_svc",
        service_names=[SERVICE.full_name],
        method_scopes=SCOPES,
        register=register,
        untraced_methods=[f"/{SERVICE.full_name}/Watch"],
    )


@contextlib.asynccontextmanager
async def build(settings: ServiceSettings) -> AsyncIterator[ServiceDefinition]:
    assert isinstance(settings, StateSettings)
    async with open_domain(settings) as domain:
        sweeper = asyncio.create_task(domain.run_retention(), name="retention")

        async def stop_sweeper() -> None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

        service_definition = definition(domain)
        service_definition.on_stop.append(stop_sweeper)
        try:
            yield service_definition
        finally:
            await stop_sweeper()
