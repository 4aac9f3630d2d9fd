"""The authentication and authorization matrix: every RPC of both services against every kind
of credential, with the expected code, and another tenant's data never in an answer.

Credentials: none, a bad signature, expired, a wrong audience, every scope alone, and all
scopes but the one the method needs. A method answers UNAUTHENTICATED to the first four,
PERMISSION_DENIED to a token without its scope, and with the right scope anything but
those two (the empty request is usually INVALID_ARGUMENT), and never INTERNAL or UNKNOWN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from tests.support.context import context_settings, running_context
from tests.support.state import event, running_state, state_settings
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.context_svc import service as context_service
from voiceagent_backbone.servicekit import auth
from voiceagent_backbone.state_svc import service as state_service

AUDIENCE = "voiceagent-test"
STATE_SCOPES = (
    "state.read",
    "state.write",
    "state.admin",
    "state.feed",
    "state.index",
    "state.knowledge",
)
CONTEXT_SCOPES = ("context.read", "context.write", "context.admin")
AUTH_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@dataclass(frozen=True)
class Method:
    full_name: str  # /pkg.Service/Method
    request: type[Message]
    streaming: bool
    required: str


def methods(descriptor: Any, scopes: dict[str, str], module: Any) -> list[Method]:
    out = []
    for m in descriptor.methods:
        full = f"/{descriptor.full_name}/{m.name}"
        request_type = getattr(module, m.input_type.name)
        out.append(Method(full, request_type, m.server_streaming, scopes[full]))
    return out


STATE_METHODS = methods(pb.DESCRIPTOR.services_by_name["StateService"], state_service.SCOPES, pb)
CONTEXT_METHODS = methods(
    cpb.DESCRIPTOR.services_by_name["ContextService"], context_service.SCOPES, cpb
)


@dataclass
class Services:
    state_channel: grpc.aio.Channel
    context_channel: grpc.aio.Channel
    key: str


@pytest.fixture(scope="module")
async def services(
    tmp_path_factory: pytest.TempPathFactory, jwt_key: str
) -> AsyncIterator[Services]:
    tmp = tmp_path_factory.mktemp("auth-matrix")
    settings = state_settings("sqlite", tmp, jwt_key, None, auth_jwt_audience=AUDIENCE)
    async with running_state(settings, jwt_key) as state:
        context = context_settings(
            tmp,
            jwt_key,
            state.port,
            auth_jwt_audience=AUDIENCE,
            state_token=token(jwt_key, "platform", "state.read state.feed"),
        )
        async with running_context(context, jwt_key) as ctx:
            yield Services(state.channel, ctx.channel, jwt_key)


def token(key: str, tenant: str, scopes: str, **kwargs: Any) -> str:
    kwargs.setdefault("audience", AUDIENCE)
    return auth.mint_token(key, tenant=tenant, scopes=scopes.split(), **kwargs)


async def call(
    channel: grpc.aio.Channel, method: Method, bearer: str | None, request: Message | None = None
) -> tuple[grpc.StatusCode, list[bytes]]:
    """The call's final code and what it answered (the raw reply bytes)."""
    metadata = (("authorization", f"Bearer {bearer}"),) if bearer else ()
    payload = request if request is not None else method.request()
    if request is None and "stop_at_end" in payload.DESCRIPTOR.fields_by_name:
        payload.stop_at_end = True  # type: ignore[attr-defined]  # a feed call that ends
    answers: list[bytes] = []
    try:
        if method.streaming:
            stream = channel.unary_stream(
                method.full_name,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            async for item in stream(payload, metadata=metadata, timeout=5):
                answers.append(item)
        else:
            unary = channel.unary_unary(
                method.full_name,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            answers.append(await unary(payload, metadata=metadata, timeout=5))
    except grpc.aio.AioRpcError as exc:
        return exc.code(), answers
    return grpc.StatusCode.OK, answers


def channel_for(services: Services, method: Method) -> grpc.aio.Channel:
    return (
        services.state_channel if "StateService" in method.full_name else services.context_channel
    )


def scopes_of(method: Method) -> tuple[str, ...]:
    return STATE_SCOPES if "StateService" in method.full_name else CONTEXT_SCOPES


ALL_METHODS = STATE_METHODS + CONTEXT_METHODS


@pytest.mark.parametrize(
    "method", ALL_METHODS, ids=[m.full_name.rsplit("/", 1)[1] for m in ALL_METHODS]
)
async def test_every_credential_gets_the_expected_code(services: Services, method: Method) -> None:
    channel = channel_for(services, method)
    key = services.key
    everything = " ".join(scopes_of(method))
    cases = {
        "no token": (None, {grpc.StatusCode.UNAUTHENTICATED}),
        "bad signature": (
            token("another-key-" + "x" * 40, "tenant-a", everything),
            {grpc.StatusCode.UNAUTHENTICATED},
        ),
        "expired": (
            token(key, "tenant-a", everything, ttl_s=-60),
            {grpc.StatusCode.UNAUTHENTICATED},
        ),
        "wrong audience": (
            token(key, "tenant-a", everything, audience="someone-else"),
            {grpc.StatusCode.UNAUTHENTICATED},
        ),
        "not a JWT": ("not.a.jwt", {grpc.StatusCode.UNAUTHENTICATED}),
    }
    for case, (bearer, expected) in cases.items():
        code, answers = await call(channel, method, bearer)
        assert code in expected, (case, code)
        assert not answers, (case, "answered before authenticating")

    for scope in scopes_of(method):
        code, _ = await call(channel, method, token(key, "tenant-a", scope))
        principal = auth.Principal("tenant-a", "", frozenset({scope}))
        if principal.allows(method.required):
            assert code not in AUTH_CODES | NEVER, (scope, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (scope, code)

    others = [s for s in scopes_of(method) if not s.endswith(".admin") and s != method.required]
    code, answers = await call(channel, method, token(key, "tenant-a", " ".join(others)))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (others, code)
    assert not answers


KNOWLEDGE_METHODS = [m for m in STATE_METHODS if m.required == "state.knowledge"]


@pytest.mark.parametrize(
    "method", KNOWLEDGE_METHODS, ids=[m.full_name.rsplit("/", 1)[1] for m in KNOWLEDGE_METHODS]
)
async def test_knowledge_needs_its_platform_scope(services: Services, method: Method) -> None:
    """The tenant is named in the request: a tenant's token, even its admin's with the other
    platform scopes, reaches no tenant's knowledge; state.knowledge alone does."""
    assert len(KNOWLEDGE_METHODS) == 7
    others = " ".join(s for s in STATE_SCOPES if s != "state.knowledge")
    code, answers = await call(
        services.state_channel, method, token(services.key, "tenant-a", others)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert not answers
    code, _ = await call(
        services.state_channel, method, token(services.key, "platform", "state.knowledge")
    )
    assert code not in AUTH_CODES | NEVER, code


async def test_another_tenant_gets_nothing_of_tenant_a(services: Services) -> None:
    key = services.key
    a = (("authorization", f"Bearer {token(key, 'tenant-a', ' '.join(STATE_SCOPES[:3]))}"),)
    b_state = token(key, "tenant-b", " ".join(STATE_SCOPES[:3]))
    b_context = token(key, "tenant-b", " ".join(CONTEXT_SCOPES))
    stub = state_pb2_grpc.StateServiceStub(services.state_channel)  # type: ignore[no-untyped-call]
    created = await stub.CreateConversation(
        pb.CreateConversationRequest(room_name="a-room", user_ids=["ana"]), metadata=a
    )
    cid = created.conversation.conversation_id
    secret = "secret-of-tenant-a"
    await stub.AppendEvents(
        pb.AppendEventsRequest(conversation_id=cid, events=[event(text=secret)]), metadata=a
    )
    await stub.SaveSnapshot(
        pb.SaveSnapshotRequest(conversation_id=cid, snapshot=pb.Snapshot(current_agent=secret)),
        metadata=a,
    )
    await stub.UpsertUser(
        pb.UpsertUserRequest(user=pb.UserProfile(user_id="ana", display_name=secret)), metadata=a
    )

    def named(name: str) -> Method:
        return next(m for m in ALL_METHODS if m.full_name.endswith(f"/{name}"))

    probes: list[tuple[str, Message, set[grpc.StatusCode]]] = [
        (
            "GetConversation",
            pb.GetConversationRequest(conversation_id=cid),
            {grpc.StatusCode.NOT_FOUND},
        ),
        ("GetHistory", pb.GetHistoryRequest(conversation_id=cid), {grpc.StatusCode.NOT_FOUND}),
        (
            "GetLatestSnapshot",
            pb.GetLatestSnapshotRequest(conversation_id=cid),
            {grpc.StatusCode.NOT_FOUND},
        ),
        (
            "AppendEvents",
            pb.AppendEventsRequest(conversation_id=cid, events=[event(text="from b")]),
            {grpc.StatusCode.NOT_FOUND},
        ),
        (
            "EndConversation",
            pb.EndConversationRequest(conversation_id=cid),
            {grpc.StatusCode.NOT_FOUND},
        ),
        ("GetUser", pb.GetUserRequest(user_id="ana"), {grpc.StatusCode.NOT_FOUND}),
        ("ListConversations", pb.ListConversationsRequest(user_id="ana"), {grpc.StatusCode.OK}),
        ("ExportUserData", pb.ExportUserDataRequest(user_id="ana"), {grpc.StatusCode.OK}),
        ("Watch", pb.WatchRequest(stop_at_end=True), {grpc.StatusCode.OK}),
        (
            "FindOpenConversation",
            pb.FindOpenConversationRequest(room_name="a-room"),
            {grpc.StatusCode.OK},
        ),
    ]
    a_state = token(key, "tenant-a", " ".join(STATE_SCOPES[:3]))
    for name, request, expected in probes:
        # Tenant A's own answer holds the secret (or the id): B's must not.
        if name not in ("AppendEvents", "EndConversation", "Watch", "FindOpenConversation"):
            code, own = await call(services.state_channel, named(name), a_state, request)
            assert code == grpc.StatusCode.OK, (name, code)
            assert any(secret.encode() in x or cid.encode() in x for x in own), name
        code, answers = await call(services.state_channel, named(name), b_state, request)
        assert code in expected, (name, code)
        assert all(secret.encode() not in answer for answer in answers), name
        assert all(cid.encode() not in answer for answer in answers), name
    # Conversation ids are per tenant: B creating one with A's id learns nothing of A's
    # (ALREADY_EXISTS would say it exists) and leaves A's alone.
    code, answers = await call(
        services.state_channel,
        named("CreateConversation"),
        b_state,
        pb.CreateConversationRequest(conversation_id=cid, room_name="b-room"),
    )
    assert code == grpc.StatusCode.OK
    (reply,) = [pb.CreateConversationResponse.FromString(answer) for answer in answers]
    assert reply.created
    assert reply.conversation.tenant_id == "tenant-b"
    assert all(secret.encode() not in answer for answer in answers)
    code, own = await call(
        services.state_channel,
        named("GetHistory"),
        a_state,
        pb.GetHistoryRequest(conversation_id=cid),
    )
    assert code == grpc.StatusCode.OK
    assert any(secret.encode() in answer for answer in own)
    code, answers = await call(
        services.context_channel,
        named("Enrich"),
        b_context,
        cpb.EnrichRequest(user_id="ana", text=secret),
    )
    assert code == grpc.StatusCode.OK
    assert all(secret.encode() not in answer for answer in answers)
