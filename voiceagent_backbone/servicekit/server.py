"""The one way every service starts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from voiceagent_backbone.servicekit import auth, interceptors, tracing
from voiceagent_backbone.servicekit.config import ConfigurationError, ServiceSettings, env_name
from voiceagent_backbone.servicekit.keys import JwksFile, JwksUrl, VerificationKeys
from voiceagent_backbone.servicekit.logging import configure_logging
from voiceagent_backbone.servicekit.metrics import MetricsEndpoint, start_metrics_endpoint
from voiceagent_backbone.servicekit.ports import bind_failure, check_ports, listen_error

log = logging.getLogger(__name__)


@dataclass
class ServiceDefinition:
    """What a service contributes: its servicers and the scope each method needs."""

    name: str
    # Full proto service names ("voiceagent.state.v1.StateService") for health and reflection.
    service_names: Sequence[str]
    # "/pkg.Service/Method" -> required scope; methods missing here are denied.
    method_scopes: Mapping[str, str]
    register: Callable[[grpc.aio.Server], None]
    # Run when shutdown begins, before in-flight calls are finished or cancelled.
    on_stopping: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run after the server stopped taking calls (flush, close connections).
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Awaited once the server runs: until it returns, the service names answer NOT_SERVING
    # (the readiness probe asks for them) while "" answers SERVING (liveness), so a replica
    # that is still catching up gets no traffic and is not restarted either.
    ready: Callable[[], Awaitable[object]] | None = None
    # Long-lived streams get no server span (one span for hours of a feed is noise), and
    # may write with context.write, which the tracing interceptor cannot wrap.
    untraced_methods: Sequence[str] = ()


def _server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    ms = 1000
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * ms)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * ms)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client pings as often as every 10 s (clients default to no pings).
        ("grpc.http2.min_ping_interval_without_data_ms", 10 * ms),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * ms)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * ms)),
        # One process per port: fail loudly instead of sharing a port with a stale process.
        ("grpc.so_reuseport", 0),
    ]


class GrpcServer:
    """A started service: the gRPC server, health, reflection and the metrics endpoint."""

    def __init__(
        self,
        settings: ServiceSettings,
        definition: ServiceDefinition,
        verifier: auth.JwtVerifier | EllipsisType | None = ...,
    ) -> None:
        """`verifier`: None turns authentication off; by default it comes from the settings."""
        self.settings = settings
        self.definition = definition
        # The grpc stubs predate health.aio.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.port = 0
        self.metrics_port = 0
        self._metrics: MetricsEndpoint | None = None
        self._serving = False
        self._stopped = asyncio.Event()
        self._ready_task: asyncio.Task[None] | None = None
        if isinstance(verifier, EllipsisType):
            verifier = _verifier(settings, definition.name)
        self._key_urls = [] if verifier is None else verifier.keys.urls
        chain: list[grpc.aio.ServerInterceptor[Any, Any]] = [
            tracing.server_interceptor(definition.untraced_methods),
            interceptors.ScopedInterceptor(interceptors.metrics_scope),
            interceptors.ScopedInterceptor(
                interceptors.ConcurrencyScope(
                    settings.max_concurrent_rpcs, settings.max_concurrent_streams
                )
            ),
            interceptors.ScopedInterceptor(
                interceptors.AuthScope(verifier, definition.method_scopes)
            ),
            interceptors.ScopedInterceptor(interceptors.errors_scope),
            interceptors.RequestCheckInterceptor(),
        ]
        self.server = grpc.aio.server(
            interceptors=chain,
            options=_server_options(settings),
        )

    async def start(self) -> None:
        definition = self.definition
        definition.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*definition.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME],
            self.server,
        )
        settings = self.settings
        address = f"{_bracket(settings.host)}:{settings.port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc says only that the bind failed
            cause = bind_failure(settings.host, settings.port)
            raise listen_error(settings, "host", "port", cause) from exc
        if settings.metrics_port >= 0:
            try:
                self._metrics = start_metrics_endpoint(settings.metrics_host, settings.metrics_port)
            except OSError as exc:
                raise listen_error(settings, "metrics_host", "metrics_port", exc) from exc
            self.metrics_port = self._metrics.port
        for source in self._key_urls:
            await source.start()
        await self.server.start()
        self._serving = True
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        if definition.ready is None:
            await self._set_ready()
        else:
            for name in definition.service_names:
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._ready_task = asyncio.create_task(self._await_ready(definition.ready))
        log.info(
            "serving",
            extra={
                "grpc_address": f"{self.settings.host}:{self.port}",
                "metrics_port": self.metrics_port,
            },
        )

    async def _set_ready(self) -> None:
        for name in self.definition.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def _await_ready(self, ready: Callable[[], Awaitable[object]]) -> None:
        started = time.monotonic()
        await ready()
        if not self._stopped.is_set():
            await self._set_ready()
            log.info("ready", extra={"seconds": round(time.monotonic() - started, 2)})

    async def stop(self) -> None:
        """NOT_SERVING, optional drain delay, finish in-flight calls within the grace period."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._ready_task is not None:
            self._ready_task.cancel()
        # A server whose start failed has no calls to drain: it only releases what the
        # start took and runs the service's hooks (their clients and tasks), quietly.
        serving = self._serving
        if serving:
            log.info("shutting down", extra={"grace_period_s": self.settings.grace_period_s})
            await self.health.enter_graceful_shutdown()
        for hook in self.definition.on_stopping:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        if serving and self.settings.shutdown_delay_s > 0:
            await asyncio.sleep(self.settings.shutdown_delay_s)
        await self.server.stop(self.settings.grace_period_s if serving else 0)
        for hook in self.definition.on_stop:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        for source in self._key_urls:
            await source.stop()
        if self._metrics is not None:
            self._metrics.stop()
        tracing.shutdown_tracing()
        if serving:
            log.info("stopped")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _verifier(settings: ServiceSettings, service: str) -> auth.JwtVerifier | None:
    if settings.auth_disabled:
        log.warning("authentication is DISABLED: every caller is tenant 'default' with all scopes")
        return None
    try:
        keys = _verification_keys(settings, service)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    return auth.JwtVerifier(
        keys,
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
        require_exp=settings.auth_require_exp,
        max_lifetime_s=settings.auth_max_token_lifetime_s,
        grants={
            subject: auth.Grant(g.tenant, frozenset(g.scopes))
            for subject, g in settings.auth_grants.items()
        },
    )


