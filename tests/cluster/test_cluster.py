"""The mission on a real cluster: what a team running its own LiveKit sees after
`helm install`. The chart runs with state_svc (2 replicas) on the MongoDB stand-in,
context_svc and the agent; livekit-server runs beside it; a participant speaks from this
process; recovery_svc (2 replicas) brings the agent back when its pod dies. The tests run
in order and share the cluster (tests/cluster/conftest.py); the last one uninstalls the
release."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import duration_pb2
from livekit import api

from tests.cluster.conftest import SUMMARY, ClusterRun
from tests.support.caller import Caller, until
from tests.support.cluster import FULLNAME, NAMESPACE, RELEASE, VALUES, Cluster
from tests.support.speech import silence_frames, speech_frames
from voiceagent_backbone.api.context.v1 import context_pb2 as cpb
from voiceagent_backbone.api.context.v1 import context_pb2_grpc
from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit.ids import uuid7

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

ROOM = "cluster-room"
OPERATOR = "e2e-operator"
AUDIENCE = "voiceagent"  # the chart's auth.serviceAccount.audience
USER = "user-e2e"
TENANT = "default"  # the chart's agent.tenant
AGENT_NAME = "voiceagent"  # the chart's agent.name
SPOKEN = "My favourite colour is blue."
ASKED = "Which colour do I like?"
AGENT_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=agent"
STATE_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=state"
RECOVERY_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=recovery"
# What a replica going away answers to calls in flight or on its closing connection.
TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)


def service_account_token(cluster: Cluster, account: str, audience: str = AUDIENCE) -> str:
    args = ["create", "token", account, "-n", NAMESPACE, "--duration", "1h"]
    return cluster.kubectl(*args, *(["--audience", audience] if audience else [])).strip()


@dataclass
class Backend:
    """state_svc and context_svc through their Services, with a token of the agent's tenant."""

    state: state_pb2_grpc.StateServiceStub
    context: context_pb2_grpc.ContextServiceStub
    metadata: tuple[tuple[str, str], ...]

    async def history(self, conversation_id: str) -> list[pb.Event]:
        """Every event of the conversation, page after page."""
        events: list[pb.Event] = []
        token = ""
        while True:
            reply = await self.state.GetHistory(
                pb.GetHistoryRequest(
                    conversation_id=conversation_id, page_size=1000, page_token=token
                ),
                metadata=self.metadata,
            )
            events.extend(reply.events)
            token = reply.next_page_token
            if not token:
                return events


@pytest.fixture(scope="module")
async def backend(cluster_run: ClusterRun) -> AsyncIterator[Backend]:
    cluster = cluster_run.cluster
    # No key exists to mint with: the tests are a ServiceAccount granted the agent's tenant
    # (ci/kind-values.yaml), and ask the cluster for its token, as an operator would.
    cluster.kubectl("create", "serviceaccount", OPERATOR, "-n", NAMESPACE)
    token = service_account_token(cluster, OPERATOR)
    async with (
        grpc.aio.insecure_channel(cluster.service_address(f"{FULLNAME}-state", 50051)) as sc,
        grpc.aio.insecure_channel(cluster.service_address(f"{FULLNAME}-context", 50052)) as cc,
    ):
        yield Backend(
            state_pb2_grpc.StateServiceStub(sc),  # type: ignore[no-untyped-call]
            context_pb2_grpc.ContextServiceStub(cc),  # type: ignore[no-untyped-call]
            (("authorization", f"Bearer {token}"),),
        )


