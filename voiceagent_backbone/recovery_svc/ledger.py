"""state_svc as recovery_svc uses it: is the conversation open, and the recovery steps in
its event log.

The log is also the lock: each step's event id is derived from the conversation, the lost
job, the attempt and the phase, so when two replicas (or a replica's stream path and its
webhook path) try the same step, state_svc stores it once and tells the other it was a
duplicate. Whoever stored the CLAIMED step of an attempt makes that attempt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import grpc

from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.api.state.v1 import state_pb2_grpc
from voiceagent_backbone.servicekit.ids import is_uuid7, uuid7_for, uuid7_time_ms

Phase = pb.RecoveryPhase


@dataclass(frozen=True)
class Step:
    """One recovery step as recorded in (or read from) the conversation's log."""

    phase: pb.RecoveryPhase
    lost_job_id: str
    lost_identity: str
    attempt: int
    reason: str
    lost_at: datetime
    dispatch_id: str = ""
    new_job_id: str = ""
    new_identity: str = ""
    agent_absent_s: float = 0.0
    replica_id: str = ""
    stored_at: datetime | None = None


class Ledger(Protocol):
    async def conversation_open(self, conversation_id: str) -> bool | None:
        """True open, False ended, None unknown (another tenant's, or deleted)."""
        ...

    async def steps(self, conversation_id: str) -> list[Step]:
        """The conversation's recent recovery steps, oldest first."""
        ...

    async def record(self, conversation_id: str, step: Step) -> bool:
        """Stores the step; False when it was stored before (by anyone)."""
        ...

    async def end(self, conversation_id: str, reason: str) -> None: ...


def step_event_id(conversation_id: str, step: Step) -> str:
    phase = pb.RecoveryPhase.Name(step.phase)
    name = f"recovery\x1f{conversation_id}\x1f{step.lost_job_id}\x1f{step.attempt}\x1f{phase}"
    # The conversation id's own time when it has one, so the id sorts near its events.
    time_ms = uuid7_time_ms(conversation_id) if is_uuid7(conversation_id) else 0
    return uuid7_for(name, time_ms)


class StateLedger:
    def __init__(self, stub: state_pb2_grpc.StateServiceStub, timeout_s: float = 5.0) -> None:
        self._stub = stub
        self._timeout_s = timeout_s

    async def conversation_open(self, conversation_id: str) -> bool | None:
        try:
            reply = await self._stub.GetConversation(
                pb.GetConversationRequest(conversation_id=conversation_id),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return bool(reply.conversation.status == pb.CONVERSATION_STATUS_OPEN)

    async def steps(self, conversation_id: str) -> list[Step]:
        reply = await self._stub.GetHistory(
            pb.GetHistoryRequest(
                conversation_id=conversation_id, types=[pb.EVENT_TYPE_RECOVERY], last_n=200
            ),
            timeout=self._timeout_s,
        )
        return [_step(e) for e in reply.events if e.HasField("recovery")]

    async def record(self, conversation_id: str, step: Step) -> bool:
        detail = pb.RecoveryDetail(
            phase=step.phase,
            lost_job_id=step.lost_job_id,
            lost_identity=step.lost_identity,
            attempt=step.attempt,
            dispatch_id=step.dispatch_id,
            new_job_id=step.new_job_id,
            new_identity=step.new_identity,
            reason=step.reason,
            replica_id=step.replica_id,
        )
        detail.lost_at.FromDatetime(step.lost_at)
        if step.agent_absent_s:
            detail.agent_absent.FromTimedelta(timedelta(seconds=step.agent_absent_s))
        event = pb.Event(
            event_id=step_event_id(conversation_id, step),
            type=pb.EVENT_TYPE_RECOVERY,
            role=pb.ROLE_SYSTEM,
            text=_describe(step),
            recovery=detail,
        )
        event.client_time.GetCurrentTime()
        reply = await self._stub.AppendEvents(
            pb.AppendEventsRequest(conversation_id=conversation_id, events=[event]),
            timeout=self._timeout_s,
        )
        return not reply.results[0].duplicate

    async def end(self, conversation_id: str, reason: str) -> None:
        try:
            await self._stub.EndConversation(
                pb.EndConversationRequest(conversation_id=conversation_id, reason=reason),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise


def _step(e: pb.Event) -> Step:
    d = e.recovery
    return Step(
        phase=d.phase,
        lost_job_id=d.lost_job_id,
        lost_identity=d.lost_identity,
        attempt=d.attempt,
        reason=d.reason,
        lost_at=d.lost_at.ToDatetime(tzinfo=UTC),
        dispatch_id=d.dispatch_id,
        new_job_id=d.new_job_id,
        new_identity=d.new_identity,
        agent_absent_s=d.agent_absent.ToTimedelta().total_seconds(),
        replica_id=d.replica_id,
        stored_at=e.server_time.ToDatetime(tzinfo=UTC) if e.HasField("server_time") else None,
    )


def _describe(step: Step) -> str:
    """The event's text: what a person reading the history should see."""
    if step.phase == Phase.RECOVERY_PHASE_CLAIMED:
        return f"agent job {step.lost_job_id} lost ({step.reason}); recovery attempt {step.attempt}"
    if step.phase == Phase.RECOVERY_PHASE_DISPATCHED:
        return f"agent dispatched again (dispatch {step.dispatch_id}, attempt {step.attempt})"
    if step.phase == Phase.RECOVERY_PHASE_RECOVERED:
        return (
            f"agent back: {step.new_job_id or step.new_identity} replaced {step.lost_job_id} after "
            f"{step.agent_absent_s:.1f} s without an agent"
        )
    return f"recovery of job {step.lost_job_id} given up: {step.reason}"
