"""compose.yaml: the stack on one host without Kubernetes, as a user runs it with Debian's
docker-compose 1.29. The images are the chart's (deploy/local-cluster/images.sh builds them
into the harness's own dockerd), MongoDB and LiveKit are the stand-ins of
deploy/compose/standins.env; everything is reached through the ports published on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from livekit import api

from tests.support.caller import Caller, until
from tests.support.compose import (
    COMPOSE_FILE,
    DOCKER_COMPOSE,
    SYS_NET,
    ComposeProject,
    build_images,
    docker,
    harness_dockerd,
    require_compose_prerequisites,
)
from tests.support.processes import IN_CI
from tests.support.state import event
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit import auth
from voiceagent_backbone.servicekit.ids import uuid7

TENANT = "compose"
USER = "user-compose"
SAID = "My favourite colour is blue."
ASKED = "Which colour do I like?"
ROOM = "compose-room"
AGENT_TENANT = "default"  # compose.yaml's AGENT_TENANT
AGENT_NAME = "voiceagent"  # compose.yaml's AGENT_NAME
CALLER_USER = "user-e2e"  # tests/support/caller.py's participant metadata
LONG_RUNNING = ("mongodb", "state", "context", "agent", "livekit")
SERVING = health_pb2.HealthCheckResponse.SERVING


# -- the file as compose resolves it (no daemon needed) ------------------------------------


def compose_config(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not os.access(DOCKER_COMPOSE, os.X_OK):
        reason = f"{DOCKER_COMPOSE} is not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    # An empty env file: a developer's .env must not decide what is checked here.
    no_env = tmp_path / "empty.env"
    no_env.touch()
    return subprocess.run(
        [str(DOCKER_COMPOSE), "--env-file", str(no_env), "-f", str(COMPOSE_FILE), "config"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_refuses_to_start_without_the_jwt_key_and_names_the_variable(
    tmp_path: Path,
) -> None:
    result = compose_config({"OPENAI_API_KEY": "sk-x"}, tmp_path)
    assert result.returncode != 0
    assert "set VOICEAGENT_JWT_KEY to a random key of at least 32 characters" in result.stderr


def test_compose_defaults_are_the_published_images_hardened_on_loopback(tmp_path: Path) -> None:
    result = compose_config({"VOICEAGENT_JWT_KEY": "k" * 32, "OPENAI_API_KEY": "sk-x"}, tmp_path)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    assert services["mongodb"]["image"] == "mongo:8.0.15"
    assert services["livekit"]["image"] == "livekit/livekit-server:v1.13.5"
    for name in ("state", "context", "agent"):
        assert services[name]["image"] == f"voiceagent-{name}:dev"
        assert services[name]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert services[name]["build"]["target"] == name
    for name in LONG_RUNNING:
        service = services[name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "/tmp" in service["tmpfs"], name
        assert not service["user"].startswith("0"), name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert "ports" not in services["mongodb"], "MongoDB has no authentication"
    assert services["volume-owners"]["cap_add"] == ["CHOWN"]
    assert services["volume-owners"]["network_mode"] == "none"


# -- the stack, for real ------------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ComposeProject]:
    """A compose project on the harness's dockerd with every image built; afterwards nothing
    of the project is left, failure or not."""
    require_compose_prerequisites()
    log = tmp_path / "compose.log"
    project = ComposeProject(
        log,
        jwt_key=secrets.token_hex(32),
        # Not LiveKit's development pair: the variables reach both the server and the agent.
        livekit_api_key="compose-test",
        livekit_api_secret=secrets.token_hex(24),
    )
    with harness_dockerd(log):
        build_images(log)
        try:
            yield project
        finally:
            project.remove_everything()
            left = project.leftovers() + project.tagged_images()
    assert not left, f"left behind by {project.name}: {left}"
    bridges = [b for b in sorted(project.bridges) if (SYS_NET / b).exists()]
    assert not bridges, f"bridges of {project.name} still on the host: {bridges}"


def metadata(key: str, tenant: str, scopes: str) -> tuple[tuple[str, str], ...]:
    token = auth.mint_token(key, tenant=tenant, scopes=scopes.split(), ttl_s=600)
    return (("authorization", f"Bearer {token}"),)


async def serving(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def history(stub: state_pb2_grpc.StateServiceStub, conversation_id: str, md: Any) -> Any:
    reply = await stub.GetHistory(
        pb.GetHistoryRequest(conversation_id=conversation_id, last_n=10), metadata=md, timeout=10
    )
    return reply.events


async def remembered(stack: ComposeProject, turn: pb.Event, md: Any) -> bool:
    """context_svc, following state_svc's feed, offers TURN as memory for the question."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('context')}") as channel:
        stub = context_pb2_grpc.ContextServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Enrich(
            cpb.EnrichRequest(user_id=USER, text=ASKED), metadata=md, timeout=10
        )
    return any(
        item.source == cpb.SOURCE_KIND_MEMORY
        and item.event_id == turn.event_id
        and turn.text in item.text
        for item in reply.items
    )


