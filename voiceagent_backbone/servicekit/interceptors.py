"""Server interceptors: metrics, authentication and error mapping.

Each concern is an async context manager entered around the RPC's behaviour, so the same
code covers unary and streaming methods. Order (outermost first): tracing, metrics, auth,
errors — metrics see the final status code, errors are mapped before anything outside sees
them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from voiceagent_backbone.servicekit import auth, metrics, wellknown
from voiceagent_backbone.servicekit.errors import DomainError, FieldViolation, InvalidArgument

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RpcInfo:
    """What an interceptor knows about the call it wraps."""

    full_method: str  # "/pkg.Service/Method"
    service: str
    method: str
    rpc_type: str  # unary | client_stream | server_stream | bidi_stream
    metadata: Mapping[str, str]

    @classmethod
    def from_details(
        cls, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> RpcInfo:
        full: str = details.method
        service, _, method = full.lstrip("/").rpartition("/")
        rpc_type = {
            (False, False): "unary",
            (True, False): "client_stream",
            (False, True): "server_stream",
            (True, True): "bidi_stream",
        }[(bool(handler.request_streaming), bool(handler.response_streaming))]
        metadata: dict[str, str] = {}
        for key, value in details.invocation_metadata or ():
            if isinstance(value, str):
                metadata[key] = value
        return cls(full, service, method, rpc_type, metadata)


Scope = Callable[[RpcInfo, grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


def status_code_of(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The code a handler ended with: set by abort(), set_code(), or OK."""
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate
    return grpc.StatusCode.UNKNOWN


class ScopedInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Runs `scope(info, context)` around every RPC behaviour, streaming or not."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        info = RpcInfo.from_details(handler_call_details, handler)
        scope = self._scope

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            if _is_generator(behavior, handler):

                async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    async with scope(info, context):
                        async for item in behavior(request, context):
                            yield item

                return stream

            async def unary(request: Any, context: Any) -> Any:
                async with scope(info, context):
                    return await behavior(request, context)

            return unary

        return _rebuilt(handler, wrap, handler.request_deserializer)


def _is_generator(behavior: Callable[..., Any], handler: grpc.RpcMethodHandler[Any, Any]) -> bool:
    return inspect.isasyncgenfunction(behavior) or (
        bool(handler.response_streaming) and not inspect.iscoroutinefunction(behavior)
    )


def _rebuilt(
    handler: grpc.RpcMethodHandler[Any, Any],
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
    deserializer: Callable[[bytes], Any] | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its behaviour wrapped and its request deserializer replaced."""
    kwargs = {
        "request_deserializer": deserializer,
        "response_serializer": handler.response_serializer,
    }
    h: Any = handler  # the stubs type behaviours as sync callables; aio's are async
    if h.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(h.unary_unary), **kwargs)
    if h.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap(h.unary_stream), **kwargs)
    if h.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(h.stream_unary), **kwargs)
    return grpc.stream_stream_rpc_method_handler(wrap(h.stream_stream), **kwargs)


@dataclass(frozen=True)
class _Undecodable:
    """Request bytes that did not parse as the method's message."""

    method: str


def _check_request(request: Any) -> None:
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            [FieldViolation("request", "could not be parsed")],
            f"the request bytes are not a valid message of {request.method}",
        )
    if isinstance(request, Message):
        found = wellknown.violations(request)
        if found:
            raise InvalidArgument(FieldViolation(field, what) for field, what in found)


class RequestCheckInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """The innermost interceptor: a request whose bytes do not parse, or that holds a value
    nothing downstream can store (servicekit.wellknown), is INVALID_ARGUMENT before the
    handler runs, whatever the method. (Left to gRPC, unparseable bytes end as UNKNOWN
    naming a Python exception.)"""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        parse = handler.request_deserializer
        method: str = handler_call_details.method

        def deserialize(data: bytes) -> Any:
            if parse is None:
                return data
            try:
                return parse(data)
            except Exception:
                return _Undecodable(method)

        def wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
            # A streaming method may be an async generator or a coroutine that writes
            # (grpc's own health service): wrap each as what it is.
            if _is_generator(behavior, handler):

                async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    _check_request(request)
                    async for item in behavior(request, context):
                        yield item

                return stream

            async def unary(request: Any, context: Any) -> Any:
                _check_request(request)
                return await behavior(request, context)

            return unary

        return _rebuilt(handler, wrap, deserialize)


