"""The job's presence at recovery_svc: one Attend stream for as long as the job serves its
room, so that a job that dies without ending (SIGKILL, OOM, a lost node) is noticed at once
and the agent dispatched to the call again.

The stream is held in the background and never delays the call. When it breaks while the
job lives (recovery_svc restarting, a network blip), it is opened again at once: the service
waits a moment before it believes a job is gone. When the job ends of its own accord, `end`
says so first, and nothing is recovered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from voiceagent_backbone.api.recovery.v1 import recovery_pb2 as pb
from voiceagent_backbone.api.recovery.v1 import recovery_pb2_grpc
from voiceagent_backbone.servicekit.client import TokenProvider, create_channel

log = logging.getLogger(__name__)

# Answers that another attempt would only repeat: a configuration to fix, logged once.
_FINAL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
)
_RETRY_MAX_S = 2.0


class Attendance:
    def __init__(self, target: str, token: TokenProvider | None, job: pb.Job) -> None:
        self.job = job
        # Pings every 5 s: a job on a lost node is noticed by the service's own pings; these
        # let the job notice a lost service and attach elsewhere.
        self._channel = create_channel(
            target,
            token=token,
            retry=False,
            extra_options=[("grpc.keepalive_time_ms", 5_000), ("grpc.keepalive_timeout_ms", 5_000)],
        )
        self._stub = recovery_pb2_grpc.RecoveryServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._ending = asyncio.Event()
        self._reason = ""
        self.attached = asyncio.Event()
        self._task = asyncio.create_task(self._hold(), name="attend")

    async def _requests(self) -> AsyncIterator[pb.AttendRequest]:
        yield pb.AttendRequest(job=self.job)
        await self._ending.wait()
        yield pb.AttendRequest(end=pb.End(reason=self._reason))

    async def _hold(self) -> None:
        delay = 0.05
        while not self._ending.is_set():
            call = self._stub.Attend(self._requests())
            try:
                async for _ in call:
                    if not self.attached.is_set():
                        log.info("attended at recovery_svc", extra={"job_id": self.job.job_id})
                    self.attached.set()
                    delay = 0.05
            except grpc.aio.AioRpcError as error:
                if error.code() in _FINAL:
                    log.error(
                        "recovery_svc refused this job; it will not be recovered if it dies",
                        extra={"code": error.code().name, "details": error.details()},
                    )
                    return
                log.debug("attend stream broke", extra={"code": error.code().name})
            if self._ending.is_set():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    async def end(self, reason: str, timeout_s: float = 2.0) -> None:
        """Tell recovery_svc the job ends of its own accord, then close (bounded)."""
        if not self._ending.is_set():
            self._reason = reason
            self._ending.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._channel.close(None)
