"""BackendClient against a real state_svc (and a real, then frozen, context_svc):
persistence that never blocks, never loses and never duplicates."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

from tests.support.agent import agent_settings, sample
from tests.support.processes import ChildProcess, free_port, wait_until
from tests.support.state import event, running_state, state_settings
from voiceagent_backbone.agent_svc.backend import BackendClient
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit import keygen
from voiceagent_backbone.servicekit.auth import mint_token
from voiceagent_backbone.servicekit.ids import uuid7
from voiceagent_backbone.servicekit.signing import public_jwk


def _create(conversation_id: str) -> pb.CreateConversationRequest:
    return pb.CreateConversationRequest(
        conversation_id=conversation_id, room_name="room-1", user_ids=["user-1"]
    )


async def _stored(handle_stub: object, metadata: object, conversation_id: str) -> list[pb.Event]:
    events: list[pb.Event] = []
    token = ""
    while True:
        reply = await handle_stub.GetHistory(  # type: ignore[attr-defined]
            pb.GetHistoryRequest(conversation_id=conversation_id, page_size=500, page_token=token),
            metadata=metadata,
        )
        events.extend(reply.events)
        token = reply.next_page_token
        if not token:
            return events


async def test_state_down_mid_conversation_then_back(tmp_path: Path, jwt_key: str) -> None:
    """Writes made while state_svc is down wait in the spool; when it is back, every event
    is stored exactly once and in order, and enqueueing never waited on the outage."""
    port = free_port()
    settings = state_settings("sqlite", tmp_path, jwt_key, None, port=port)
    client = BackendClient(agent_settings(tmp_path, jwt_key, port))
    await client.start()
    conversation_id = uuid7()
    sent: list[str] = []
    try:
        async with running_state(settings, jwt_key) as state:
            client.writer.create_conversation(_create(conversation_id))
            for i in range(40):
                e = event(text=f"before {i}")
                sent.append(e.event_id)
                client.writer.append_event(conversation_id, e)
            assert await client.flush(10), "writes were not acknowledged"
        # state_svc is down now.
        slowest = 0.0
        for i in range(60):
            e = event(text=f"during {i}")
            sent.append(e.event_id)
            started = time.perf_counter()
            client.writer.append_event(conversation_id, e)
            slowest = max(slowest, time.perf_counter() - started)
            if i % 10 == 0:
                await asyncio.sleep(0.05)  # the sender tries, fails and backs off meanwhile
        assert slowest < 0.05, f"enqueue waited {slowest * 1000:.1f} ms during the outage"
        assert not await client.flush(0.5)
        assert client.writer.pending == 60
        async with running_state(settings, jwt_key) as state:
            assert await client.flush(15), f"{client.writer.pending} writes still pending"
            stored = await _stored(state.stub(), state.metadata(), conversation_id)
    finally:
        await client.aclose(1)
    assert [e.event_id for e in stored] == sent
    assert [e.seq for e in stored] == list(range(1, len(sent) + 1))
    assert not list((tmp_path / "spool").glob("spool-*.log")), "acknowledged spool not removed"


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from pydantic import SecretStr
    from voiceagent_backbone.agent_svc.backend import BackendClient
    from voiceagent_backbone.agent_svc.config import AgentSettings
    from tests.support.state import event

    async def main() -> None:
        settings = AgentSettings(
            state_target=sys.argv[1], auth_jwt_key=SecretStr(sys.argv[2]),
            spool_dir=Path(sys.argv[3]), tenant="tenant-a", batch_linger_ms=1,
        )
        client = BackendClient(settings)
        await client.start()
        conversation_id = sys.argv[4]
        i = 0
        while True:
            e = event(text=f"turn {i}")
            client.writer.append_event(conversation_id, e)
            # Printed only once append_event returned: the agent was told it is kept.
            print(e.event_id, flush=True)
            i += 1
            await asyncio.sleep(0.002)

    asyncio.run(main())
    """
)


