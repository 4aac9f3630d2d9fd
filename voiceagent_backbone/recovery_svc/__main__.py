"""`python -m voiceagent_backbone.recovery_svc`: run the service until SIGTERM (--help: its
settings)."""

from voiceagent_backbone.recovery_svc.config import RecoverySettings
from voiceagent_backbone.recovery_svc.service import build
from voiceagent_backbone.servicekit.cli import run

SUMMARY = (
    "recovery_svc: dispatches the agent again to a call whose agent job died "
    "(self-hosted LiveKit does not); see docs/recovery.md."
)

if __name__ == "__main__":
    run(RecoverySettings, build, "recovery_svc", SUMMARY)
