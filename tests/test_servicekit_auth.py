"""Authentication and authorization: bearer JWTs, tenant and scopes in the call context."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from google.protobuf import empty_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import TokenFactory
from tests.support.rpc import bearer, probe_call

WHOAMI = "Whoami"


async def _code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def test_missing_token_is_unauthenticated(probe_channel: grpc.aio.Channel) -> None:
    call = probe_call(probe_channel, WHOAMI, struct_pb2.Struct)
    assert await _code_of(call(empty_pb2.Empty())) == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_signature_is_unauthenticated(probe_channel: grpc.aio.Channel) -> None:
    forged = jwt.encode(
        {"tenant": "tenant-a", "scope": "probe.read", "exp": int(time.time()) + 60},
        "not-the-server-key-but-long-enough-for-hs256",
        algorithm="HS256",
    )
    call = probe_call(probe_channel, WHOAMI, struct_pb2.Struct)
    code = await _code_of(call(empty_pb2.Empty(), metadata=bearer(forged)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_expired_token_is_unauthenticated(
    probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    expired = make_token(ttl_s=-60)
    call = probe_call(probe_channel, WHOAMI, struct_pb2.Struct)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(empty_pb2.Empty(), metadata=bearer(expired))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in (info.value.details() or "")


async def test_token_living_past_the_maximum_lifetime_is_unauthenticated(
    probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    """A token that expires in a year is refused (the default maximum is a day); one of an
    hour is not."""
    call = probe_call(probe_channel, WHOAMI, struct_pb2.Struct)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(empty_pb2.Empty(), metadata=bearer(make_token(ttl_s=366 * 24 * 3600)))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "too far ahead" in (info.value.details() or "")
    await call(empty_pb2.Empty(), metadata=bearer(make_token(ttl_s=3600)))


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer not.a.jwt", "token"])
async def test_malformed_authorization_is_unauthenticated(
    probe_channel: grpc.aio.Channel, header: str
) -> None:
    call = probe_call(probe_channel, WHOAMI, struct_pb2.Struct)
    code = await _code_of(call(empty_pb2.Empty(), metadata=(("authorization", header),)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_token_without_tenant_is_unauthenticated(
    probe_channel: grpc.aio.Channel, jwt_key: str
) -> None:
    token = jwt.encode({"scope": "probe.read", "exp": int(time.time()) + 60}, jwt_key)
    call = probe_call(probe_channel, WHOAMI, struct_pb2.Struct)
    code = await _code_of(call(empty_pb2.Empty(), metadata=bearer(token)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_valid_token_puts_tenant_and_scopes_in_context(
    probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    call = probe_call(probe_channel, WHOAMI, struct_pb2.Struct)
    token = make_token(tenant="acme", scopes="probe.read extra.scope")
    reply = await call(empty_pb2.Empty(), metadata=bearer(token))
    assert reply["tenant"] == "acme"
    assert list(reply["scopes"]) == ["extra.scope", "probe.read"]


async def test_missing_scope_is_permission_denied(
    probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    call = probe_call(probe_channel, "AdminOnly", struct_pb2.Struct)
    code = await _code_of(call(empty_pb2.Empty(), metadata=bearer(make_token())))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    admin = make_token(scopes="probe.admin")
    reply = await call(empty_pb2.Empty(), metadata=bearer(admin))
    assert reply["tenant"] == "tenant-a"


async def test_method_without_declared_scope_is_denied(
    probe_channel: grpc.aio.Channel, make_token: TokenFactory
) -> None:
    call = probe_call(probe_channel, "Undeclared", struct_pb2.Struct)
    token = make_token(scopes="probe.admin probe.read")
    code = await _code_of(call(empty_pb2.Empty(), metadata=bearer(token)))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_health_and_reflection_need_no_token(probe_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(probe_channel)
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(probe_channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: list[str] = []
    async for response in stub.ServerReflectionInfo(iter([request])):
        names = [s.name for s in response.list_services_response.service]
    assert "grpc.health.v1.Health" in names
    assert "servicekit.test.v1.ProbeService" in names