@dataclass
class Call:
    """One participant in one room, for the whole module."""

    caller: Caller
    livekit: api.LiveKitAPI
    conversation_id: str = ""

    async def room_metadata(self) -> dict[str, object]:
        rooms = await self.livekit.room.list_rooms(api.ListRoomsRequest(names=[ROOM]))
        raw = rooms.rooms[0].metadata if rooms.rooms else ""
        return dict(json.loads(raw)) if raw else {}

    async def dispatch(self, gone: frozenset[str] = frozenset(), timeout_s: float = 120) -> None:
        """Dispatches the agent into the room until an agent participant (not one of
        ``gone``) has joined.

        A pod turns Ready a moment before its worker has registered with LiveKit, and
        LiveKit drops a dispatch that finds no worker; so a new dispatch every 15 s."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            await self.livekit.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=ROOM)
            )
            for _ in range(60):
                if await self.agents() - gone:
                    return
                await asyncio.sleep(0.25)
        raise AssertionError(f"no agent joined {ROOM} within {timeout_s}s")

    async def dispatches(self) -> dict[str, str]:
        """The room's agent dispatches: id → agent name."""
        listed = await self.livekit.agent_dispatch.list_dispatch(room_name=ROOM)
        return {d.id: d.agent_name for d in listed}

    async def agents(self) -> frozenset[str]:
        """The identities of the agent participants in the room."""
        listed = await self.livekit.room.list_participants(api.ListParticipantsRequest(room=ROOM))
        return frozenset(
            p.identity for p in listed.participants if p.kind == api.ParticipantInfo.Kind.AGENT
        )


@pytest.fixture(scope="module")
async def call(cluster_run: ClusterRun) -> AsyncIterator[Call]:
    address = cluster_run.cluster.service_address("livekit-server", 7880, namespace="livekit")
    livekit = api.LiveKitAPI(f"http://{address}", "devkey", "secret")
    caller = Caller()
    try:
        await livekit.room.create_room(
            api.CreateRoomRequest(name=ROOM, metadata=json.dumps({"app": "cluster"}))
        )
        await caller.join_url(f"ws://{address}", "devkey", "secret", ROOM)
        yield Call(caller, livekit)
    finally:
        await caller.leave()
        await livekit.aclose()


class Utterances:
    """The fake STT's transcriber: what the caller is saying now, once per utterance. Under
    load, VAD may cut one utterance into two segments; the second then transcribes to
    nothing instead of taking the next utterance's text."""

    def __init__(self) -> None:
        self.pending = ""

    def __call__(self, audio: bytes) -> str:
        text, self.pending = self.pending, ""
        return text


def describe(events: list[pb.Event]) -> list[tuple[str, str]]:
    return [(pb.EventType.Name(e.type), e.text) for e in events]


async def test_spoken_conversation_through_the_cluster(
    cluster_run: ClusterRun, backend: Backend, call: Call, tmp_path_factory: pytest.TempPathFactory
) -> None:
    openai = cluster_run.openai
    workdir = tmp_path_factory.mktemp("speech")
    utterances = Utterances()
    openai.transcriber = utterances
    await call.dispatch()

    async def conversation_id() -> str:
        return str((await call.room_metadata()).get("conversation_id", ""))

    call.conversation_id = await until(conversation_id, "the conversation id in room metadata", 90)
    assert (await call.room_metadata())["app"] == "cluster", "other metadata keys are kept"

    async def greeted() -> bool:
        return call.caller.heard_frames > 10

    await until(greeted, "the agent's greeting, heard over WebRTC", 90)
    for text in (SPOKEN, ASKED):
        await call.caller.until_quiet()
        heard_before = call.caller.heard_frames
        replies_before = await agent_replies(backend, call.conversation_id)
        utterances.pending = text
        await call.caller.speak(speech_frames(text, workdir, trailing_silence_s=1.5))
        await call.caller.speak(silence_frames(0.5))

        async def replied(before: list[str] = replies_before) -> bool:
            return len(await agent_replies(backend, call.conversation_id)) > len(before)

        async def heard(before: int = heard_before) -> bool:
            return call.caller.heard_frames > before + 10

        try:
            await until(replied, f"the reply to {text!r} stored in state_svc", 120)
        except AssertionError as error:
            stored = describe(await backend.history(call.conversation_id))
            asked_for = [r.endpoint for r in openai.requests]
            raise AssertionError(f"{error}; stored: {stored}; OpenAI calls: {asked_for}") from None
        await until(heard, f"the reply to {text!r}, heard", 60)

    events = await backend.history(call.conversation_id)
    users = [e.text for e in events if e.type == pb.EVENT_TYPE_USER_MESSAGE]
    assert users == [SPOKEN, ASKED], describe(events)
    assert [e.text for e in events if e.type == pb.EVENT_TYPE_TRANSCRIPTION] == [SPOKEN, ASKED]
    replies = await agent_replies(backend, call.conversation_id)
    assert replies[0] == "Hello, Eve! How can I help you today?"
    assert f"I heard: {SPOKEN}" in replies
    assert f"I heard: {ASKED}" in replies
    assert pb.EVENT_TYPE_TTS_SPEECH in [e.type for e in events]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    # context_svc followed the feed: the first turn is memory for the question...
    enriched = await backend.context.Enrich(
        cpb.EnrichRequest(user_id=USER, text=ASKED), metadata=backend.metadata
    )
    assert any(SPOKEN in item.text for item in enriched.items), enriched
    # ...and the agent injected it into the LLM request that answered the question.
    asked = [
        r.json
        for r in openai.requests_to("/chat/completions")
        if ASKED in json.dumps(r.json["messages"])
    ]
    assert asked, "the question never reached the LLM"
    system = [m for m in asked[-1]["messages"] if m["role"] == "system"]
    assert any(SPOKEN in json.dumps(m) for m in system), "no enrichment in the LLM request"


