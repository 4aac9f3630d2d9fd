"""The first hour of a new user with `make run`, as they meet it in a terminal: the prompt
and the replies on the terminal and the logs in the log file; Ctrl-C at the prompt or during
a reply ends everything within seconds (exit 130, one line, no traceback, the services
stopped); a bad setting or a port in use is one line naming the variable; `--help` starts
nothing; a chat whose writes state_svc refuses says the conversation is not stored; and
`make run` sets up Python only (no Go tools, no apt)."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_openai import fake_openai
from tests.support.processes import ROOT, both_services, free_port, port_open

_PORT_VARIABLES = ("STATE_PORT", "CONTEXT_PORT", "STATE_METRICS_PORT", "CONTEXT_METRICS_PORT")
# Variables of the developer's shell that would change what these runs do.
_OURS = ("STATE_", "CONTEXT_", "AGENT_", "OPENAI_", "RUN_DIR")


def _env(run_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(_OURS)},
        "RUN_DIR": str(run_dir),
        **{variable: str(free_port()) for variable in _PORT_VARIABLES},
        **extra,
    }


class Terminal:
    """A command on a pseudo-terminal, as a user runs it: stdin, stdout and stderr are the
    terminal, and ^C typed there is the SIGINT of its foreground process group."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.screen = b""
        self._seen = 0  # where the last expected text ended
        self.status: int | None = None
        # Everything the child needs is computed before the fork: it only execs.
        argv = [a.encode() for a in args]
        environ = {k.encode(): v.encode() for k, v in env.items()}
        cwd = str(ROOT)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            try:
                # A user's terminal: Ctrl-C and Ctrl-\ act. A test run started in the
                # background by a non-interactive shell (CI) inherits them ignored, and
                # exec keeps an ignored signal ignored.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGQUIT, signal.SIG_DFL)
                os.chdir(cwd)
                os.execvpe(argv[0], argv, environ)
            finally:
                os._exit(127)

    @property
    def text(self) -> str:
        return self.screen.decode(errors="replace").replace("\r\n", "\n")

    def pump(self, timeout_s: float) -> None:
        """Read what the terminal shows within `timeout_s` (a full pty would block the
        child)."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if ready:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the child side is closed
                data = b""
            self.screen += data
            if not data:
                time.sleep(timeout_s)

    def expect(self, pattern: str, timeout_s: float) -> None:
        """Wait until `pattern` (a regex) is on the screen after what was expected before."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.compile(pattern).search(self.text, self._seen)
            if found:
                self._seen = found.end()
                return
            if self.exited():
                break
            self.pump(0.1)
        raise AssertionError(f"{pattern!r} not on the terminal:\n{self.text[-4000:]}")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exited(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while not self.exited():
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout_s} s:\n{self.text[-4000:]}")
            self.pump(0.05)
        with contextlib.suppress(OSError):
            while True:  # what was written before the exit
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if not ready:
                    break
                data = os.read(self.fd, 65536)
                if not data:
                    break
                self.screen += data
        assert self.status is not None
        return self.status

    def close(self) -> None:
        if not self.exited():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@contextlib.contextmanager
def terminal(args: list[str], env: dict[str, str]) -> Iterator[Terminal]:
    term = Terminal(args, env)
    try:
        yield term
    finally:
        term.close()


def _ports(env: dict[str, str]) -> list[int]:
    return [int(env[v]) for v in ("STATE_PORT", "CONTEXT_PORT")]


def _chat_log(run_dir: Path) -> str:
    return (run_dir / "agent_chat.log").read_text()


def test_make_run_shows_the_prompt_and_replies_and_ctrl_c_at_the_prompt_ends_it(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path / "run", USER="ana")
    with terminal(["make", "--no-print-directory", "run"], env) as term:
        term.expect(r"agent> Hello!", 180)
        term.expect(r"you> $", 10)  # the prompt, waiting for the user
        term.type("My cat is called Tom.\n")
        term.expect(r"agent> \[offline responder\] You said: 'My cat is called Tom.'", 30)
        term.expect(r"you> $", 10)
        term.type("\x03")  # Ctrl-C at the prompt
        started = time.monotonic()
        status = term.wait(10)
        took = time.monotonic() - started
    assert status in (130, -signal.SIGINT), term.text  # make dies of the SIGINT it got too
    assert took < 8, f"Ctrl-C took {took:.1f} s"
    after = term.text.rsplit("you> ", 1)[1]
    lines = [line for line in after.splitlines() if line.strip() and line.strip() != "^C"]
    assert len(lines) == 1, after  # one line, no traceback
    assert re.match(r"Interrupted: conversation [0-9a-f-]{36} is stored", lines[0]), after
    assert "Traceback" not in term.text
    # Logs went to the log file, not to the terminal; the prompts did not go to the log.
    assert '"level"' not in term.text
    log = _chat_log(tmp_path / "run")
    assert "you> " not in log
    assert "Traceback" not in log
    # The services that run.sh started are gone with it.
    assert not any(port_open(p) for p in _ports(env))


