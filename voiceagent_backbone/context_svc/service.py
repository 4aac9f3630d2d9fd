"""Wires context_svc together: index store, embedder, domain, feed follower, servicekit."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator

import grpc

from voiceagent_backbone.api.context.v1 import context_pb2, context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.domain import ContextDomain
from voiceagent_backbone.context_svc.embedding import Embedder, MiniLmEmbedder, OpenAIEmbedder
from voiceagent_backbone.context_svc.follower import FeedFollower, token_provider
from voiceagent_backbone.context_svc.records import KnowledgeRecords
from voiceagent_backbone.context_svc.servicer import ContextServicer
from voiceagent_backbone.context_svc.store import IndexStore
from voiceagent_backbone.servicekit.client import create_channel
from voiceagent_backbone.servicekit.config import ServiceSettings, path_error
from voiceagent_backbone.servicekit.scopes import method_scopes
from voiceagent_backbone.servicekit.server import ServiceDefinition

log = logging.getLogger(__name__)

SERVICE = context_pb2.DESCRIPTOR.services_by_name["ContextService"]

READ, WRITE = "context.read", "context.write"
SCOPES = method_scopes(
    SERVICE,
    {
        "Enrich": READ,
        "IngestDocument": WRITE,
        "DeleteDocument": WRITE,
        "ListDocuments": READ,
        "GetDocument": READ,
        "UpsertFacts": WRITE,
        "ListFacts": READ,
        "DeleteFact": WRITE,
        "GetIndexStatus": READ,
    },
)

_embedders: dict[int, Embedder] = {}


def shared_embedder(threads: int) -> Embedder:
    """One model per process (it is read-only): tests and embedded use start many services."""
    if threads not in _embedders:
        _embedders[threads] = MiniLmEmbedder(threads=threads)
    return _embedders[threads]


def make_embedder(settings: ContextSettings, for_queries: bool = False) -> Embedder:
    """The index's embedder, or Enrich's (`for_queries`: the same model, its own threads)."""
    if settings.embedding_backend == "openai":
        assert settings.openai_api_key is not None
        return OpenAIEmbedder(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value(),
            model=settings.openai_embedding_model,
            dimensions=settings.openai_embedding_dimensions,
            timeout_s=settings.openai_timeout_s,
        )
    threads = settings.query_embedding_threads if for_queries else settings.embedding_threads
    return shared_embedder(threads)


async def open_index(settings: ContextSettings) -> IndexStore:
    """The index file, open; one that cannot be created names CONTEXT_INDEX_PATH."""
    store = IndexStore(settings.index_path)
    try:
        await store.open()
    except (OSError, sqlite3.Error) as exc:
        raise path_error(
            ContextSettings, "index_path", settings.index_path, "the index file", exc
        ) from exc
    return store


@contextlib.asynccontextmanager
async def open_domain(
    settings: ContextSettings, embedder: Embedder | None = None
) -> AsyncIterator[ContextDomain]:
    """The domain with its index loaded and its client of state_svc's knowledge records."""
    store = await open_index(settings)
    domain = ContextDomain(
        settings,
        store,
        embedder or make_embedder(settings),
        embedder or make_embedder(settings, for_queries=True),
    )
    channel = create_channel(
        settings.state_target,
        token=token_provider(settings),
        max_message_bytes=settings.max_message_bytes,
    )
    domain.knowledge.records = KnowledgeRecords(
        state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
    )
    try:
        await domain.load()
        yield domain
    finally:
        domain.close()
        await channel.close(None)
        await store.close()


def definition(domain: ContextDomain) -> ServiceDefinition:
    servicer = ContextServicer(domain)

    def register(server: grpc.aio.Server) -> None:
        context_pb2_grpc.add_ContextServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    return ServiceDefinition(
        name="context_svc",
        service_names=[SERVICE.full_name],
        method_scopes=SCOPES,
        register=register,
        # Not ready (readiness probe) until the memory has caught up with the feed: a new
        # replica would otherwise answer with memory missing.
        ready=domain.progress.current.wait if domain.settings.follow_feed else None,
    )


@contextlib.asynccontextmanager
async def build(settings: ServiceSettings) -> AsyncIterator[ServiceDefinition]:
    assert isinstance(settings, ContextSettings)
    async with open_domain(settings) as domain:
        follower = FeedFollower(settings, domain)
        service_definition = definition(domain)
        service_definition.on_stop.append(follower.stop)
        if settings.follow_feed:
            follower.start()
        try:
            yield service_definition
        finally:
            await follower.stop()
