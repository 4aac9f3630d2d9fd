"""Client channels to the project's services: tracing, bearer token, retries, balancing."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from voiceagent_backbone.servicekit import tracing

TokenProvider = Callable[[], str]

# Retries idempotent failures the server reports before doing work. Our writes are
# idempotent by id (events, conversations), so retrying them is safe too.
_DEFAULT_RETRY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def service_config(retry: bool = True) -> str:
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retry:
        config["methodConfig"] = [{"name": [{}], "retryPolicy": _DEFAULT_RETRY}]
    return json.dumps(config)


class _BearerToken:
    """Adds `authorization: Bearer <token>`; the provider may refresh short-lived tokens."""

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["authorization"] = f"Bearer {self._provider()}"
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under one call kind only (the first base it matches),
# so each kind needs its own class. The bases are generic only in the stubs.
class _UnaryUnaryToken(_BearerToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStreamToken(_BearerToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnaryToken(_BearerToken, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStreamToken(_BearerToken, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer_token_interceptors(provider: TokenProvider) -> list[Any]:
    return [
        kind(provider)
        for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
    ]


def create_channel(
    target: str,
    *,
    token: TokenProvider | None = None,
    retry: bool = True,
    max_message_bytes: int = 4 * 1024 * 1024,
    extra_interceptors: Sequence[Any] = (),
    extra_options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An insecure (in-cluster, mesh or loopback) channel with the project's defaults.

    Use `dns:///service-headless:50051` in Kubernetes: round-robin over every replica.
    """
    interceptors: list[Any] = [*tracing.client_interceptors()]
    if token is not None:
        interceptors.extend(bearer_token_interceptors(token))
    interceptors.extend(extra_interceptors)
    options = [
        ("grpc.service_config", service_config(retry)),
        ("grpc.enable_retries", 1 if retry else 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        *extra_options,
    ]
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
