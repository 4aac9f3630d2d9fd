"""Each service's command line: --help lists the settings and starts nothing; a bad value
or argument, a port in use, a database out of reach or a file that cannot be created is one
line naming the variable, with no traceback, and a non-zero exit within seconds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import probe_service
from tests.support.processes import free_port
from voiceagent_backbone.servicekit import server
from voiceagent_backbone.servicekit.config import ConfigurationError

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
        if not k.startswith(("STATE_", "CONTEXT_", "RECOVERY_", "LIVEKIT_", "AGENT_", "OPENAI_"))
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


# Start-up problems are said within a few seconds (not after a 10 s wait); generous for a
# busy machine.
PROMPT_S = 8.0
# Each service's listeners; the others are put on port 0 so that only one is taken.
LISTENERS = {
    "state_svc": ("STATE_PORT", "STATE_METRICS_PORT"),
    "context_svc": ("CONTEXT_PORT", "CONTEXT_METRICS_PORT"),
    "recovery_svc": ("RECOVERY_PORT", "RECOVERY_METRICS_PORT", "RECOVERY_WEBHOOK_PORT"),
    "agent_svc": ("AGENT_HEALTH_PORT", "AGENT_METRICS_PORT"),
}
KEY = "k" * 40


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line that is not one of the service's JSON log records (a warning such as
    "verifying with a shared HS* key" may come first)."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.strip().splitlines() if not line.startswith('{"ts"')]
    assert len(said) == 1, done.stderr
    return said[0]


def timed(
    service: str, args: list[str], cwd: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = run(service, args, cwd, **env)
    return done, time.monotonic() - started


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    ("service", "variable"),
    [(service, variable) for service, variables in LISTENERS.items() for variable in variables],
)
def test_a_port_in_use_is_one_line_naming_the_variable(
    service: str, variable: str, taken_port: int, tmp_path: Path
) -> None:
    env = {other: "0" for other in LISTENERS[service]}
    prefix = variable.split("_", 1)[0]
    env |= {variable: str(taken_port), f"{prefix}_AUTH_JWT_KEY": KEY, **LIVEKIT}
    env |= {"OPENAI_API_KEY": "sk-test"} if service == "agent_svc" else {}
    done, elapsed = timed(service, ["start"] if service == "agent_svc" else [], tmp_path, **env)
    line = one_line(done)
    assert line == (
        f"{service}: {variable}={taken_port}: cannot listen on 127.0.0.1:{taken_port}: the port "
        f"is in use by another process (stop it, or set {variable} to a free port)"
    )
    assert elapsed < PROMPT_S
    # Said before the service opened anything.
    assert list(tmp_path.iterdir()) == []


def test_two_listeners_on_one_port_are_refused(tmp_path: Path) -> None:
    port = str(free_port())
    done = run("state_svc", [], tmp_path, STATE_PORT=port, STATE_METRICS_PORT=port)
    assert one_line(done) == (
        f"state_svc: STATE_METRICS_PORT={port}: the same port as STATE_PORT; each listener "
        "needs its own"
    )


def test_an_unreachable_mongodb_is_one_line_within_seconds(tmp_path: Path) -> None:
    closed = free_port()  # bound and released: nothing listens there
    done, elapsed = timed(
        "state_svc",
        [],
        tmp_path,
        STATE_PORT="0",
        STATE_METRICS_PORT="-1",
        STATE_AUTH_JWT_KEY=KEY,
        STATE_MONGODB_URI=f"mongodb://state:hunter2@127.0.0.1:{closed}/voiceagent",
    )
    line = error_line(done)
    assert line.startswith(
        f"state_svc: STATE_MONGODB_URI: the database at 127.0.0.1:{closed} is unreachable: "
    ), line
    assert line.endswith("(no answer within 3 s; STATE_MONGODB_START_TIMEOUT_MS sets the wait)")
    assert "hunter2" not in done.stderr
    assert elapsed < PROMPT_S


@pytest.mark.parametrize(
    ("service", "variable", "what"),
    [
        ("state_svc", "STATE_SQLITE_PATH", "the database file"),
        ("context_svc", "CONTEXT_INDEX_PATH", "the index file"),
    ],
)
def test_a_database_file_that_cannot_be_created_is_one_line(
    service: str, variable: str, what: str, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    path = not_a_folder / "db.sqlite3"
    prefix = variable.split("_", 1)[0]
    done = run(
        service,
        [],
        tmp_path,
        **{
            variable: str(path),
            f"{prefix}_PORT": "0",
            f"{prefix}_METRICS_PORT": "-1",
            f"{prefix}_AUTH_JWT_KEY": KEY,
            "CONTEXT_FOLLOW_FEED": "false",
        },
    )
    assert error_line(done) == (
        f"{service}: {variable}='{path}': cannot open or create {what} ({not_a_folder} is not "
        "a directory)"
    )


def test_a_missing_key_file_and_a_check_across_settings_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    ports = {"STATE_PORT": "0", "STATE_METRICS_PORT": "-1"}
    done = run("state_svc", [], tmp_path, STATE_AUTH_JWT_KEY_FILE=str(missing), **ports)
    assert one_line(done) == (
        f"state_svc: STATE_AUTH_JWT_KEY_FILE='{missing}': cannot read the key (No such file or "
        "directory)"
    )
    short = run("state_svc", [], tmp_path, STATE_AUTH_JWT_KEY="short", **ports)
    assert one_line(short) == (
        "state_svc: STATE_AUTH_JWT_KEY: the JWT key for HS* algorithms must be at least 32 bytes"
    )
    # Both said before the store was opened (it would have created .run/state.sqlite3).
    assert list(tmp_path.iterdir()) == []
    openai = run("context_svc", [], tmp_path, CONTEXT_EMBEDDING_BACKEND="openai")
    assert one_line(openai) == (
        "context_svc: CONTEXT_EMBEDDING_BACKEND=openai needs CONTEXT_OPENAI_API_KEY"
    )
    facts = run("context_svc", [], tmp_path, CONTEXT_MAX_FACTS_PER_USER="100000")
    assert one_line(facts).startswith(
        "context_svc: CONTEXT_MAX_FACTS_PER_USER x CONTEXT_MAX_FACT_BYTES must fit in half of "
        "CONTEXT_MAX_MESSAGE_BYTES"
    )


def test_agent_svc_without_an_openai_key_says_so_within_seconds(tmp_path: Path) -> None:
    done, elapsed = timed("agent_svc", ["start"], tmp_path, **LIVEKIT)
    assert one_line(done) == (
        "agent_svc: the voice worker needs OPENAI_API_KEY (try `make run` for text)"
    )
    assert elapsed < PROMPT_S


def test_the_token_cli_says_its_options_and_refuses_mistakes_in_one_line(
    tmp_path: Path,
) -> None:
    shown = run("servicekit.token", ["--help"], tmp_path)
    assert shown.returncode == 0
    assert shown.stdout.startswith("usage: python -m voiceagent_backbone.servicekit.token")
    assert "--key-env" in shown.stdout
    assert shown.stderr == ""
    assert "eyJ" not in shown.stdout, "--help minted a token"
    for args, expected in [
        (["--tenant", "demo", "--ttl", "soon"], "argument --ttl: invalid float value: 'soon'"),
        (["--tenant", "demo", "--tennant", "x"], "unrecognized arguments: --tennant x"),
        ([], "the following arguments are required: --tenant"),
        (["--tenant", "demo"], "no signing key: pass --key-file or set STATE_AUTH_JWT_KEY"),
        (
            ["--tenant", "demo", "--key-env", "MY_KEY"],
            "no signing key: pass --key-file or set MY_KEY",
        ),
    ]:
        refused = run("servicekit.token", args, tmp_path)
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert refused.stderr == f"token: {expected} (see --help)\n"
    minted = run("servicekit.token", ["--tenant", "demo"], tmp_path, STATE_AUTH_JWT_KEY=KEY)
    assert minted.returncode == 0, minted.stderr
    assert minted.stdout.startswith("eyJ")


@pytest.mark.parametrize("listener", ["port", "metrics_port"])
async def test_a_port_taken_after_the_check_is_the_same_error_and_the_hooks_run(
    listener: str, taken_port: int
) -> None:
    """Another process may take the port between the check and the bind: the server's own
    bind failure says the same, and the service's stop hooks still run."""
    ports = {"port": 0, "metrics_port": 0, listener: taken_port}
    settings = probe_service.ProbeSettings.model_validate({**ports, "auth_disabled": True})
    definition = probe_service.definition()
    stopped: list[str] = []

    async def stop() -> None:
        stopped.append("stop")

    definition.on_stop.append(stop)
    variable = f"PROBE_{listener.upper()}"
    with pytest.raises(ConfigurationError) as raised:
        async with server.running(settings, definition):
            pass
    assert str(raised.value) == (
        f"{variable}={taken_port}: cannot listen on 127.0.0.1:{taken_port}: the port is in use "
        f"by another process (stop it, or set {variable} to a free port)"
    )
    assert stopped == ["stop"]
