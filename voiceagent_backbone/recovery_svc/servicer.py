"""RecoveryService on the wire: the Attend streams of running agent jobs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from voiceagent_backbone.api.recovery.v1 import recovery_pb2 as pb
from voiceagent_backbone.api.recovery.v1 import recovery_pb2_grpc
from voiceagent_backbone.recovery_svc import wire
from voiceagent_backbone.recovery_svc.domain import RecoveryDomain
from voiceagent_backbone.servicekit import auth
from voiceagent_backbone.servicekit.errors import InvalidArgument, PermissionDenied

log = logging.getLogger(__name__)


class RecoveryServicer(recovery_pb2_grpc.RecoveryServiceServicer):
    def __init__(self, domain: RecoveryDomain) -> None:
        self.domain = domain

    async def Attend(
        self,
        request_iterator: AsyncIterator[pb.AttendRequest],
        context: grpc.aio.ServicerContext[pb.AttendRequest, pb.AttendResponse],
    ) -> AsyncIterator[pb.AttendResponse]:
        tenant = auth.current_principal().tenant_id
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise InvalidArgument.single("job", "the stream ended before its first request")
        job = wire.attended_job(first, tenant)
        if tenant != self.domain.settings.tenant:
            # This replica checks and records conversations of one tenant only.
            served = self.domain.settings.tenant
            raise PermissionDenied(f"this recovery service serves tenant {served!r}")
        self.domain.attached(job)
        ended = False
        try:
            yield pb.AttendResponse(replica_id=self.domain.settings.replica_id)
            async for request in request_iterator:
                if request.WhichOneof("kind") == "end":
                    ended = True
                    log.info(
                        "agent job ended",
                        extra={"job_id": job.job_id, "reason": request.end.reason},
                    )
                    return
                raise InvalidArgument.single("end", "only `end` may follow the first request")
        finally:
            # However the stream stopped: without End first, the job is presumed lost.
            self.domain.detached(job, ended)