def test_ctrl_c_during_a_reply_ends_it_at_once(tmp_path: Path) -> None:
    with fake_openai(first_token_delay_s=60) as llm:  # a reply that takes its time
        env = _env(tmp_path / "run", OPENAI_API_KEY="test-key", AGENT_OPENAI_BASE_URL=llm.base_url)
        with terminal(["bash", "scripts/run.sh"], env) as term:
            term.expect(r"using OpenAI model", 120)
            term.expect(r"you> $", 30)
            term.type("Tell me a long story.\n")
            asked_by = time.monotonic() + 30
            while not llm.requests_to("/chat/completions") and time.monotonic() < asked_by:
                term.pump(0.1)
            assert llm.requests_to("/chat/completions"), "the LLM was never asked"
            term.type("\x03")  # Ctrl-C while the reply is on its way
            started = time.monotonic()
            status = term.wait(10)
            took = time.monotonic() - started
    assert status == 130, term.text
    assert took < 8, f"Ctrl-C took {took:.1f} s"
    assert re.search(r"Interrupted: conversation [0-9a-f-]{36} is stored", term.text), term.text
    assert "Traceback" not in term.text
    assert "Traceback" not in _chat_log(tmp_path / "run")
    assert not any(port_open(p) for p in _ports(env))


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = _env(tmp_path / "run", AGENT_ENRICH_BUDGET_MS="abc")
    done = subprocess.run(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "agent_svc chat: AGENT_ENRICH_BUDGET_MS='abc': Input should be a valid number, unable "
        "to parse string as a number"
    ]
    assert not (tmp_path / "run").exists()  # nothing started, nothing written

    made = subprocess.run(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env={**env, "STATE_GRACE_PERIOD_S": "-1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode != 0
    assert "state_svc: STATE_GRACE_PERIOD_S='-1'" in made.stderr, made.stderr
    assert "Traceback" not in made.stdout + made.stderr
    assert "RUN_DIR" not in made.stdout + made.stderr  # the placeholder it used to print


def test_a_port_in_use_is_said_at_once_naming_the_variable(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path / "run", CONTEXT_PORT=str(port))
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "scripts/run.sh"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert time.monotonic() - started < 10
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"run: already in use: CONTEXT_PORT={port} (another `make run`?); stop it, or set "
        "CONTEXT_PORT to a free port"
    ]
    assert not port_open(int(env["STATE_PORT"]))


def test_a_service_that_cannot_start_is_named_with_its_reason_and_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "dev-jwt-key").write_text("short\n")  # too short for HS256
    env = _env(run_dir)
    done = subprocess.run(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    # Both services refuse the key; whichever stops first is named.
    said = re.fullmatch(r"run: (state_svc|context_svc) stopped while starting: (.*)", lines[0])
    assert said, lines[0]
    assert "32 bytes" in said.group(2)
    assert said.group(2).endswith(f"(log: {run_dir}/{said.group(1)}.log)")
    assert not any(port_open(p) for p in _ports(env))


SCRIPTS = sorted(
    p.name
    for p in (ROOT / "scripts").iterdir()
    if p.suffix in (".sh", ".py") and p.name != "__init__.py"
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_says_what_it_does_on_help_and_starts_nothing(
    script: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    env = _env(run_dir)
    command = [sys.executable if script.endswith(".py") else "bash", f"scripts/{script}"]
    done = subprocess.run(
        [*command, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert script in done.stdout, done.stdout  # how to call it
    assert done.stderr == ""  # no step ran (each says what it does on stderr)
    assert not run_dir.exists()
    assert not any(port_open(int(env[v])) for v in _PORT_VARIABLES)


def test_the_chat_without_a_key_says_it_cannot_store(tmp_path: Path) -> None:
    with both_services(tmp_path, "k" * 48) as (ports, _, _):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(_OURS)},
            "AGENT_STATE_TARGET": f"127.0.0.1:{ports.state}",
            "AGENT_CONTEXT_TARGET": f"127.0.0.1:{ports.context}",
            "AGENT_SPOOL_DIR": str(tmp_path / "spool"),
        }
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "voiceagent_backbone.agent_svc",
                "chat",
                "--rooms-dir",
                str(tmp_path / "rooms"),
                "--log-file",
                str(tmp_path / "chat.log"),
            ],
            input="Remember that I like tea.\n/quit\n",
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - started
    said = done.stdout
    assert done.returncode == 1, said + done.stderr
    assert "is stored in state_svc" not in said
    refused = [line for line in said.splitlines() if "not stored for now" in line]
    assert len(refused) == 1, said  # said once, as soon as it is known
    assert "UNAUTHENTICATED" in refused[0]
    assert "AGENT_AUTH_JWT_KEY" in refused[0]
    end = said.strip().splitlines()[-1]
    assert re.match(r"Conversation [0-9a-f-]{36} is not stored: state_svc refuses", end), said
    assert f"wait in {tmp_path / 'spool'}" in end
    assert took < 30, f"the chat took {took:.1f} s to give up"
    assert done.stderr == ""  # logs in the log file


def test_make_run_sets_up_python_only(tmp_path: Path) -> None:
    """`make run`'s setup: the venv with what the services and the agent import, and no Go
    build, no apt, no test tools. Checked on a venv of its own, with `go`, `apt-get` and
    `dpkg-query` on PATH that record any call."""
    recorded = tmp_path / "called"
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("go", "apt-get", "dpkg-query"):
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\necho "{tool} $*" >>{recorded}\nexit 1\n')
        shim.chmod(0o755)
    dry = subprocess.run(
        ["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert "scripts/setup.sh --run" in dry
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", "scripts/setup.sh", "--run"],
        cwd=ROOT,
        env={
            **os.environ,
            "PATH": f"{shims}:{os.environ['PATH']}",
            "UV_PROJECT_ENVIRONMENT": str(venv),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert not recorded.exists(), recorded.read_text()
    python = venv / "bin" / "python"
    imports = (
        "import voiceagent_backbone.state_svc.service, voiceagent_backbone.context_svc.service, "
        "voiceagent_backbone.agent_svc.terminal"
    )
    subprocess.run([python, "-c", imports], cwd=tmp_path, check=True, timeout=120)
    for test_tool in ("mypy", "pytest", "kubernetes_validate"):
        missing = subprocess.run(
            [python, "-c", f"import {test_tool}"], cwd=tmp_path, capture_output=True, timeout=60
        )
        assert missing.returncode != 0, f"{test_tool} is in make run's venv"
