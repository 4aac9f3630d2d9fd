"""examples/bring_your_own_agent as a user runs it: the distribution built with `uv build`,
installed into a fresh venv outside the checkout with only the `agent` extra, the example
copied elsewhere and started against livekit-server, state_svc and context_svc. A caller
speaks (espeak-ng over WebRTC): the example's own tool is called and stored with the turn,
the user's instructions survive a participant-metadata change, and after the worker is
killed a new one resumes the conversation with its history."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from livekit import api

from tests.support.agent import kill_process_group
from tests.support.caller import Caller, until
from tests.support.context import ContextHandle, context_settings, running_context
from tests.support.fake_openai import FakeOpenAI, Reply, ToolCall, fake_openai, message_text
from tests.support.livekit import LiveKitServer
from tests.support.processes import ROOT, ChildProcess, free_port, wait_until
from tests.support.speech import silence_frames, speech_frames
from tests.support.state import StateHandle, running_state, state_settings
from tests.support.wheel import (
    InstalledWheel,
    build_wheel,
    clean_env,
    install_in_fresh_venv,
)
from voiceagent_backbone.api.state.v1 import state_pb2 as pb

pytestmark = pytest.mark.livekit

EXAMPLE = ROOT / "examples" / "bring_your_own_agent"
AGENT_NAME = "shop-assistant"  # the example's rtc_session agent_name
INSTRUCTIONS = "You are Ada, the order assistant of Example Shop."
ASK_ORDER = "Where is my order 42?"
THANKS = "Thank you very much."


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    work = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(work / "dist")
    return install_in_fresh_venv(wheel, "agent", work / "venv")


def test_wheel_installs_with_only_the_agent_extra_under_its_own_import_name(
    installed: InstalledWheel,
) -> None:
    # One import name, the distribution's own: nothing that another distribution on PyPI
    # could also install (the old top-level `voiceagent` and `servicekit` are taken there).
    assert installed.top_level_names() == {"voiceagent_backbone"}
    site = installed.site_packages
    assert (site / "voiceagent_backbone" / "py.typed").exists()
    # The agent extra only: the services' own dependencies are not there.
    for absent in ("pymongo", "tokenizers", "onnx", "grpc_tools"):
        assert not (site / absent).exists(), f"{absent} installed with the agent extra"
    assert (site / "livekit" / "agents").is_dir()


def order_responder(messages: list[dict[str, Any]]) -> str | Reply:
    """What the example's LLM would do: call its tool for the order, then answer from it."""
    last = next(m for m in reversed(messages) if m.get("role") not in ("system", "developer"))
    if last.get("role") == "tool":
        return f"Order 42 is {message_text(last)}."
    said = message_text(last) if last.get("role") == "user" else ""
    if "order 42" in said.lower():
        return Reply(tool_calls=[ToolCall("order_status", {"order_id": "42"})])
    return f"You said: {said}"


@pytest.fixture
async def state(tmp_path: Path, jwt_key: str) -> AsyncIterator[StateHandle]:
    async with running_state(state_settings("sqlite", tmp_path, jwt_key, None), jwt_key) as h:
        yield h


@pytest.fixture
async def ctx(tmp_path: Path, jwt_key: str, state: StateHandle) -> AsyncIterator[ContextHandle]:
    async with running_context(context_settings(tmp_path, jwt_key, state.port), jwt_key) as h:
        yield h


class ExampleWorker:
    """`python agent.py start` from the fresh venv, in a copy of the example."""

    def __init__(
        self,
        installed: InstalledWheel,
        workdir: Path,
        livekit: LiveKitServer,
        env: dict[str, str],
        log_name: str,
    ) -> None:
        app = workdir / "app"
        if not app.exists():
            shutil.copytree(EXAMPLE, app)
        self.process = ChildProcess(
            [installed.python, "agent.py", "start"],
            workdir / log_name,
            env={
                **clean_env(installed),
                "LIVEKIT_URL": livekit.url,
                "LIVEKIT_API_KEY": livekit.api_key,
                "LIVEKIT_API_SECRET": livekit.api_secret,
                "HEALTH_PORT": str(free_port()),
                **env,
            },
            cwd=app,
        )

    def wait_registered(self) -> None:
        def registered() -> bool:
            if not self.process.alive():
                raise RuntimeError(f"example worker exited:\n{self.process.output()[-4000:]}")
            return "registered worker" in self.process.output()

        wait_until(registered, 90, "example worker registration")


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    with fake_openai(responder=order_responder) as server:
        yield server


