"""`python -m voiceagent_backbone.recovery_svc`: run the service until SIGTERM."""

import sys

from pydantic import ValidationError

from voiceagent_backbone.recovery_svc.config import RecoverySettings
from voiceagent_backbone.recovery_svc.service import build
from voiceagent_backbone.servicekit.server import main

if __name__ == "__main__":
    try:
        settings = RecoverySettings()
    except ValidationError as exc:
        sys.exit(f"recovery_svc: invalid configuration: {exc.errors()[0]['msg']}")
    main(settings, build, "recovery_svc")
