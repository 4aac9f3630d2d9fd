"""`python -m voiceagent_backbone.context_svc`: run the service until SIGTERM."""

from voiceagent_backbone.context_svc.config import ContextSettings
from voiceagent_backbone.context_svc.service import build
from voiceagent_backbone.servicekit.server import main

if __name__ == "__main__":
    main(ContextSettings(), build, "context_svc")
