"""Each service's command line: --help lists the settings and starts nothing; a bad value
or argument is one line naming the variable, with no traceback, and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVICES = {
    "state_svc": "STATE_PORT",
    "context_svc": "CONTEXT_FEED_BATCH",
    "recovery_svc": "RECOVERY_MAX_ATTEMPTS",
}
LIVEKIT = {"LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"}


def run(service: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STATE_", "CONTEXT_", "RECOVERY_", "LIVEKIT_"))
    }
    return subprocess.run(
        [sys.executable, "-m", f"voiceagent_backbone.{service}", *args],
        cwd=cwd,
        env={**clean, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("service", SERVICES)
def test_help_lists_the_settings_and_starts_nothing(service: str, tmp_path: Path) -> None:
    done = run(service, ["--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert SERVICES[service] in done.stdout
    assert done.stdout.startswith(f"usage: python -m voiceagent_backbone.{service}")
    assert list(tmp_path.iterdir()) == [], "--help created files"


@pytest.mark.parametrize("service", SERVICES)
def test_a_bad_value_is_one_line_naming_the_variable(service: str, tmp_path: Path) -> None:
    variable = SERVICES[service]
    done = run(service, [], tmp_path, **{variable: "-7", **LIVEKIT})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{service}: {variable}='-7': ")
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_argument_is_refused_and_a_missing_livekit_url_named(tmp_path: Path) -> None:
    done = run("state_svc", ["--port", "1"], tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "state_svc: unexpected argument '--port': every setting comes from an environment "
        "variable (see --help)"
    )
    missing = run("recovery_svc", [], tmp_path)
    assert missing.returncode != 0
    assert "LIVEKIT_URL" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_agent_svc_says_its_commands_and_names_what_is_missing(tmp_path: Path) -> None:
    shown = run("agent_svc", ["--help"], tmp_path)
    assert shown.returncode == 0
    assert "chat" in shown.stdout
    assert "start" in shown.stdout
    assert "AGENT_ENRICH_BUDGET_MS" in shown.stdout
    no_livekit = run("agent_svc", ["start"], tmp_path)
    assert no_livekit.returncode != 0
    assert no_livekit.stderr.strip() == (
        "agent_svc: LIVEKIT_URL is not set: the worker needs livekit-server's address"
    )
    bad = run("agent_svc", ["start"], tmp_path, AGENT_ENRICH_BUDGET_MS="0", **LIVEKIT)
    assert bad.returncode != 0
    assert bad.stderr.strip().startswith("agent_svc: AGENT_ENRICH_BUDGET_MS='0': ")
    assert "Traceback" not in bad.stderr
