"""`python -m voiceagent_backbone.agent_svc start|dev` runs the LiveKit worker;
`python -m voiceagent_backbone.agent_svc chat` the terminal chat."""

from __future__ import annotations

import os
import sys
import tempfile


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "chat":
        from voiceagent_backbone.agent_svc.terminal import main as chat_main

        chat_main(sys.argv[2:])
        return
    if command in ("start", "dev"):
        # Job processes write metrics to files here; it must be set before
        # prometheus_client is imported anywhere in this process or its children.
        os.environ.setdefault(
            "PROMETHEUS_MULTIPROC_DIR",
            os.path.join(tempfile.gettempdir(), f"agent_svc-metrics-{os.getpid()}"),
        )
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    from livekit.agents import cli
    from pydantic import ValidationError

    from voiceagent_backbone.agent_svc import metrics
    from voiceagent_backbone.agent_svc.config import AgentSettings
    from voiceagent_backbone.agent_svc.worker import build_server

    try:
        settings = AgentSettings()
    except ValidationError as exc:
        sys.exit(f"agent_svc: invalid configuration:\n{exc}")
    if command in ("start", "dev") and not settings.openai_key():
        sys.exit("agent_svc: the voice worker needs OPENAI_API_KEY (try `make run` for text)")
    metrics.initialise()
    cli.run_app(build_server(settings))


if __name__ == "__main__":
    main()
