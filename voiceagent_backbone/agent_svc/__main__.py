"""`python -m voiceagent_backbone.agent_svc start|dev` runs the LiveKit worker;
`python -m voiceagent_backbone.agent_svc chat` the terminal chat; --help says so, and lists
the settings."""

from __future__ import annotations

import os
import sys
import tempfile

USAGE = """usage: python -m voiceagent_backbone.agent_svc COMMAND

  chat    talk to the agent in this terminal (text; no LiveKit needed)
  start   run the LiveKit worker (needs LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET and
          OPENAI_API_KEY); SIGTERM drains it
  dev     the same, with LiveKit's development defaults

`start --help` shows LiveKit's own options for the worker."""


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in ("", "-h", "--help", "help"):
        from voiceagent_backbone.agent_svc.config import AgentSettings
        from voiceagent_backbone.servicekit.cli import settings_help

        print(USAGE + "\n\n" + settings_help(AgentSettings))
        if not command:
            sys.exit(2)
        return
    if command not in ("chat", "start", "dev"):
        sys.exit(f"agent_svc: unknown command {command!r}: chat, start or dev (see --help)")
    if command == "chat":
        try:
            from voiceagent_backbone.agent_svc.terminal import main as chat_main
        except KeyboardInterrupt:  # Ctrl-C while livekit-agents is being imported
            sys.exit(130)
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
    # The settings are checked before LiveKit's framework is imported (seconds): a
    # missing variable or a port in use is said at once.
    from pydantic import ValidationError

    from voiceagent_backbone.agent_svc.config import AgentSettings
    from voiceagent_backbone.servicekit.cli import configuration_error
    from voiceagent_backbone.servicekit.config import ConfigurationError
    from voiceagent_backbone.servicekit.ports import check_ports

    try:
        settings = AgentSettings()
    except ValidationError as exc:
        sys.exit(configuration_error("agent_svc", AgentSettings, exc))
    asking_livekit = "--help" in sys.argv[2:] or "-h" in sys.argv[2:]
    if not asking_livekit:
        if not settings.livekit_url:
            sys.exit("agent_svc: LIVEKIT_URL is not set: the worker needs livekit-server's address")
        if not settings.openai_key():
            sys.exit("agent_svc: the voice worker needs OPENAI_API_KEY (try `make run` for text)")
        try:
            # LiveKit's worker logs a failed bind and exits 0: checked here instead.
            check_ports(settings, ("health_host", "health_port"), ("health_host", "metrics_port"))
        except ConfigurationError as exc:
            sys.exit(f"agent_svc: {exc}")
    from livekit.agents import cli

    from voiceagent_backbone.agent_svc import metrics
    from voiceagent_backbone.agent_svc.worker import build_server

    metrics.initialise()
    cli.run_app(build_server(settings))


if __name__ == "__main__":
    main()