async def agent_replies(backend: Backend, conversation_id: str) -> list[str]:
    events = await backend.history(conversation_id)
    return [e.text for e in events if e.type == pb.EVENT_TYPE_AGENT_MESSAGE]


async def test_an_agent_pod_holds_only_its_own_tenant_and_scopes(
    cluster_run: ClusterRun, backend: Backend
) -> None:
    """What a compromised agent pod could do: its pods mount no key, only their projected
    token, and that token (asked for here as the pod's kubelet does) reaches the agent's
    tenant with the agent's scopes and nothing else."""
    cluster = cluster_run.cluster
    secrets = cluster.kubectl_json("get", "secrets", "-n", NAMESPACE)["items"]
    assert not [x["metadata"]["name"] for x in secrets if x["metadata"]["name"].endswith("-jwt")]
    for pod in cluster.pods(AGENT_SELECTOR):
        for volume in pod["spec"]["volumes"]:
            assert "secret" not in volume, volume
            for source in volume.get("projected", {}).get("sources", []):
                assert set(source) == {"serviceAccountToken"}, source
                assert source["serviceAccountToken"]["audience"] == AUDIENCE
    agent_account = f"{FULLNAME}-agent"
    own = (("authorization", f"Bearer {service_account_token(cluster, agent_account)}"),)
    listed = await backend.state.ListConversations(
        pb.ListConversationsRequest(user_id=USER), metadata=own
    )
    assert all(c.tenant_id == TENANT for c in listed.conversations)
    denied = [
        backend.state.DeleteUserData(pb.DeleteUserDataRequest(user_id=USER), metadata=own),
        backend.state.SetRetentionPolicy(
            pb.SetRetentionPolicyRequest(retention=duration_pb2.Duration(seconds=60)),
            metadata=own,
        ),
        backend.context.UpsertFacts(
            cpb.UpsertFactsRequest(user_id=USER, facts=[cpb.Fact(text="x")]), metadata=own
        ),
    ]
    for call in denied:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in backend.state.Watch(
            pb.WatchRequest(all_tenants=True, stop_at_end=True), metadata=own
        ):
            pass
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The same account's token for another audience (the API server's) is no good here.
    api_token = service_account_token(cluster, agent_account, audience="")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await backend.state.ListConversations(
            pb.ListConversationsRequest(user_id=USER),
            metadata=(("authorization", f"Bearer {api_token}"),),
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_agent_pod_deleted_mid_call_resumes_on_a_new_pod(
    cluster_run: ClusterRun, backend: Backend, call: Call
) -> None:
    """Self-hosted LiveKit does not dispatch a room again when its agent dies: the chart's
    recovery_svc does. The test dispatches nothing; the caller gets the agent back."""
    cluster = cluster_run.cluster
    assert call.conversation_id, "needs the conversation of the test before"
    [old_pod] = cluster.wait_ready(AGENT_SELECTOR, 1)
    cluster.wait_ready(RECOVERY_SELECTOR, 2)
    before = await backend.history(call.conversation_id)
    dispatches_before = await call.dispatches()
    old_agents = await call.agents()
    # As a node failure would: no drain, no goodbye, the job process gone at once.
    deleted_at = time.monotonic()
    cluster.kubectl("delete", "pod", old_pod, "-n", NAMESPACE, "--grace-period=0", "--force")
    [new_pod] = await asyncio.to_thread(cluster.wait_ready, AGENT_SELECTOR, 1, 240)
    assert new_pod != old_pod

    async def welcomed_back() -> bool:
        texts = [e.text for e in await backend.history(call.conversation_id)]
        return "Welcome back, Eve! Shall we pick up where we left off?" in texts

    async def recovered() -> list[pb.Event]:
        events = await backend.history(call.conversation_id)
        return [
            e
            for e in events
            if e.type == pb.EVENT_TYPE_RECOVERY and e.recovery.phase == pb.RECOVERY_PHASE_RECOVERED
        ]

    try:
        await until(welcomed_back, "the resumed greeting from the new pod", 240)
        [done] = await until(recovered, "a RECOVERED step in the conversation's log", 60)
    except AssertionError as error:
        steps = [
            (pb.RecoveryPhase.Name(e.recovery.phase), e.recovery.attempt, e.recovery.reason)
            for e in await backend.history(call.conversation_id)
            if e.type == pb.EVENT_TYPE_RECOVERY
        ]
        raise AssertionError(f"{error}; recovery steps: {steps}") from None
    resumed_s = time.monotonic() - deleted_at
    # One new dispatch of the agent, recovery_svc's (earlier attempts that found no worker
    # yet are cancelled), and the new job it brought is the one that joined.
    new = {i: name for i, name in (await call.dispatches()).items() if i not in dispatches_before}
    assert new == {done.recovery.dispatch_id: AGENT_NAME}, (new, done.recovery)
    assert done.recovery.lost_identity in old_agents
    assert done.recovery.new_identity not in old_agents
    assert done.recovery.agent_absent.ToTimedelta().total_seconds() > 0
    assert (await call.room_metadata())["conversation_id"] == call.conversation_id
    events = await backend.history(call.conversation_id)
    assert [e.event_id for e in events[: len(before)]] == [e.event_id for e in before]
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "a gap in the seqs"
    assert len({e.event_id for e in events}) == len(events), "an event stored twice"
    gave_up = [e for e in events if e.recovery.phase == pb.RECOVERY_PHASE_GAVE_UP]
    assert gave_up == []
    listed = await backend.state.ListConversations(
        pb.ListConversationsRequest(user_id=USER), metadata=backend.metadata
    )
    assert [c.conversation_id for c in listed.conversations] == [call.conversation_id]
    SUMMARY["recovery"] = {
        "attempts": done.recovery.attempt,
        "noticed_by": next(
            e.recovery.reason
            for e in events
            if e.recovery.phase == pb.RECOVERY_PHASE_CLAIMED
            and e.recovery.lost_job_id == done.recovery.lost_job_id
        ),
        "agent_absent_s": round(done.recovery.agent_absent.ToTimedelta().total_seconds(), 1),
        "resumed_after_s": round(resumed_s, 1),
    }


async def test_helm_upgrade_rolls_state_while_a_writer_appends(
    cluster_run: ClusterRun, backend: Backend
) -> None:
    cluster = cluster_run.cluster
    old_pods = set(cluster.wait_ready(STATE_SELECTOR, 2))
    [agent_pod] = cluster.wait_ready(AGENT_SELECTOR, 1)
    conversation_id = str(uuid7())
    await backend.state.CreateConversation(
        pb.CreateConversationRequest(
            conversation_id=conversation_id, room_name="upgrade-writer", user_ids=[USER]
        ),
        metadata=backend.metadata,
    )
    sent: list[str] = []
    retried: dict[str, int] = {}
    stop = asyncio.Event()

    async def writer() -> None:
        # One event per call, retried with the same id until acknowledged, on the codes the
        # agent's BackendClient retries as well: the write is idempotent, so a retry after a
        # lost reply stores nothing twice.
        while not stop.is_set():
            event = pb.Event(
                event_id=str(uuid7()),
                type=pb.EVENT_TYPE_USER_MESSAGE,
                role=pb.ROLE_USER,
                text=f"message {len(sent)}",
            )
            request = pb.AppendEventsRequest(conversation_id=conversation_id, events=[event])
            while True:
                try:
                    await backend.state.AppendEvents(request, metadata=backend.metadata, timeout=5)
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() not in TRANSIENT:
                        raise
                    retried[error.code().name] = retried.get(error.code().name, 0) + 1
                    await asyncio.sleep(0.1)
            sent.append(event.event_id)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(2)
        await asyncio.to_thread(
            cluster.helm,
            "upgrade", RELEASE, "deploy/helm/voiceagent", "--namespace", NAMESPACE,
            "--values", str(VALUES), "--set-string", f"state.podAnnotations.rolled={time.time()}",
            "--wait", "--timeout", "10m",
        )  # fmt: skip
        new_pods = set(await asyncio.to_thread(cluster.wait_ready, STATE_SELECTOR, 2, 240))
        assert not new_pods & old_pods, "the upgrade did not replace the state pods"
        assert cluster.wait_ready(AGENT_SELECTOR, 1) == [agent_pod], "the agent restarted too"
        await asyncio.sleep(2)
    finally:
        stop.set()
        await task
    SUMMARY["upgrade_appends"] = {"acknowledged": len(sent), "retried": retried}
    stored = await backend.history(conversation_id)
    assert [e.event_id for e in stored] == sent, "lost, duplicated or reordered appends"
    assert [e.seq for e in stored] == list(range(1, len(sent) + 1))
    assert len(sent) > 50


def test_every_pod_is_admitted_under_the_restricted_standard(cluster_run: ClusterRun) -> None:
    cluster = cluster_run.cluster
    for namespace in (NAMESPACE, "livekit"):
        labels = cluster.kubectl_json("get", "namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        for pod in cluster.pods("", namespace):
            if pod["status"]["phase"] == "Succeeded":
                continue  # helm test pods
            assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]
            for container in pod["spec"]["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, container["name"]
                assert context["allowPrivilegeEscalation"] is False, container["name"]
    # The label is enforced: a pod without the restricted security settings is refused.
    refused = cluster.kubectl_error(
        "run", "unrestricted-probe", "-n", NAMESPACE, "--image=voiceagent-state:e2e",
        "--image-pull-policy=Never", "--restart=Never",
    )  # fmt: skip
    assert 'violates PodSecurity "restricted:latest"' in refused, refused
    assert not cluster.pods("run=unrestricted-probe")


def test_uninstall_leaves_no_workload_and_keeps_the_data_claims(cluster_run: ClusterRun) -> None:
    cluster = cluster_run.cluster
    cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")
    kinds = "deployments,statefulsets,replicasets,pods,services,configmaps,secrets,networkpolicies"
    deadline = time.monotonic() + 120
    while left := cluster.kubectl_json(
        "get", f"{kinds},poddisruptionbudgets,horizontalpodautoscalers,servicemonitors",
        "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}",
    )["items"]:  # fmt: skip
        assert time.monotonic() < deadline, [i["metadata"]["name"] for i in left]
        time.sleep(1)
    # The development MongoDB's claim is kept by its StatefulSet; context_svc has none (its
    # index is a cache on an emptyDir, rebuilt from state_svc).
    claims = sorted(
        c["metadata"]["name"] for c in cluster.kubectl_json("get", "pvc", "-n", NAMESPACE)["items"]
    )
    assert claims == [f"data-{FULLNAME}-mongodb-0"]
