"""Crash recovery with a real livekit-server, two agent workers and two recovery_svc
replicas: a job that dies mid-call is replaced within seconds, without the test
dispatching anything, and the caller hears the resumed greeting; a call that ends, a user
who leaves and a drained worker bring no new agent; two replicas dispatch once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from livekit import api

from tests.support.agent import AGENT_NAME, AgentWorker, running_agent_worker
from tests.support.caller import Caller, until
from tests.support.fake_openai import FakeOpenAI, fake_openai
from tests.support.livekit import LiveKitServer, livekit_server
from tests.support.processes import free_port
from tests.support.recovery import (
    RecoveryReplica,
    job_processes,
    recovery_ports,
    start_recovery,
)
from tests.support.state import StateHandle, running_state, state_settings
from voiceagent_backbone.api.state.v1 import state_pb2 as pb

pytestmark = pytest.mark.livekit

WELCOME_BACK = "Welcome back, Eve! Shall we pick up where we left off?"
RECOVERY_ENV = {
    "RECOVERY_RECONCILE_INTERVAL_S": "2",
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
        return sum(int(r.metric("recovery_redispatch_total")) for r in self.replicas)


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


@pytest.fixture
async def stack(workdir: Path, module_jwt_key: str, tmp_path: Path) -> AsyncIterator[Stack]:
    ports = [recovery_ports(), recovery_ports()]
    jwt_key = module_jwt_key
    with servers(tmp_path, ports) as lk, fake_openai() as openai:
        async with running_state(state_settings("sqlite", tmp_path, jwt_key, None), jwt_key) as st:
            replicas = []
            try:
                for i, p in enumerate(ports):
                    replicas.append(
                        start_recovery(
                            tmp_path, f"recovery{i}", p, lk, st.port, jwt_key, **RECOVERY_ENV
                        )
                    )
                yield Stack(lk, st, openai, replicas, tmp_path, jwt_key)
            finally:
                for r in replicas:
                    r.process.stop()


@contextlib.contextmanager
def workers(stack: Stack, count: int = 2) -> Iterator[list[AgentWorker]]:
    target = ",".join(f"127.0.0.1:{r.port}" for r in stack.replicas)
    for i in range(count):
        (stack.workdir / f"worker{i}").mkdir(exist_ok=True)
    with contextlib.ExitStack() as exit_stack:
        started = [
            exit_stack.enter_context(
                running_agent_worker(
                    stack.workdir / f"worker{i}",
                    stack.livekit,
                    f"127.0.0.1:{stack.state.port}",
                    f"127.0.0.1:{free_port()}",
                    stack.jwt_key,
                    stack.openai.base_url,
                    log_name=f"worker{i}.log",
                    extra_env={
                        "AGENT_RECOVERY_TARGET": f"ipv4:{target}",
                        # Load by jobs, not by this machine's CPU, which the whole stack
                        # keeps busy (livekit-server gives no job to a worker at 70 %).
                        "AGENT_MAX_JOBS": "4",
                    },
                )
            )
            for i in range(count)
        ]
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
    assert recovery_phases(events) == ["CLAIMED", "DISPATCHED", "RECOVERED"]
    recovered = next(e.recovery for e in events if e.recovery.phase == pb.RECOVERY_PHASE_RECOVERED)
    assert recovered.new_identity
    assert recovered.new_identity != recovered.lost_identity
    assert recovered.agent_absent.ToTimedelta().total_seconds() > 0
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert await c.dispatch_count() == 2, "the app's dispatch and exactly one recovery"
    assert c.max_agents == 1, "two agents were in the room at once"


async def test_a_killed_job_process_is_replaced_and_the_caller_hears_it(stack: Stack) -> None:
    with workers(stack):
        async with call(stack, "kill-job") as c:
            conversation_id = await c.start()
            worker, pid = worker_holding_the_job(stack)
            heard = c.caller.heard_frames
            os.kill(pid, signal.SIGKILL)
            await assert_recovered(stack, c, conversation_id, heard)
            assert worker.process.alive()


async def test_a_killed_worker_process_group_is_replaced(stack: Stack) -> None:
    with workers(stack):
        async with call(stack, "kill-worker") as c:
            conversation_id = await c.start()
            worker, _ = worker_holding_the_job(stack)
            heard = c.caller.heard_frames
            os.killpg(worker.process.pid, signal.SIGKILL)
            await assert_recovered(stack, c, conversation_id, heard)