def _final_code(
    context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None
) -> grpc.StatusCode:
    if error is None or isinstance(error, grpc.aio.AbortError):
        return status_code_of(context)
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def metrics_scope(info: RpcInfo, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """go-grpc-prometheus semantics: started, handled by code, handling seconds."""

    @asynccontextmanager
    async def scope() -> AsyncIterator[None]:
        labels = (info.rpc_type, info.service, info.method)
        metrics.GRPC_STARTED.labels(*labels).inc()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            code = _final_code(context, error)
            metrics.GRPC_HANDLED.labels(*labels, code.name).inc()
            metrics.GRPC_HANDLING_SECONDS.labels(*labels).observe(time.perf_counter() - start)

    return scope()


class ConcurrencyScope:
    """Bounds the calls in flight, unary and streaming apart; health and reflection are
    never counted or refused. (gRPC's own maximum_concurrent_rpcs counts every call, the
    health check included, so a client holding streams made the probes fail.)"""

    def __init__(self, max_unary: int | None, max_streams: int | None) -> None:
        self._limits = {"unary": max_unary, "stream": max_streams}
        self._in_flight = {"unary": 0, "stream": 0}

    def __call__(self, info: RpcInfo, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return self._scope(info, context)

    @asynccontextmanager
    async def _scope(
        self, info: RpcInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        kind = "unary" if info.rpc_type == "unary" else "stream"
        limit = self._limits[kind]
        if info.service in auth.PUBLIC_SERVICES or limit is None:
            yield
            return
        if self._in_flight[kind] >= limit:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this replica has {limit} {kind} calls in flight, its limit; retry later",
            )
        self._in_flight[kind] += 1
        try:
            yield
        finally:
            self._in_flight[kind] -= 1


class AuthScope:
    """Verifies the bearer token and checks the scope the method requires."""

    def __init__(self, verifier: auth.JwtVerifier | None, method_scopes: Mapping[str, str]) -> None:
        # None: authentication disabled (local experiments): every caller is the default tenant.
        self._verifier = verifier
        self._method_scopes = dict(method_scopes)

    def __call__(self, info: RpcInfo, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return self._scope(info, context)

    @asynccontextmanager
    async def _scope(
        self, info: RpcInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if info.service in auth.PUBLIC_SERVICES:
            yield
            return
        if self._verifier is None:
            principal = auth.Principal("default", "anonymous", frozenset({auth.ALL}))
        else:
            try:
                principal = await self._verifier.verify(info.metadata.get("authorization"))
            except DomainError as exc:
                await context.abort(exc.code, exc.message)
            required = self._method_scopes.get(info.full_method)
            if required is None:
                # Fail closed: a method nobody declared a scope for is nobody's.
                log.error("no scope declared for method", extra={"method": info.full_method})
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "method not permitted")
            elif not principal.allows(required):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, f"this call needs the scope {required!r}"
                )
        token = auth.set_principal(principal)
        try:
            yield
        finally:
            auth.reset_principal(token)


def to_status(error: DomainError) -> grpc.Status:
    """A rich status: code, message and `google.rpc` details."""
    details: list[any_pb2.Any] = []
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        details.append(packed)
    status = status_pb2.Status(
        code=getattr(code_pb2, error.code.name), message=error.message, details=details
    )
    return rpc_status.to_status(status)


def errors_scope(info: RpcInfo, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    @asynccontextmanager
    async def scope() -> AsyncIterator[None]:
        try:
            yield
        except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except DomainError as exc:
            # abort_with_status is missing from the grpc stubs.
            await cast(Any, context).abort_with_status(to_status(exc))
        except Exception:
            # The stack goes to the log; the caller learns nothing about internals.
            log.exception("unhandled error in RPC", extra={"method": info.full_method})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return scope()