# A cold machine builds the base image and every image first (about 3 minutes).
@pytest.mark.timeout(1200)
async def test_compose_stack_serves_a_conversation_on_one_host(stack: ComposeProject) -> None:
    # `docker-compose build` makes the very images the harness (and the chart) runs.
    built = await asyncio.to_thread(stack.build)
    for service, image_id in built.items():
        harness = docker("image", "inspect", "--format", "{{.Id}}", stack.image(service, "e2e"))
        assert image_id == harness.strip(), service
    await asyncio.to_thread(stack.up)
    await asyncio.to_thread(stack.wait_healthy)

    state_md = metadata(stack.jwt_key, TENANT, "state.read state.write")
    context_md = metadata(stack.jwt_key, TENANT, "context.read")
    state_address = f"127.0.0.1:{stack.port('state')}"
    conversation_id = str(uuid7())
    said, answered = event(text=SAID), event(pb.EVENT_TYPE_AGENT_MESSAGE, "Noted.", pb.ROLE_AGENT)

    async with grpc.aio.insecure_channel(state_address) as channel:
        assert await serving(channel, "voiceagent.state.v1.StateService") == SERVING
        state = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
        await state.CreateConversation(
            pb.CreateConversationRequest(
                conversation_id=conversation_id, room_name="compose-api", user_ids=[USER]
            ),
            metadata=state_md,
            timeout=10,
        )
        request = pb.AppendEventsRequest(conversation_id=conversation_id, events=[said, answered])
        first = await state.AppendEvents(request, metadata=state_md, timeout=10)
        again = await state.AppendEvents(request, metadata=state_md, timeout=10)
        assert [r.seq for r in first.results] == [1, 2]
        assert [(r.seq, r.duplicate) for r in again.results] == [(1, True), (2, True)]
        events = await history(state, conversation_id, state_md)
        assert [(e.seq, e.text) for e in events] == [(1, SAID), (2, "Noted.")]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('context')}") as channel:
        assert await serving(channel, "voiceagent.context.v1.ContextService") == SERVING

    async def memory() -> bool:
        return await remembered(stack, said, context_md)

    await until(memory, "context_svc to offer the stored turn as memory", 60)

    await agent_takes_a_call(stack)

    # The data is on volumes: `down` without -v and `up` again keep it.
    await asyncio.to_thread(stack.compose, "down")
    await asyncio.to_thread(stack.up)
    await asyncio.to_thread(stack.wait_healthy)
    async with grpc.aio.insecure_channel(state_address) as channel:
        state = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
        events = await history(state, conversation_id, state_md)
        assert [e.event_id for e in events] == [said.event_id, answered.event_id]
    await until(memory, "context_svc's memory after the restart", 60)

    await asyncio.to_thread(stack.down)
    assert await asyncio.to_thread(stack.leftovers) == []


def agent_health(stack: ComposeProject, path: str) -> str:
    url = f"http://127.0.0.1:{stack.port('agent_health')}{path}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


async def agent_takes_a_call(stack: ComposeProject) -> None:
    """The worker is registered with LiveKit: a dispatched room gets the agent, which opens
    the conversation in state_svc (as the agent's tenant)."""
    assert await asyncio.to_thread(agent_health, stack, "/") == "OK"
    worker = json.loads(await asyncio.to_thread(agent_health, stack, "/worker"))
    assert worker["agent_name"] == AGENT_NAME
    port = stack.port("livekit")
    livekit = api.LiveKitAPI(
        f"http://127.0.0.1:{port}", stack.livekit_api_key, stack.livekit_api_secret
    )
    caller = Caller()
    try:
        await livekit.room.create_room(api.CreateRoomRequest(name=ROOM))
        await caller.join_url(
            f"ws://127.0.0.1:{port}", stack.livekit_api_key, stack.livekit_api_secret, ROOM
        )
        await dispatch_until_the_agent_joins(livekit)

        async def conversation_id() -> str:
            rooms = await livekit.room.list_rooms(api.ListRoomsRequest(names=[ROOM]))
            raw = rooms.rooms[0].metadata if rooms.rooms else ""
            return str(json.loads(raw).get("conversation_id", "")) if raw else ""

        opened = await until(conversation_id, "the agent's conversation id in the room", 60)
    finally:
        await caller.leave()
        # Ends the job, so `down` does not wait for the worker's drain.
        with contextlib.suppress(api.TwirpError):
            await livekit.room.delete_room(api.DeleteRoomRequest(room=ROOM))
        await livekit.aclose()
    md = metadata(stack.jwt_key, AGENT_TENANT, "state.read")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.port('state')}") as channel:
        state = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = await state.GetConversation(
            pb.GetConversationRequest(conversation_id=opened), metadata=md, timeout=10
        )
    assert reply.conversation.room_name == ROOM
    assert reply.conversation.agent_name == AGENT_NAME
    assert CALLER_USER in reply.conversation.user_ids


async def dispatch_until_the_agent_joins(livekit: api.LiveKitAPI, timeout_s: float = 90) -> None:
    """The worker's health endpoint answers before the worker has registered, and LiveKit
    drops a dispatch that finds no worker: dispatch again until the agent joins the room."""

    async def agent_joined() -> bool:
        listed = await livekit.room.list_participants(api.ListParticipantsRequest(room=ROOM))
        return api.ParticipantInfo.AGENT in [p.kind for p in listed.participants]

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        dispatch = await livekit.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=ROOM)
        )
        try:
            await until(agent_joined, "the agent in the room", 10)
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await livekit.agent_dispatch.delete_dispatch(dispatch.id, ROOM)
