"""Error mapping: domain errors to status codes with google.rpc details, no internals leaked."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import TokenFactory
from tests.support.rpc import bearer, probe_call


async def test_invalid_argument_carries_bad_request_field_violations(
    probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    call = probe_call(probe_channel, "Validate", wrappers_pb2.StringValue)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(wrappers_pb2.StringValue(value=""), metadata=bearer(make_token()))
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("value", "must not be empty")
    ]


async def test_valid_input_passes_through(
    probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    call = probe_call(probe_channel, "Validate", wrappers_pb2.StringValue)
    reply = await call(wrappers_pb2.StringValue(value="ok"), metadata=bearer(make_token()))
    assert reply.value == "ok"


async def test_unexpected_exception_is_internal_without_internals(
    probe_channel: grpc.aio.Channel,
    make_token: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    call = probe_call(probe_channel, "Boom")
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as info:
        await call(empty_pb2.Empty(), metadata=bearer(make_token()))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    details = info.value.details() or ""
    assert details == "internal error"
    assert "hunter2" not in details
    assert "/srv/secret" not in details
    # The stack is in the service's log, for the operator.
    logged = [r for r in caplog.records if r.getMessage() == "unhandled error in RPC"]
    assert logged
    assert logged[0].exc_info is not None
    assert "RuntimeError" in "".join(logging.Formatter().formatException(logged[0].exc_info))
