"""Calling services by full method name, without generated stubs (for the probe service)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.probe_service import SERVICE


def probe_call(
    channel: grpc.aio.Channel, method: str, response_type: type[Message] = empty_pb2.Empty
) -> Any:
    """A unary callable for /ProbeService/<method>."""
    return channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields an INVALID_ARGUMENT names (its google.rpc.BadRequest detail)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status: {error.code().name} {error.details()}"
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [v.field for v in bad.field_violations]
