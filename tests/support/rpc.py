"""Calling services by full method name, without generated stubs (for the probe service)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message

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