async def test_example_agent_calls_its_tool_keeps_its_instructions_and_resumes(
    tmp_path: Path,
    jwt_key: str,
    installed: InstalledWheel,
    livekit: LiveKitServer,
    state: StateHandle,
    ctx: ContextHandle,
    openai_server: FakeOpenAI,
) -> None:
    room_name = "example-room"
    lkapi = api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)
    caller = Caller()
    stub, md = state.stub(), state.metadata()
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": openai_server.base_url,
        "AGENT_STATE_TARGET": f"127.0.0.1:{state.port}",
        "AGENT_CONTEXT_TARGET": f"127.0.0.1:{ctx.port}",
        "AGENT_AUTH_JWT_KEY": jwt_key,
        "AGENT_TENANT": "tenant-a",
        "AGENT_NAME": AGENT_NAME,
        "AGENT_SPOOL_DIR": str(tmp_path / "spool"),
    }

    async def history(cid: str) -> list[pb.Event]:
        try:
            reply = await stub.GetHistory(pb.GetHistoryRequest(conversation_id=cid), metadata=md)
        except grpc.aio.AioRpcError as error:
            # The room names the conversation as soon as the job has queued its creation,
            # which reaches state_svc a moment later (writes never wait for the backend).
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise
        return list(reply.events)

    async def texts(cid: str) -> list[str]:
        return [e.text for e in await history(cid)]

    async def conversation_id() -> str:
        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[room_name]))
        raw = rooms.rooms[0].metadata if rooms.rooms else ""
        return str(json.loads(raw).get("conversation_id", "")) if raw else ""

    async def turn(text: str) -> None:
        openai_server.queue_transcripts(text)
        await caller.speak(speech_frames(text, tmp_path, trailing_silence_s=1.5))
        await caller.speak(silence_frames(0.5))

    def last_llm_request() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = openai_server.requests_to("/chat/completions")[-1].json[
            "messages"
        ]
        return messages

    try:
        await lkapi.room.create_room(api.CreateRoomRequest(name=room_name))
        await caller.join(livekit, room_name)
        worker = ExampleWorker(installed, tmp_path, livekit, env, "example-1.log")
        try:
            worker.wait_registered()
            await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room_name)
            )
            cid = str(await until(conversation_id, "the conversation id in room metadata"))

            async def greeted() -> bool:
                return "Hi, this is Ada from Example Shop. How can I help?" in await texts(cid)

            await until(greeted, "the example's own greeting", 60)
            await caller.until_quiet()
            await turn(ASK_ORDER)

            async def answered() -> bool:
                return "Order 42 is shipped on Monday." in await texts(cid)

            await until(answered, "the reply built from the tool's result", 90)
            events = await history(cid)
            calls = [e.tool_call for e in events if e.type == pb.EVENT_TYPE_TOOL_CALL]
            assert [(c.name, c.output) for c in calls] == [("order_status", "shipped on Monday")]
            assert json.loads(calls[0].arguments) == {"order_id": "42"}
            users = [e.text for e in events if e.type == pb.EVENT_TYPE_USER_MESSAGE]
            assert ASK_ORDER in users

            # The participant's metadata changes: the profile is saved, and the example's
            # own instructions are still what the LLM gets.
            await caller.room.local_participant.set_metadata(
                json.dumps({"user_id": "user-example", "display_name": "Lin", "language": "en"})
            )

            async def renamed() -> bool:
                try:
                    user = await stub.GetUser(
                        pb.GetUserRequest(user_id="user-example"), metadata=md
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        return False  # not stored yet
                    raise
                return bool(user.user.display_name == "Lin")

            await until(renamed, "the profile updated from participant metadata")
            await caller.until_quiet()
            await turn(THANKS)

            async def thanked() -> bool:
                return f"You said: {THANKS}" in await texts(cid)

            await until(thanked, "the reply after the metadata change", 90)
            system = [
                message_text(m)
                for m in last_llm_request()
                if m.get("role") in ("system", "developer")
            ]
            assert system, "no instructions in the LLM request"
            assert system[0].startswith(INSTRUCTIONS), system
            kill_process_group(worker.process)
        finally:
            worker.process.stop(timeout_s=20)

        # A new worker process: the killed one never ended anything.
        worker = ExampleWorker(installed, tmp_path, livekit, env, "example-2.log")
        try:
            worker.wait_registered()
            await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room_name)
            )

            async def welcomed_back() -> bool:
                return "Welcome back to Example Shop! Where were we?" in await texts(cid)

            await until(welcomed_back, "the example's resumed greeting", 90)
            assert await conversation_id() == cid
            await caller.until_quiet()
            await turn("What did I ask before?")

            async def answered_again() -> bool:
                return "You said: What did I ask before?" in await texts(cid)

            await until(answered_again, "a reply in the resumed conversation", 90)
            restored = [message_text(m) for m in last_llm_request()]
            assert ASK_ORDER in restored, "earlier turns not restored into the chat context"
        finally:
            worker.process.stop(timeout_s=20)
    finally:
        await caller.leave()
        await lkapi.aclose()
