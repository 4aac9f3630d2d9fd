"""A small service built on servicekit, for testing servicekit itself.

It uses generic handlers over well-known protobuf types, so it needs no .proto of its own.
Run it as a process with `python -m tests.support.probe_service` (settings prefix PROBE_).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import duration_pb2, empty_pb2, struct_pb2, wrappers_pb2
from pydantic_settings import SettingsConfigDict

from voiceagent_backbone.servicekit import auth, server
from voiceagent_backbone.servicekit.config import ServiceSettings
from voiceagent_backbone.servicekit.errors import InvalidArgument

SERVICE = "servicekit.test.v1.ProbeService"


class ProbeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PROBE_", extra="ignore", frozen=True)


def _method(name: str) -> str:
    return f"/{SERVICE}/{name}"


METHOD_SCOPES = {
    _method("Sleep"): "probe.read",
    _method("Validate"): "probe.read",
    _method("Abort"): "probe.read",
    _method("Boom"): "probe.read",
    _method("Whoami"): "probe.read",
    _method("Count"): "probe.read",
    _method("AdminOnly"): "probe.admin",
    # "Undeclared" is deliberately missing: it must be denied.
}


async def sleep(request: duration_pb2.Duration, context: Any) -> empty_pb2.Empty:
    await asyncio.sleep(request.ToTimedelta().total_seconds())
    return empty_pb2.Empty()


async def validate(request: wrappers_pb2.StringValue, context: Any) -> wrappers_pb2.StringValue:
    if not request.value:
        raise InvalidArgument.single("value", "must not be empty")
    return request


async def abort(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "aborted by the handler")
    raise AssertionError("unreachable")


async def boom(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
    raise RuntimeError("database password is hunter2 at /srv/secret/path")


async def whoami(request: empty_pb2.Empty, context: Any) -> struct_pb2.Struct:
    principal = auth.current_principal()
    result = struct_pb2.Struct()
    result.update({"tenant": principal.tenant_id, "scopes": sorted(principal.scopes)})
    return result


async def count(request: wrappers_pb2.Int32Value, context: Any) -> AsyncIterator[Any]:
    for i in range(request.value):
        yield wrappers_pb2.Int32Value(value=i)
        await asyncio.sleep(0)


def _unary(fn: Any, request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request_type.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


def register(grpc_server: grpc.aio.Server) -> None:
    handlers = {
        "Sleep": _unary(sleep, duration_pb2.Duration),
        "Validate": _unary(validate, wrappers_pb2.StringValue),
        "Abort": _unary(abort, empty_pb2.Empty),
        "Boom": _unary(boom, empty_pb2.Empty),
        "Whoami": _unary(whoami, empty_pb2.Empty),
        "AdminOnly": _unary(whoami, empty_pb2.Empty),
        "Undeclared": _unary(whoami, empty_pb2.Empty),
        "Count": grpc.unary_stream_rpc_method_handler(
            count,
            request_deserializer=wrappers_pb2.Int32Value.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        ),
    }
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def definition() -> server.ServiceDefinition:
    return server.ServiceDefinition(
        name="probe",
        service_names=[SERVICE],
        method_scopes=METHOD_SCOPES,
        register=register,
    )


@contextlib.asynccontextmanager
async def factory(settings: ServiceSettings) -> AsyncIterator[server.ServiceDefinition]:
    yield definition()


if __name__ == "__main__":
    server.main(ProbeSettings(), factory, "probe")
