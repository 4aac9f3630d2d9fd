"""Protobuf checks and conversions for RecoveryService."""

from __future__ import annotations

from voiceagent_backbone.api.recovery.v1 import recovery_pb2 as pb
from voiceagent_backbone.recovery_svc.model import AttendedJob
from voiceagent_backbone.servicekit.errors import InvalidArgument, Validator

_MAX_NAME = 256
_MAX_METADATA = 64 * 1024


def attended_job(request: pb.AttendRequest, tenant: str) -> AttendedJob:
    """The job of an Attend stream's first request."""
    if request.WhichOneof("kind") != "job":
        raise InvalidArgument.single("job", "the first request of an Attend stream is `job`")
    job = request.job
    v = Validator()
    for field in ("room_name", "job_id", "agent_name", "conversation_id", "agent_identity"):
        value: str = getattr(job, field)
        if v.check(bool(value.strip()), f"job.{field}", "must not be empty"):
            v.check(
                len(value.encode()) <= _MAX_NAME,
                f"job.{field}",
                f"is {len(value.encode())} bytes; at most {_MAX_NAME} allowed",
            )
    for field in ("dispatch_id", "user_identity"):
        v.check(
            len(getattr(job, field).encode()) <= _MAX_NAME,
            f"job.{field}",
            f"at most {_MAX_NAME} bytes allowed",
        )
    v.check(
        len(job.dispatch_metadata.encode()) <= _MAX_METADATA,
        "job.dispatch_metadata",
        f"is {len(job.dispatch_metadata.encode())} bytes; at most {_MAX_METADATA} allowed",
    )
    v.raise_if_any()
    return AttendedJob(
        tenant=tenant,
        room_name=job.room_name,
        job_id=job.job_id,
        dispatch_id=job.dispatch_id,
        agent_name=job.agent_name,
        dispatch_metadata=job.dispatch_metadata,
        conversation_id=job.conversation_id,
        agent_identity=job.agent_identity,
        user_identity=job.user_identity,
        resumed=job.resumed,
    )
