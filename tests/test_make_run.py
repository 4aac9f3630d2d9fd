"""`make run` as a newcomer meets it: the services start, a typed conversation with the real
agent runs (offline responder: no OpenAI key), and running it again resumes the conversation:
"welcome back", and what was said before is remembered."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support.processes import ROOT, free_port


def _run(run_dir: Path, typed: str) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
        "RUN_DIR": str(run_dir),
        "STATE_PORT": str(free_port()),
        "CONTEXT_PORT": str(free_port()),
        "STATE_METRICS_PORT": str(free_port()),
        "CONTEXT_METRICS_PORT": str(free_port()),
    }
    done = subprocess.run(
        ["bash", "scripts/run.sh", "--room", "kitchen", "--user", "ana", "--name", "Ana"],
        input=typed,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_make_run_chat_resumes_and_remembers(tmp_path: Path) -> None:
    first = _run(tmp_path, "My dog is called Rex and he loves the beach.\n/quit\n")
    assert "[offline responder]" in first  # clearly labelled
    assert "agent> Hello, Ana! How can I help you today?" in first
    assert "agent> Goodbye, Ana, talk to you soon." in first
    conversation = re.search(r"Conversation ([0-9a-f-]{36}) is stored", first)
    assert conversation, first
    assert "StateService/GetHistory" in first

    second = _run(tmp_path, "What is my dog called?\n/quit\n")
    assert "agent> Welcome back, Ana! Shall we pick up where we left off?" in second
    reply = next(line for line in second.splitlines() if "You said" in line)
    assert "Rex" in reply, second  # remembered through enrichment from the first run
    assert f"Conversation {conversation.group(1)} is stored" in second
