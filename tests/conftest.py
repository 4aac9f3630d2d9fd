"""Fixtures shared by every test: keys and tokens, in-process services, real servers."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from tests.support import probe_service
from tests.support.ferretdb import MongoTarget, mongo_target
from tests.support.livekit import LiveKitServer, livekit_server
from voiceagent_backbone.servicekit import auth, server

# One tracer provider for the whole test process (OpenTelemetry allows one); tests read
# finished spans from this exporter. servicekit leaves an existing provider alone.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)

TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def jwt_key() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="session")
def make_token(jwt_key: str) -> TokenFactory:
    def make(tenant: str = "tenant-a", scopes: str = "probe.read", ttl_s: float = 300) -> str:
        return auth.mint_token(jwt_key, tenant=tenant, scopes=scopes.split(), ttl_s=ttl_s)

    return make


@pytest.fixture(scope="session")
async def probe(jwt_key: str) -> AsyncIterator[server.GrpcServer]:
    """The probe service in this process, on a free loopback port."""
    settings = probe_service.ProbeSettings(
        port=0, metrics_port=0, auth_jwt_key=SecretStr(jwt_key), grace_period_s=2
    )
    async with server.running(settings, probe_service.definition()) as running:
        yield running


@pytest.fixture
async def probe_channel(probe: server.GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTarget]:
    """FerretDB on a free loopback port, or the server that MONGODB_URI names."""
    with mongo_target(tmp_path_factory.mktemp("ferretdb")) as target:
        yield target


@pytest.fixture(scope="session")
def livekit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitServer]:
    """livekit-server in dev mode on loopback (keys devkey / secret)."""
    with livekit_server(tmp_path_factory.mktemp("livekit")) as lk:
        yield lk


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