def _verification_keys(settings: ServiceSettings, service: str) -> VerificationKeys:
    def var(field: str) -> str:
        return env_name(type(settings), field)

    key = settings.jwt_key()
    if not key and settings.auth_jwks_file is None and settings.auth_jwks_url is None:
        p = settings.model_config.get("env_prefix", "")
        raise ValueError(
            f"no key to verify tokens with. Set {p}AUTH_JWKS_URL or {p}AUTH_JWKS_FILE (public "
            f"keys), or {p}AUTH_JWT_KEY(_FILE); {p}AUTH_DISABLED=true for a local experiment."
        )
    if key and any(a.startswith("HS") for a in settings.auth_jwt_algorithms):
        if len(key.encode()) < 32:
            # RFC 7518 §3.2: an HMAC key shorter than the hash output is guessable.
            source = "auth_jwt_key" if settings.auth_jwt_key is not None else "auth_jwt_key_file"
            raise ValueError(
                f"{var(source)}: the JWT key for HS* algorithms must be at least 32 bytes"
            )
        log.warning(
            "verifying with a shared HS* key: whoever holds it can mint tokens for any "
            "tenant; use public keys (auth_jwks_file or auth_jwks_url) in production"
        )
    files = []
    if settings.auth_jwks_file:
        try:
            files.append(JwksFile(settings.auth_jwks_file))
        except ValueError as exc:
            raise ValueError(f"{var('auth_jwks_file')}: {exc}") from exc
    urls = []
    if settings.auth_jwks_url:
        urls.append(
            JwksUrl(
                settings.auth_jwks_url,
                ca_file=settings.auth_jwks_ca_file,
                token_file=settings.auth_jwks_token_file,
                refresh_s=settings.auth_jwks_refresh_s,
            )
        )
    return VerificationKeys(key or None, settings.auth_jwt_algorithms, files, urls)


ServiceFactory = Callable[[ServiceSettings], AbstractAsyncContextManager[ServiceDefinition]]


@contextlib.asynccontextmanager
async def running(
    settings: ServiceSettings,
    definition: ServiceDefinition,
    verifier: auth.JwtVerifier | EllipsisType | None = ...,
) -> AsyncIterator[GrpcServer]:
    """Start a server for a definition, stop it on exit (tests and embedding use this)."""
    server = GrpcServer(settings, definition, verifier)
    try:
        await server.start()
    except BaseException:
        await server.stop()
        raise
    try:
        yield server
    finally:
        await server.stop()


async def serve(settings: ServiceSettings, factory: ServiceFactory, name: str) -> None:
    """Run a service until SIGTERM or SIGINT, then shut it down gracefully."""
    configure_logging(name, settings.log_level)
    tracing.configure_tracing(name, settings.otlp_endpoint, settings.trace_sample_ratio)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Before the service opens its store or loads a model: a port another process holds,
    # or a key that cannot be used, is said at once, in one line.
    check_ports(settings, *settings.listeners())
    verifier = _verifier(settings, name)
    async with factory(settings) as definition, running(settings, definition, verifier):
        await stop.wait()
        log.info("received a stop signal")


def main(settings: ServiceSettings, factory: ServiceFactory, name: str) -> None:
    """Entry point for `python -m <service>`."""
    asyncio.run(serve(settings, factory, name))
