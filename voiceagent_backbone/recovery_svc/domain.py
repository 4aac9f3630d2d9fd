"""What recovery_svc decides: which lost jobs to recover, once, and how.

A loss is noticed three ways, fastest first: an Attend stream breaks without End (the job's
process is gone: milliseconds), livekit-server's webhook says an agent left a room (when
the server gives up on the dead participant: about 20 s), or the periodic reconcile finds a
room with a user, an open conversation and no agent. All three end in `recover`, which
checks the facts again through the server API and state_svc, claims the attempt in the
conversation's log (one replica wins), removes the dead agent participant, dispatches the
agent again and waits for the new job to join; with a bounded number of attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from voiceagent_backbone.api.state.v1 import state_pb2 as pb
from voiceagent_backbone.recovery_svc import metrics
from voiceagent_backbone.recovery_svc.config import RecoverySettings
from voiceagent_backbone.recovery_svc.ledger import Ledger, Phase, Step
from voiceagent_backbone.recovery_svc.model import AttendedJob, LostJob, Outcome, Skip
from voiceagent_backbone.recovery_svc.rooms import RoomServer, conversation_id_of

log = logging.getLogger(__name__)

GAVE_UP_REASON = "recovery_gave_up"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Arrival:
    """The agent that joined after a recovery's dispatch."""

    job_id: str  # "" when livekit-server did not list it yet
    identity: str
    joined_at: datetime


