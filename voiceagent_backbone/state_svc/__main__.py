"""`python -m voiceagent_backbone.state_svc`: run the service until SIGTERM (--help: its
settings)."""

from voiceagent_backbone.servicekit.cli import run
from voiceagent_backbone.state_svc.config import StateSettings
from voiceagent_backbone.state_svc.service import build

SUMMARY = (
    "state_svc: conversations, their ordered event log, snapshots, users and the change "
    "feed, on MongoDB (STATE_MONGODB_URI) or an embedded SQLite file."
)

if __name__ == "__main__":
    run(StateSettings, build, "state_svc", SUMMARY)
