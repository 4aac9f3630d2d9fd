"""`python -m voiceagent_backbone.state_svc`: run the service until SIGTERM."""

from voiceagent_backbone.servicekit.server import main
from voiceagent_backbone.state_svc.config import StateSettings
from voiceagent_backbone.state_svc.service import build

if __name__ == "__main__":
    main(StateSettings(), build, "state_svc")