class RecoveryDomain:
    def __init__(self, settings: RecoverySettings, rooms: RoomServer, ledger: Ledger) -> None:
        self.settings = settings
        self.rooms = rooms
        self.ledger = ledger
        # The jobs whose Attend stream this replica holds, by job id.
        self._jobs: dict[str, AttendedJob] = {}
        # Set when a job attaches in a room: wakes a recovery waiting for its new agent.
        self._arrivals: dict[str, asyncio.Event] = {}
        # Rooms with a recovery running in this replica.
        self._recovering: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- Attend streams -------------------------------------------------------------------

    def attached(self, job: AttendedJob) -> None:
        self._jobs[job.job_id] = job
        metrics.ATTENDED_JOBS.set(len(self._jobs))
        arrival = self._arrivals.get(job.room_name)
        if arrival is not None:
            arrival.set()
        if job.resumed:
            self._spawn(self._note_recovered(job, _now()))

    def detached(self, job: AttendedJob, ended: bool) -> None:
        """The job's stream closed; `ended` when the job said End first."""
        if self._jobs.get(job.job_id) is job:
            del self._jobs[job.job_id]
            metrics.ATTENDED_JOBS.set(len(self._jobs))
        if ended or self._stopping:
            return
        metrics.SUSPECTED.labels("attend_stream_lost").inc()
        self._spawn(self._after_stream_lost(job, _now()))

    async def _after_stream_lost(self, job: AttendedJob, lost_at: datetime) -> None:
        # A job that attaches again at once lost its connection, not its process.
        await asyncio.sleep(self.settings.grace_s)
        if job.job_id in self._jobs:
            log.info("agent job reattached", extra={"job_id": job.job_id})
            return
        await self.recover(
            LostJob(
                room_name=job.room_name,
                conversation_id=job.conversation_id,
                job_id=job.job_id,
                agent_identity=job.agent_identity,
                agent_name=job.agent_name,
                dispatch_metadata=job.dispatch_metadata,
                user_identity=job.user_identity,
                lost_at=lost_at,
                how="attend_stream_lost",
            )
        )

    # -- rooms (webhooks, reconcile) ------------------------------------------------------

    def agent_left(self, room_name: str, room_metadata: str, left_at: datetime) -> None:
        """A webhook said an agent left the room: check it once the room has settled."""
        metrics.SUSPECTED.labels("agent_left_room").inc()

        async def later() -> None:
            await asyncio.sleep(self.settings.settle_s)
            await self.check_room(room_name, room_metadata, "agent_left_room", left_at)

        self._spawn(later())

    async def reconcile(self) -> None:
        """Every room with a conversation, checked through the server API."""
        for room in await self.rooms.rooms():
            if conversation_id_of(room.metadata):
                await self.check_room(room.name, room.metadata, "reconcile", _now())

    async def reconcile_forever(self) -> None:
        while True:
            # Jittered, so that replicas do not all ask the server at the same moment.
            await asyncio.sleep(self.settings.reconcile_interval_s * random.uniform(0.8, 1.2))
            try:
                await self.reconcile()
            except Exception:
                log.warning("reconcile failed; trying again later", exc_info=True)

    async def check_room(
        self, room_name: str, room_metadata: str, how: str, lost_at: datetime
    ) -> None:
        """Starts a recovery when the room has a user and an open conversation but no agent
        and no agent on its way."""
        conversation_id = conversation_id_of(room_metadata)
        participants = await self.rooms.participants(room_name)
        if not conversation_id or participants is None:
            return
        if any(p.is_agent for p in participants) or not any(not p.is_agent for p in participants):
            return
        if room_name in self._recovering or any(
            j.room_name == room_name for j in self._jobs.values()
        ):
            return
        jobs = await self.rooms.jobs(room_name)
        names = self.settings.agent_names
        jobs = [j for j in jobs if not names or j.agent_name in names]
        if not jobs:
            return
        newest = max(jobs, key=lambda j: j.created_at_ns)
        if time.time() - newest.created_at_ns / 1e9 < self.settings.join_timeout_s:
            # A dispatch on its way (livekit-server names the job's participant when it
            # assigns the job, before the job has joined): whoever dispatched it waits.
            return
        if how == "reconcile":
            metrics.SUSPECTED.labels("reconcile").inc()
        self._spawn(
            self.recover(
                LostJob(
                    room_name=room_name,
                    conversation_id=conversation_id,
                    job_id=newest.job_id or newest.dispatch_id,
                    agent_identity=newest.agent_identity,
                    agent_name=newest.agent_name,
                    dispatch_metadata=newest.dispatch_metadata,
                    user_identity="",
                    lost_at=lost_at,
                    how=how,
                )
            )
        )

    # -- one recovery ---------------------------------------------------------------------

    async def recover(self, lost: LostJob) -> None:
        """Brings an agent back for `lost`, unless there is no call left to save or another
        replica (or path) already does it."""
        if lost.room_name in self._recovering:
            return
        self._recovering.add(lost.room_name)
        try:
            await self._attempts(lost)
        except Exception:
            # The reconcile loop finds the room again if it still needs an agent.
            log.exception("recovery failed", extra={"job_id": lost.job_id})
        finally:
            self._recovering.discard(lost.room_name)

    async def _attempts(self, lost: LostJob) -> None:
        s = self.settings
        ours: list[str] = []  # our dispatches for this loss
        for attempt in range(1, s.max_attempts + 1):
            skip = await self._why_not(lost, ours)
            if skip is Skip.TOO_MANY:
                limit = self.settings.max_recoveries
                await self._give_up(lost, f"{limit} agent jobs of this call were lost", ours)
            if skip is not None:
                metrics.SKIPPED.labels(skip.value).inc()
                # Every reconcile round finds rooms whose call ended while the user stays.
                log.log(
                    logging.DEBUG if lost.how == "reconcile" else logging.INFO,
                    "no recovery needed",
                    extra={"job_id": lost.job_id, "room": lost.room_name, "reason": skip.value},
                )
                return
            claim = self._step(Phase.RECOVERY_PHASE_CLAIMED, lost, attempt)
            if not await self.ledger.record(lost.conversation_id, claim):
                metrics.SKIPPED.labels(Skip.ALREADY_CLAIMED.value).inc()
                return
            log.warning(
                "agent job lost; dispatching the agent again",
                extra={"job_id": lost.job_id, "room": lost.room_name, "attempt": attempt},
            )
            for dispatch_id in ours:  # a late job of an earlier attempt must not join too
                await self.rooms.cancel(lost.room_name, dispatch_id)
            if lost.agent_identity:
                # The dead participant would linger until the server times it out.
                await self.rooms.remove(lost.room_name, lost.agent_identity)
            try:
                dispatch_id = await self.rooms.dispatch(
                    lost.room_name, lost.agent_name, lost.dispatch_metadata
                )
            except Exception:
                metrics.REDISPATCH.labels(Outcome.DISPATCH_FAILED.value).inc()
                log.warning("dispatch failed", exc_info=True, extra={"room": lost.room_name})
                await asyncio.sleep(self._backoff(attempt))
                continue
            ours.append(dispatch_id)
            dispatched = replace(
                self._step(Phase.RECOVERY_PHASE_DISPATCHED, lost, attempt), dispatch_id=dispatch_id
            )
            await self.ledger.record(lost.conversation_id, dispatched)
            arrival = await self._wait_for_agent(lost, dispatch_id)
            if arrival is not None:
                await self._record_recovered(dispatched, lost.conversation_id, arrival)
                return
            metrics.REDISPATCH.labels(Outcome.JOIN_TIMEOUT.value).inc()
            await asyncio.sleep(self._backoff(attempt))
        await self._give_up(lost, f"no agent joined after {s.max_attempts} attempts", ours)

    async def _why_not(self, lost: LostJob, ours: list[str]) -> Skip | None:
        is_open = await self.ledger.conversation_open(lost.conversation_id)
        if is_open is None:
            return Skip.CONVERSATION_UNKNOWN
        if not is_open:
            return Skip.CONVERSATION_ENDED
        participants = await self.rooms.participants(lost.room_name)
        if participants is None:
            return Skip.ROOM_GONE
        users = [p.identity for p in participants if not p.is_agent]
        if not users or (lost.user_identity and lost.user_identity not in users):
            return Skip.USER_ABSENT
        if any(p.is_agent and p.identity != lost.agent_identity for p in participants):
            return Skip.AGENT_PRESENT
        if any(
            j.room_name == lost.room_name and j.job_id != lost.job_id for j in self._jobs.values()
        ):
            return Skip.AGENT_PRESENT
        lost_ns = lost.lost_at.timestamp() * 1e9
        # Somebody else (the app, another replica) dispatched the room since the loss.
        for job in await self.rooms.jobs(lost.room_name):
            if job.dispatch_id not in ours and job.created_at_ns > lost_ns:
                return Skip.AGENT_PRESENT
        claims = [
            step
            for step in await self.ledger.steps(lost.conversation_id)
            if step.phase == Phase.RECOVERY_PHASE_CLAIMED and step.attempt == 1
        ]
        if len({c.lost_job_id for c in claims} - {lost.job_id}) >= self.settings.max_recoveries:
            return Skip.TOO_MANY
        return None

    async def _wait_for_agent(self, lost: LostJob, dispatch_id: str) -> Arrival | None:
        """The new agent, once it joined; None when none joined in time."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.settings.join_timeout_s
        assigned = False
        arrival = self._arrivals.setdefault(lost.room_name, asyncio.Event())
        try:
            while loop.time() < deadline:
                for job in self._jobs.values():
                    if job.room_name == lost.room_name and job.job_id != lost.job_id:
                        return Arrival(job.job_id, job.agent_identity, _now())
                participants = await self.rooms.participants(lost.room_name) or []
                agents = [
                    p.identity
                    for p in participants
                    if p.is_agent and p.identity != lost.agent_identity
                ]
                jobs = await self.rooms.jobs(lost.room_name)
                if agents:
                    # The job of the agent that joined (ours, or one somebody else sent);
                    # "" when livekit-server does not list it yet.
                    job_id = next((j.job_id for j in jobs if j.agent_identity == agents[0]), "")
                    return Arrival(job_id, agents[0], _now())
                assigned = assigned or any(j.dispatch_id == dispatch_id and j.job_id for j in jobs)
                if not assigned and loop.time() - started > self.settings.assign_timeout_s:
                    log.warning("no worker took the dispatch", extra={"room": lost.room_name})
                    return None
                arrival.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrival.wait(), 0.2)
            return None
        finally:
            self._arrivals.pop(lost.room_name, None)

    async def _note_recovered(self, job: AttendedJob, joined_at: datetime) -> None:
        """A resumed job attached: if a recovery dispatched it, record that it is back."""
        try:
            steps = await self.ledger.steps(job.conversation_id)
        except Exception:
            log.warning("could not read recovery steps", exc_info=True)
            return
        for step in reversed(steps):
            if (
                step.phase == Phase.RECOVERY_PHASE_DISPATCHED
                and step.dispatch_id == job.dispatch_id
            ):
                arrival = Arrival(job.job_id, job.agent_identity, joined_at)
                await self._record_recovered(step, job.conversation_id, arrival)
                return

    async def _record_recovered(
        self, dispatched: Step, conversation_id: str, arrival: Arrival
    ) -> None:
        absent_s = max(0.0, (arrival.joined_at - dispatched.lost_at).total_seconds())
        step = replace(
            dispatched,
            phase=Phase.RECOVERY_PHASE_RECOVERED,
            new_job_id=arrival.job_id,
            new_identity=arrival.identity,
            agent_absent_s=absent_s,
            replica_id=self.settings.replica_id,
        )
        if await self.ledger.record(conversation_id, step):
            metrics.REDISPATCH.labels(Outcome.RECOVERED.value).inc()
            metrics.AGENT_ABSENT_SECONDS.observe(absent_s)
            log.info(
                "agent recovered",
                extra={
                    "conversation_id": conversation_id,
                    "job_id": arrival.job_id,
                    "identity": arrival.identity,
                    "agent_absent_s": round(absent_s, 3),
                },
            )

    async def _give_up(self, lost: LostJob, reason: str, ours: list[str]) -> None:
        for dispatch_id in ours:
            await self.rooms.cancel(lost.room_name, dispatch_id)
        step = replace(self._step(Phase.RECOVERY_PHASE_GAVE_UP, lost, 0), reason=reason)
        if await self.ledger.record(lost.conversation_id, step):
            metrics.REDISPATCH.labels(Outcome.GAVE_UP.value).inc()
            log.error(
                "recovery given up",
                extra={"conversation_id": lost.conversation_id, "reason": reason},
            )
        # Ended, so that no later check tries again.
        await self.ledger.end(lost.conversation_id, GAVE_UP_REASON)

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        return float(min(s.retry_backoff_s * 2 ** (attempt - 1), s.retry_backoff_max_s))

    def _step(self, phase: pb.RecoveryPhase, lost: LostJob, attempt: int) -> Step:
        return Step(
            phase=phase,
            lost_job_id=lost.job_id,
            lost_identity=lost.agent_identity,
            attempt=attempt,
            reason=lost.how,
            lost_at=lost.lost_at,
            replica_id=self.settings.replica_id,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop deciding: streams closing now are this replica shutting down, not jobs
        dying (they attach to another replica)."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