async def test_killed_job_process_spool_replayed_by_next_process(
    tmp_path: Path, jwt_key: str
) -> None:
    """A process killed with SIGKILL mid-stream (some writes acknowledged, some in flight,
    some only spooled) leaves its spool; the next process replays it: every event the dead
    process accepted is stored exactly once, in order."""
    port = free_port()
    settings = state_settings("sqlite", tmp_path, jwt_key, None, port=port)
    spool_dir = tmp_path / "spool"
    conversation_id = uuid7()
    async with running_state(settings, jwt_key) as state:
        await state.stub().CreateConversation(_create(conversation_id), metadata=state.metadata())
        script = tmp_path / "child.py"
        script.write_text(_CHILD)
        child = ChildProcess(
            [
                sys.executable,
                str(script),
                f"127.0.0.1:{port}",
                jwt_key,
                str(spool_dir),
                conversation_id,
            ],
            tmp_path / "child.log",
            env={"PYTHONPATH": str(Path.cwd())},
        )
        # Another connection holds the database's write lock from the 100th event on, so
        # however fast this machine is, writes are still in flight or spooled at the kill.
        lock = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        try:
            await asyncio.to_thread(
                wait_until,
                lambda: child.output().count("\n") >= 100,
                60,
                "the child to accept 100 events",
            )
            lock.execute("BEGIN IMMEDIATE")
            await asyncio.to_thread(
                wait_until,
                lambda: child.output().count("\n") >= 300,
                60,
                "the child to accept 300 events",
            )
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            output = child.output()
        finally:
            child.stop()
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
        accepted = [ln for ln in output.splitlines() if len(ln) == 36]
        stored_before = await _stored(state.stub(), state.metadata(), conversation_id)
        assert len(stored_before) < len(accepted), "the kill came too late to test a replay"
        assert list(spool_dir.glob("spool-*.log")), "the killed process left no spool"

        replayed_before = sample("agent_events_replayed_total")
        client = BackendClient(agent_settings(tmp_path, jwt_key, port, spool_dir=spool_dir))
        await client.start()
        try:
            assert await client.flush(20), f"{client.writer.pending} writes not replayed"
        finally:
            await client.aclose(1)
        stored = await _stored(state.stub(), state.metadata(), conversation_id)
    ids = [e.event_id for e in stored]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert ids[: len(accepted)] == accepted, "not every accepted event was stored, in order"
    assert len(ids) - len(accepted) <= 1  # at most the one written as the kill landed
    assert [e.seq for e in stored] == list(range(1, len(ids) + 1))
    assert sample("agent_events_replayed_total") > replayed_before
    assert not list(spool_dir.glob("spool-*.log")), "replayed spools must be deleted"


async def test_rejected_write_is_set_aside_and_later_writes_go_on(
    tmp_path: Path, jwt_key: str
) -> None:
    """A write state_svc can never take (here: an event of a conversation that does not
    exist) goes to rejected.log with the reason; it does not block the queue."""
    port = free_port()
    settings = state_settings("sqlite", tmp_path, jwt_key, None, port=port)
    client = BackendClient(agent_settings(tmp_path, jwt_key, port))
    good = uuid7()
    async with running_state(settings, jwt_key) as state:
        await client.start()
        try:
            client.writer.create_conversation(_create(good))
            client.writer.append_event(uuid7(), event(text="to nowhere"))
            client.writer.append_event(good, event(text="kept"))
            assert await client.flush(10)
        finally:
            await client.aclose(1)
        stored = await _stored(state.stub(), state.metadata(), good)
    assert [e.text for e in stored] == ["kept"]
    rejected = (tmp_path / "spool" / "rejected.log").read_text()
    assert "NOT_FOUND" in rejected


async def test_enrichment_with_context_svc_frozen_stays_within_budget(
    tmp_path: Path, jwt_key: str
) -> None:
    """context_svc stopped with SIGSTOP (it accepts connections and never answers): every
    enrichment returns None within the budget, timeouts are counted, and after repeated
    failures the breaker answers at once."""
    state_port, context_port = free_port(), free_port()
    env = {
        "CONTEXT_PORT": str(context_port),
        "CONTEXT_METRICS_PORT": "-1",
        "CONTEXT_STATE_TARGET": f"127.0.0.1:{state_port}",
        "CONTEXT_FOLLOW_FEED": "false",
        "CONTEXT_INDEX_PATH": str(tmp_path / "context.sqlite3"),
        "CONTEXT_AUTH_JWT_KEY": jwt_key,
    }
    context = ChildProcess(
        [sys.executable, "-m", "voiceagent_backbone.context_svc"], tmp_path / "context.log", env=env
    )
    settings = agent_settings(
        tmp_path, jwt_key, state_port, context_port, enrich_budget_ms=200, breaker_failures=3
    )
    client = BackendClient(settings)
    try:
        await asyncio.to_thread(context.wait_for_port, context_port, 120, "context_svc")
        await client.start()
        answer = await client.reader.enrich(uuid7(), "user-1", "warm up the model")
        assert answer is not None  # it answers while running
        timeouts_before = sample("agent_enrich_timeouts_total")
        context.signal(signal.SIGSTOP)
        durations = []
        for _ in range(3):
            started = time.perf_counter()
            assert (
                await client.reader.enrich(uuid7(), "user-1", "where did I go on holiday?") is None
            )
            durations.append(time.perf_counter() - started)
        assert max(durations) < 0.2 + 0.1, durations
        assert sample("agent_enrich_timeouts_total") - timeouts_before == 3
        started = time.perf_counter()
        assert await client.reader.enrich(uuid7(), "user-1", "anything") is None
        assert time.perf_counter() - started < 0.01, "the open breaker should answer at once"
        context.signal(signal.SIGCONT)
        await asyncio.sleep(settings.breaker_open_s + 0.1)
        answer = None
        for _ in range(20):  # the probe after the pause closes the breaker again
            answer = await client.reader.enrich(uuid7(), "user-1", "back again")
            if answer is not None:
                break
            await asyncio.sleep(0.3)
        assert answer is not None
    finally:
        context.signal(signal.SIGCONT)
        context.stop()
        await client.aclose(1)


