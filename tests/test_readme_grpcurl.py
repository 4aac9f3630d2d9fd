"""The grpcurl examples for state_svc and context_svc work as printed. They live in the
services' pages (docs/state_svc.md, docs/context_svc.md); every `grpcurl-examples` block of
the README and of docs/ is looked for, and each is run by a test here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, ChildProcess, both_services, free_port, tool_path
from voiceagent_backbone.servicekit.auth import mint_token

pytestmark = pytest.mark.tools


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = r"<!-- grpcurl-examples:{name} -->\n```bash\n(.*?)```\n<!-- /grpcurl-examples:{name} -->"
# The blocks the tests below run.
TESTED_BLOCKS = {"state", "context"}


def docs_block(name: str) -> list[str]:
    """The commands of the one `grpcurl-examples:<name>` block, wherever in the docs it is."""
    found = [
        (doc, match)
        for doc in DOCS
        for match in re.finditer(_BLOCK.format(name=re.escape(name)), doc.read_text(), re.S)
    ]
    where = [str(doc.relative_to(ROOT)) for doc, _ in found]
    assert len(found) == 1, f"grpcurl-examples:{name} should be in one place, found in {where}"
    return [line for line in found[0][1].group(1).splitlines() if line.strip()]


def test_every_example_block_is_tested() -> None:
    names = {
        name
        for doc in DOCS
        for name in re.findall(r"<!-- grpcurl-examples:([a-z0-9-]+) -->", doc.read_text())
    }
    assert names == TESTED_BLOCKS


def run_examples(
    block: str, printed_target: str, target: str, token: str, grpcurl: Path
) -> list[str]:
    """Runs a docs block's commands as printed (only the port swapped); their outputs."""
    outputs = []
    for command in docs_block(block):
        assert command.startswith("grpcurl ")
        result = subprocess.run(
            ["bash", "-c", command.replace(printed_target, target)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "TOKEN": token, "PATH": f"{grpcurl.parent}:{os.environ['PATH']}"},
        )
        assert result.returncode == 0, f"{command}\n{result.stderr}"
        outputs.append(result.stdout)
    return outputs


def test_state_examples_work_as_printed(jwt_key: str, log_dir: Path) -> None:
    grpcurl = tool_path("grpcurl")
    port = free_port()
    env = {
        "STATE_PORT": str(port),
        "STATE_METRICS_PORT": "-1",
        "STATE_AUTH_JWT_KEY": jwt_key,
        "STATE_SQLITE_PATH": str(log_dir / "state.sqlite3"),
    }
    proc = ChildProcess(
        [sys.executable, "-m", "voiceagent_backbone.state_svc"], log_dir / "state.log", env
    )
    try:
        proc.wait_for_port(port, 30, "state_svc")
        token = mint_token(
            jwt_key, tenant="demo", scopes=["state.read", "state.write", "state.admin"]
        )
        outputs = run_examples("state", "127.0.0.1:50051", f"127.0.0.1:{port}", token, grpcurl)
        created, first, again, history = (json.loads(o) for o in outputs[:4])
        assert created["conversation"]["room_name"] == "support-room"
        assert [r["seq"] for r in first["results"]] == ["1", "2"]
        assert [r["seq"] for r in again["results"]] == ["1", "2"]
        assert all(r.get("duplicate") for r in again["results"])
        assert [e["text"] for e in history["events"]] == [
            "I need to move my appointment",
            "Sure, to which day?",
        ]
    finally:
        proc.stop()


def test_context_examples_work_as_printed(jwt_key: str, log_dir: Path) -> None:
    grpcurl = tool_path("grpcurl")
    with both_services(log_dir, jwt_key) as (ports, _, _):
        token = mint_token(jwt_key, tenant="demo", scopes=["context.read", "context.write"])
        outputs = run_examples(
            "context", "127.0.0.1:50052", f"127.0.0.1:{ports.context}", token, grpcurl
        )
        ingested, facts, enriched, status = (json.loads(o) for o in outputs)
        assert ingested["document"]["chunk_count"] == 1
        assert facts["facts"][0]["fact_id"] == "mobility"
        sources = [item["source"] for item in enriched["items"]]
        assert sources[0] == "SOURCE_KIND_KNOWLEDGE"
        assert "SOURCE_KIND_FACT" in sources
        assert "Elm Street" in enriched["context_block"]
        assert status["knowledge_chunks"] == "1"
