"""Crash recovery with a real livekit-server, two agent workers and two recovery_svc
replicas: a job that dies mid-call is replaced within seconds, without the test
dispatching anything, and the caller hears the resumed greeting; a call that ends, a user
who leaves and a drained worker bring no new agent; two replicas dispatch once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToJson
from livekit import api

from tests.apps.hanging_up_agent import AGENT_NAME as HANGING_UP
from tests.support.agent import AGENT_NAME, AgentWorker, running_agent_worker, worker_env
from tests.support.caller import Caller, until
from tests.support.fake_openai import FakeOpenAI, fake_openai
from tests.support.livekit import LiveKitServer, livekit_server
from tests.support.processes import ChildProcess, free_port, wait_until
from tests.support.recovery import (
    RecoveryReplica,
    job_processes,
    recovery_ports,
    start_recovery,
)
from tests.support.state import StateHandle, running_state, state_settings
from voiceagent_backbone.api.recovery.v1 import recovery_pb2 as rpb
from voiceagent_backbone.api.recovery.v1 import recovery_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.recovery_svc.config import RecoverySettings
from voiceagent_backbone.recovery_svc.domain import RecoveryDomain
from voiceagent_backbone.recovery_svc.ledger import StateLedger
from voiceagent_backbone.recovery_svc.model import LostJob
from voiceagent_backbone.recovery_svc.rooms import LiveKitRooms
from voiceagent_backbone.recovery_svc.service import state_token
from voiceagent_backbone.servicekit import auth
from voiceagent_backbone.servicekit.client import create_channel
from voiceagent_backbone.servicekit.ids import uuid7

pytestmark = pytest.mark.livekit

WELCOME_BACK = "Welcome back, Eve! Shall we pick up where we left off?"
RECOVERY_ENV = {
    "RECOVERY_RECONCILE_INTERVAL_S": "1",
    "RECOVERY_JOIN_TIMEOUT_S": "15",
}


@dataclass
class Stack:
    livekit: LiveKitServer
    state: StateHandle
    openai: FakeOpenAI
    replicas: list[RecoveryReplica]
    workdir: Path
    jwt_key: str
    workers: list[AgentWorker] = field(default_factory=list)

    def dispatches(self) -> int:
        """Recovery attempts that ended, by any outcome, over both replicas."""
        return sum(int(r.metric("recovery_redispatch_total")) for r in self.replicas)

    def webhooks(self, result: str) -> int:
        return sum(int(r.metric("recovery_webhooks_total", result=result)) for r in self.replicas)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recovery")


@pytest.fixture(scope="module")
def module_jwt_key() -> str:
    return "recovery-test-key-" + "k" * 32


@contextlib.contextmanager
def servers(workdir: Path, ports: list[tuple[int, int, int]]) -> Iterator[LiveKitServer]:
    urls = [f"http://127.0.0.1:{p[1]}/livekit/webhook" for p in ports]
    with livekit_server(workdir, webhook_urls=urls) as lk:
        yield lk


@pytest.fixture(scope="module")
async def stack(workdir: Path, module_jwt_key: str) -> AsyncIterator[Stack]:
    """One livekit-server (webhooks to both replicas), state_svc, the fake OpenAI and two
    recovery_svc replicas for the module; each test has its own room and workers."""
    ports = [recovery_ports(), recovery_ports()]
    jwt_key = module_jwt_key
    with servers(workdir, ports) as lk, fake_openai() as openai:
        async with running_state(state_settings("sqlite", workdir, jwt_key, None), jwt_key) as st:
            replicas = []
            try:
                for i, p in enumerate(ports):
                    replicas.append(
                        start_recovery(
                            workdir, f"recovery{i}", p, lk, st.port, jwt_key, **RECOVERY_ENV
                        )
                    )
                yield Stack(lk, st, openai, replicas, workdir, jwt_key)
            finally:
                for r in replicas:
                    r.process.stop()


@contextlib.contextmanager
def workers(stack: Stack, tag: str, count: int = 2) -> Iterator[list[AgentWorker]]:
    """`count` agent workers attending at both replicas, started side by side."""
    target = ",".join(f"127.0.0.1:{r.port}" for r in stack.replicas)
    managers = []
    for i in range(count):
        directory = stack.workdir / f"{tag}-worker{i}"
        directory.mkdir()
        managers.append(
            running_agent_worker(
                directory,
                stack.livekit,
                f"127.0.0.1:{stack.state.port}",
                f"127.0.0.1:{free_port()}",
                stack.jwt_key,
                stack.openai.base_url,
                log_name="worker.log",
                extra_env={
                    "AGENT_RECOVERY_TARGET": f"ipv4:{target}",
                    # Load by jobs, not by this machine's CPU, which the whole stack keeps
                    # busy (livekit-server gives no job to a worker at 70 %).
                    "AGENT_MAX_JOBS": "4",
                },
            )
        )
    with contextlib.ExitStack() as exit_stack:
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(m.__enter__) for m in managers]
        for manager, future in zip(managers, futures, strict=True):
            if future.exception() is None:
                exit_stack.push(manager)
        started = [f.result() for f in futures]  # raises the first failure, after cleanup
        stack.workers = started
        yield started


class Call:
    """A caller in a room with the agent dispatched once, as an app would."""

    def __init__(self, stack: Stack, room: str) -> None:
        self.stack = stack
        self.room = room
        self.caller = Caller()
        self.lkapi = api.LiveKitAPI(
            stack.livekit.http_url, stack.livekit.api_key, stack.livekit.api_secret
        )
        self.max_agents = 0
        # recovery_svc's count of recovery attempts before this call (the stack is shared).
        self.attempts_before = stack.dispatches()
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> str:
        await self.lkapi.room.create_room(api.CreateRoomRequest(name=self.room))
        await self.caller.join(self.stack.livekit, self.room)
        await self.lkapi.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=self.room)
        )
        self._watch = asyncio.create_task(self._count_agents())

        async def greeted() -> bool:
            return self.caller.heard_frames > 10

        await until(greeted, "the agent's greeting", 60)
        return await self.conversation_id()

    async def _count_agents(self) -> None:
        # Never two agents in the room: sampled all along the call.
        while True:
            listed = await self.lkapi.room.list_participants(
                api.ListParticipantsRequest(room=self.room)
            )
            agents = [p for p in listed.participants if p.kind == api.ParticipantInfo.AGENT]
            self.max_agents = max(self.max_agents, len(agents))
            await asyncio.sleep(0.1)

    async def conversation_id(self) -> str:
        import json

        async def named() -> str:
            rooms = await self.lkapi.room.list_rooms(api.ListRoomsRequest(names=[self.room]))
            meta = json.loads(rooms.rooms[0].metadata or "{}") if rooms.rooms else {}
            return str(meta.get("conversation_id", ""))

        return str(await until(named, "the conversation id in room metadata"))

    async def dispatch_count(self) -> int:
        """Dispatches of the agent (livekit-server adds one for agents without a name)."""
        listed = await self.lkapi.agent_dispatch.list_dispatch(room_name=self.room)
        return len([d for d in listed if d.agent_name == AGENT_NAME])

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        await self.caller.leave()
        await self.lkapi.aclose()


@contextlib.asynccontextmanager
async def call(stack: Stack, room: str) -> AsyncIterator[Call]:
    c = Call(stack, room)
    try:
        yield c
    finally:
        await c.close()


async def history(stack: Stack, conversation_id: str) -> list[pb.Event]:
    reply = await stack.state.stub().GetHistory(
        pb.GetHistoryRequest(conversation_id=conversation_id, page_size=1000),
        metadata=stack.state.metadata(),
    )
    return list(reply.events)


def recovery_phases(events: list[pb.Event]) -> list[str]:
    return [
        pb.RecoveryPhase.Name(e.recovery.phase).removeprefix("RECOVERY_PHASE_")
        for e in events
        if e.type == pb.EVENT_TYPE_RECOVERY
    ]


def worker_holding_the_job(stack: Stack) -> tuple[AgentWorker, int]:
    for worker in stack.workers:
        pids = job_processes(worker.process.pid, stack.livekit)
        if pids:
            return worker, pids[0]
    raise AssertionError("no worker runs the call's job")


async def assert_recovered(stack: Stack, c: Call, conversation_id: str, heard: int) -> None:
    async def welcomed_back() -> bool:
        texts = [e.text for e in await history(stack, conversation_id)]
        return WELCOME_BACK in texts

    await until(welcomed_back, "the resumed greeting", 60)

    async def heard_again() -> bool:
        return c.caller.heard_frames > heard + 10

    await until(heard_again, "the new agent's voice", 30)
    events = await history(stack, conversation_id)
    phases = recovery_phases(events)
    # More than one attempt when a new job never joined (under load a worker's new process
    # may fail to start): each attempt is claimed, then dispatched; one recovery at the end.
    attempts = len(phases) // 2
    assert phases == ["CLAIMED", "DISPATCHED"] * attempts + ["RECOVERED"], phases
    steps = [e.recovery for e in events if e.type == pb.EVENT_TYPE_RECOVERY]
    assert [s.attempt for s in steps[:-1:2]] == list(range(1, attempts + 1))
    assert len({s.lost_job_id for s in steps}) == 1, "one loss, one recovery"
    recovered = steps[-1]
    assert recovered.new_identity
    assert recovered.new_identity != recovered.lost_identity
    assert recovered.agent_absent.ToTimedelta().total_seconds() > 0
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # The app's dispatch and the recovery's: an attempt deletes the dispatch of the one
    # before it, so that a late job cannot join too.
    assert await c.dispatch_count() == 2
    assert c.max_agents == 1, "two agents were in the room at once"


async def test_a_killed_job_process_is_replaced_and_the_caller_hears_it(stack: Stack) -> None:
    with workers(stack, "kill-job"):
        async with call(stack, "kill-job") as c:
            conversation_id = await c.start()
            worker, pid = worker_holding_the_job(stack)
            heard = c.caller.heard_frames
            os.kill(pid, signal.SIGKILL)
            await assert_recovered(stack, c, conversation_id, heard)
            assert worker.process.alive()


async def test_a_killed_worker_process_group_is_replaced(stack: Stack) -> None:
    with workers(stack, "kill-worker"):
        async with call(stack, "kill-worker") as c:
            conversation_id = await c.start()
            worker, _ = worker_holding_the_job(stack)
            heard = c.caller.heard_frames
            os.killpg(worker.process.pid, signal.SIGKILL)
            await assert_recovered(stack, c, conversation_id, heard)


async def assert_no_recovery(stack: Stack, c: Call, conversation_id: str) -> None:
    """Long enough for every path to have acted: the webhook's settle time and two
    reconcile rounds."""
    await asyncio.sleep(3)
    assert await c.dispatch_count() == 1, "the agent was dispatched again"
    assert stack.dispatches() == c.attempts_before
    assert not recovery_phases(await history(stack, conversation_id))


async def conversation_status(stack: Stack, conversation_id: str) -> int:
    """UNSPECIFIED while the conversation the room names is not in state_svc yet (the job
    writes the room's metadata and sends the creation; under load the creation comes
    second)."""
    try:
        reply = await stack.state.stub().GetConversation(
            pb.GetConversationRequest(conversation_id=conversation_id),
            metadata=stack.state.metadata(),
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return int(pb.CONVERSATION_STATUS_UNSPECIFIED)
    return int(reply.conversation.status)


async def test_the_user_leaving_brings_no_new_agent(stack: Stack) -> None:
    with workers(stack, "user-leaves"):
        async with call(stack, "user-leaves") as c:
            conversation_id = await c.start()
            await c.caller.leave()

            async def ended() -> bool:
                status = await conversation_status(stack, conversation_id)
                return status == pb.CONVERSATION_STATUS_ENDED

            await until(ended, "the conversation ended")
            await assert_no_recovery(stack, c, conversation_id)


async def test_a_drained_worker_brings_no_new_agent(stack: Stack) -> None:
    with workers(stack, "drain"):
        async with call(stack, "drain") as c:
            conversation_id = await c.start()
            worker, _ = worker_holding_the_job(stack)
            worker.process.signal(signal.SIGTERM)
            await asyncio.to_thread(worker.process.wait, 60)
            assert await conversation_status(stack, conversation_id) == (
                pb.CONVERSATION_STATUS_ENDED
            )
            await assert_no_recovery(stack, c, conversation_id)


async def test_an_agent_that_ends_the_call_is_not_brought_back(stack: Stack) -> None:
    target = ",".join(f"127.0.0.1:{r.port}" for r in stack.replicas)
    env = worker_env(
        stack.livekit,
        f"127.0.0.1:{stack.state.port}",
        f"127.0.0.1:{free_port()}",
        stack.jwt_key,
        stack.workdir / "spool",
        free_port(),
        free_port(),
        AGENT_RECOVERY_TARGET=f"ipv4:{target}",
        AGENT_MAX_JOBS="4",
        HEALTH_PORT=str(free_port()),
    )
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    app = ChildProcess(
        [sys.executable, "-m", "tests.apps.hanging_up_agent", "start"],
        stack.workdir / "hanging-up-agent.log",
        env=env,
    )
    try:
        wait_until(lambda: "registered worker" in app.output(), 60, "worker registration")
        async with call(stack, "hang-up") as c:
            await c.lkapi.room.create_room(api.CreateRoomRequest(name=c.room))
            await c.caller.join(stack.livekit, c.room)
            await c.lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=HANGING_UP, room=c.room)
            )
            conversation_id = await c.conversation_id()

            async def ended() -> bool:
                status = await conversation_status(stack, conversation_id)
                return status == pb.CONVERSATION_STATUS_ENDED

            await until(ended, "the agent ended the call")
            await asyncio.sleep(3)
            listed = await c.lkapi.agent_dispatch.list_dispatch(room_name=c.room)
            assert len([d for d in listed if d.agent_name == HANGING_UP]) == 1
            assert stack.dispatches() == c.attempts_before
            assert not recovery_phases(await history(stack, conversation_id))
    finally:
        app.stop(timeout_s=20)


async def test_two_replicas_deciding_the_same_loss_dispatch_once_then_give_up(
    stack: Stack,
) -> None:
    """Both replicas see the same lost job at the same moment (the claim in the log is all
    that keeps them apart); no worker takes the dispatch, so the attempts run out and the
    call is given up, with the reason in its log."""
    settings = RecoverySettings.model_validate(
        {
            "LIVEKIT_URL": stack.livekit.url,
            "LIVEKIT_API_KEY": stack.livekit.api_key,
            "LIVEKIT_API_SECRET": stack.livekit.api_secret,
            "state_target": f"127.0.0.1:{stack.state.port}",
            "auth_jwt_key": stack.jwt_key,
            "tenant": "tenant-a",
            "assign_timeout_s": 1.0,
            "max_attempts": 2,
            "retry_backoff_s": 0.2,
        }
    )
    room = "race"
    conversation_id = uuid7()
    await stack.state.stub().CreateConversation(
        pb.CreateConversationRequest(conversation_id=conversation_id, room_name=room),
        metadata=stack.state.metadata(),
    )
    async with call(stack, room) as c:
        await c.lkapi.room.create_room(api.CreateRoomRequest(name=room))
        await c.caller.join(stack.livekit, room)
        channel = create_channel(f"127.0.0.1:{stack.state.port}", token=state_token(settings))
        rooms = [LiveKitRooms(stack.livekit.http_url, "devkey", "secret") for _ in range(2)]
        ledger = StateLedger(state_pb2_grpc.StateServiceStub(channel))  # type: ignore[no-untyped-call]
        domains = [RecoveryDomain(settings, r, ledger) for r in rooms]
        lost = LostJob(
            room_name=room,
            conversation_id=conversation_id,
            job_id="AJ_lost",
            agent_identity="agent-AJ_lost",
            agent_name="nobody-serves-this-agent",
            dispatch_metadata="{}",
            user_identity="caller-1",
            lost_at=datetime.now(UTC),
            how="attend_stream_lost",
        )
        try:
            await asyncio.gather(*(d.recover(lost) for d in domains))
        finally:
            for r in rooms:
                await r.aclose()
            await channel.close(None)
        events = await history(stack, conversation_id)
        recovery = [e.recovery for e in events if e.type == pb.EVENT_TYPE_RECOVERY]
        steps = [(pb.RecoveryPhase.Name(r.phase)[15:], r.attempt) for r in recovery]
        assert steps == [
            ("CLAIMED", 1),
            ("DISPATCHED", 1),
            ("CLAIMED", 2),
            ("DISPATCHED", 2),
            ("GAVE_UP", 0),
        ]
        gave_up = events[-1].recovery
        assert gave_up.reason == "no agent joined after 2 attempts"
        reply = await stack.state.stub().GetConversation(
            pb.GetConversationRequest(conversation_id=conversation_id),
            metadata=stack.state.metadata(),
        )
        assert reply.conversation.status == pb.CONVERSATION_STATUS_ENDED
        assert reply.conversation.end_reason == "recovery_gave_up"
        # The second attempt deleted the first one's dispatch: at most one is ever pending.
        listed = await c.lkapi.agent_dispatch.list_dispatch(room_name=room)
        assert [d for d in listed if d.agent_name == lost.agent_name] == []


def signed(body: str, secret: str = "secret") -> dict[str, str]:
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return {"Authorization": api.AccessToken("devkey", secret).with_sha256(digest).to_jwt()}


async def test_a_forged_stale_or_replayed_webhook_changes_nothing(stack: Stack) -> None:
    replica = stack.replicas[0]
    results = ("bad_signature", "stale", "replayed")
    before = {r: stack.webhooks(r) for r in results}
    attempts_before = stack.dispatches()
    event = api.WebhookEvent(
        event="participant_left",
        id="EV_test_replay",
        created_at=int(time.time()),
        room=api.Room(name="no-such-room", metadata='{"conversation_id": "c-1"}'),
        participant=api.ParticipantInfo(identity="agent-x", kind=api.ParticipantInfo.AGENT),
    )
    body = MessageToJson(event)
    stale = MessageToJson(
        api.WebhookEvent(event="participant_left", id="EV_old", created_at=int(time.time()) - 3600)
    )

    def post(payload: str, headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            replica.webhook_url, data=payload.encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    assert post(body, {}) == 401
    assert post(body, signed(body, secret="not-the-secret")) == 401
    assert post(body + " ", signed(body)) == 401, "a body that is not the signed one"
    assert post(stale, signed(stale)) == 400
    assert post(body, signed(body)) == 200
    assert post(body, signed(body)) == 200
    counted = {r: stack.webhooks(r) - before[r] for r in results}
    assert counted == {"bad_signature": 3, "stale": 1, "replayed": 1}
    await asyncio.sleep(2)  # past the settle time: the accepted one was checked, and ignored
    assert stack.dispatches() == attempts_before
    assert replica.process.alive()


async def test_attend_refuses_bad_input_with_the_field_named(stack: Stack) -> None:
    replica = stack.replicas[0]

    async def attend(requests: list[rpb.AttendRequest], token: str | None) -> grpc.StatusCode:
        channel = create_channel(
            f"127.0.0.1:{replica.port}", token=(lambda: token) if token else None
        )
        stub = recovery_pb2_grpc.RecoveryServiceStub(channel)  # type: ignore[no-untyped-call]

        async def send() -> AsyncIterator[rpb.AttendRequest]:
            for r in requests:
                yield r
            # Like a job, never half-close first: the service ends the call (a client that
            # half-closes while the server refuses the call may see INTERNAL instead).
            await asyncio.Event().wait()

        try:
            async for _ in stub.Attend(send(), timeout=5):
                pass
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            details.append(error.details() or "")
            return error.code()
        finally:
            await channel.close(None)

    details: list[str] = []
    good = auth.mint_token(stack.jwt_key, tenant="tenant-a", scopes=["state.write"], ttl_s=60)
    job = rpb.Job(
        room_name="r",
        job_id="AJ_1",
        agent_name="a",
        conversation_id="c",
        agent_identity="agent-AJ_1",
    )
    assert await attend([rpb.AttendRequest(job=job)], None) == grpc.StatusCode.UNAUTHENTICATED
    read_only = auth.mint_token(stack.jwt_key, tenant="tenant-a", scopes=["state.read"], ttl_s=60)
    assert await attend([rpb.AttendRequest(job=job)], read_only) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    other = auth.mint_token(stack.jwt_key, tenant="tenant-b", scopes=["state.write"], ttl_s=60)
    assert await attend([rpb.AttendRequest(job=job)], other) == grpc.StatusCode.PERMISSION_DENIED
    assert "tenant-a" in details[-1]
    first_end = [rpb.AttendRequest(end=rpb.End(reason="x"))]
    assert await attend(first_end, good) == grpc.StatusCode.INVALID_ARGUMENT
    assert "job" in details[-1]
    empty = rpb.Job(room_name="r", job_id=" ", agent_name="a", conversation_id="c")
    assert await attend([rpb.AttendRequest(job=empty)], good) == grpc.StatusCode.INVALID_ARGUMENT
    assert "job.job_id" in details[-1]
    assert "job.agent_identity" in details[-1]
    huge = rpb.Job(
        room_name="r" * 300, job_id="j", agent_name="a", conversation_id="c", agent_identity="i"
    )
    assert await attend([rpb.AttendRequest(job=huge)], good) == grpc.StatusCode.INVALID_ARGUMENT
    assert "job.room_name" in details[-1]
    twice = [rpb.AttendRequest(job=job), rpb.AttendRequest(job=job)]
    assert await attend(twice, good) == grpc.StatusCode.INVALID_ARGUMENT
    # A stream that ended with End: the job ended, nothing to recover.
    ended = [rpb.AttendRequest(job=job), rpb.AttendRequest(end=rpb.End(reason="done"))]
    assert await attend(ended, good) == grpc.StatusCode.OK
    assert replica.process.alive()