def test_bad_configuration_is_a_readable_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "voiceagent_backbone.agent_svc", "start"],
        env={**os.environ, "AGENT_ENRICH_BUDGET_MS": "-5", "OPENAI_API_KEY": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    # The variable the user sets, not the setting's name in the code.
    assert "AGENT_ENRICH_BUDGET_MS='-5'" in run.stderr
    assert "Traceback" not in run.stderr


async def test_unauthenticated_writes_are_kept_and_retried(tmp_path: Path, jwt_key: str) -> None:
    """A wrong key is a configuration error, not bad data: the writes stay until fixed."""
    port = free_port()
    settings = state_settings("sqlite", tmp_path, jwt_key, None, port=port)
    async with running_state(settings, jwt_key):
        client = BackendClient(agent_settings(tmp_path, "another-key-" + "x" * 40, port))
        await client.start()
        try:
            client.writer.create_conversation(_create(uuid7()))
            assert not await client.flush(1.0)
            assert client.writer.pending == 1
        finally:
            await client.aclose(0.1)
    leftover = list((tmp_path / "spool").glob("spool-*.log"))
    assert leftover, "unsent writes must stay in the spool for the next process"


async def test_writes_beyond_the_memory_queue_wait_in_the_spool_and_keep_their_order(
    tmp_path: Path, jwt_key: str
) -> None:
    """With the memory queue full (state_svc down), writes go to the spool file only; they
    are reloaded from it and stored in order when state_svc is back."""
    port = free_port()
    settings = state_settings("sqlite", tmp_path, jwt_key, None, port=port)
    client = BackendClient(agent_settings(tmp_path, jwt_key, port, queue_max_events=10))
    await client.start()
    conversation_id = uuid7()
    sent: list[str] = []
    try:
        client.writer.create_conversation(_create(conversation_id))
        for i in range(45):
            e = event(text=f"overflow {i}")
            sent.append(e.event_id)
            client.writer.append_event(conversation_id, e)
        assert client.writer.pending == 46
        async with running_state(settings, jwt_key) as state:
            for i in range(5):  # more while the reloaded ones are being sent
                e = event(text=f"late {i}")
                sent.append(e.event_id)
                client.writer.append_event(conversation_id, e)
            assert await client.flush(20), f"{client.writer.pending} writes still pending"
            stored = await _stored(state.stub(), state.metadata(), conversation_id)
    finally:
        await client.aclose(1)
    assert [e.event_id for e in stored] == sent


async def test_agent_with_only_a_token_file_writes_its_tenant_and_nothing_more(
    tmp_path: Path,
) -> None:
    """Least privilege: state_svc verifies with a public key set, the agent holds a token
    for its tenant and scopes (no signing key), and the token reaches nothing else."""
    jwks, issuer = tmp_path / "jwks.json", tmp_path / "issuer.pem"
    assert keygen.main(["--jwks", str(jwks), "--private-key", str(issuer)]) == 0
    pem = issuer.read_text()
    kid = public_jwk(pem)["kid"]

    def token(tenant: str, scopes: str) -> str:
        return mint_token(
            pem, tenant=tenant, scopes=scopes.split(), algorithm="ES256", key_id=kid, ttl_s=600
        )

    token_file = tmp_path / "agent-token"
    token_file.write_text(token("acme", "state.read state.write"))
    port = free_port()
    settings = state_settings(
        "sqlite", tmp_path, "", None, port=port, auth_jwt_key=None, auth_jwks_file=jwks
    )
    async with running_state(settings, ""):
        agent = agent_settings(tmp_path, "", port, auth_jwt_key=None, auth_token_file=token_file)
        client = BackendClient(agent)
        await client.start()
        conversation_id = uuid7()
        try:
            client.writer.create_conversation(_create(conversation_id))
            client.writer.append_event(conversation_id, event(text="from the agent"))
            assert await client.flush(10.0)
        finally:
            await client.aclose(1.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = state_pb2_grpc.StateServiceStub(channel)  # type: ignore[no-untyped-call]
            acme = (("authorization", f"Bearer {token('acme', 'state.read')}"),)
            stored = await _stored(stub, acme, conversation_id)
            assert [e.text for e in stored] == ["from the agent"]
            agent_md = (("authorization", f"Bearer {token_file.read_text()}"),)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.DeleteUserData(
                    pb.DeleteUserDataRequest(user_id="user-1"), metadata=agent_md
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            other = (("authorization", f"Bearer {token('globex', 'state.read')}"),)
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await stub.GetConversation(
                    pb.GetConversationRequest(conversation_id=conversation_id), metadata=other
                )
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
