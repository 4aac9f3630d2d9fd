"""Tools built by scripts/install-tools.sh, free loopback ports, and child processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def tool_path(name: str) -> Path:
    """The path of a Go-built tool; skips the test when missing, fails it under CI=true."""
    built = TOOLS_BIN / name
    if built.is_file() and os.access(built, os.X_OK):
        return built
    found = shutil.which(name)
    if found:
        return Path(found)
    reason = f"{name} is not installed: run scripts/install-tools.sh {name} (needs Go)"
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def run_command(
    args: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120,
) -> str:
    """Runs a command to its end; its stdout, or AssertionError with its stderr."""
    result = subprocess.run(
        [str(a) for a in args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        name = Path(args[0]).name
        rest = " ".join(str(a) for a in args[1:])
        raise AssertionError(f"{name} {rest}: {result.stderr.strip()}")
    return result.stdout


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class ChildProcess:
    """A child process whose output goes to a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode

    def wait_for_port(self, port: int, timeout_s: float, what: str) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{what} exited early:\n{self.output()[-3000:]}")
            return port_open(port)

        wait_until(ready, timeout_s, what)


@contextlib.contextmanager
def child_process(
    args: Sequence[str | os.PathLike[str]],
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[ChildProcess]:
    child = ChildProcess(args, log_path, env)
    try:
        yield child
    finally:
        child.stop()


@dataclass(frozen=True)
class ServicePorts:
    state: int
    context: int


@contextlib.contextmanager
def both_services(
    workdir: Path, jwt_key: str
) -> Iterator[tuple[ServicePorts, ChildProcess, ChildProcess]]:
    """state_svc (embedded SQLite) and context_svc following it, as
    `python -m voiceagent_backbone.<service>` runs them, until both listen."""
    ports = ServicePorts(free_port(), free_port())
    state = ChildProcess(
        [sys.executable, "-m", "voiceagent_backbone.state_svc"],
        workdir / "state.log",
        {
            "STATE_PORT": str(ports.state),
            "STATE_METRICS_PORT": "-1",
            "STATE_AUTH_JWT_KEY": jwt_key,
            "STATE_SQLITE_PATH": str(workdir / "state.sqlite3"),
        },
    )
    context = ChildProcess(
        [sys.executable, "-m", "voiceagent_backbone.context_svc"],
        workdir / "context.log",
        {
            "CONTEXT_PORT": str(ports.context),
            "CONTEXT_METRICS_PORT": "-1",
            "CONTEXT_AUTH_JWT_KEY": jwt_key,
            "CONTEXT_STATE_TARGET": f"127.0.0.1:{ports.state}",
            "CONTEXT_INDEX_PATH": str(workdir / "context.sqlite3"),
        },
    )
    try:
        state.wait_for_port(ports.state, 30, "state_svc")
        context.wait_for_port(ports.context, 90, "context_svc")
        yield ports, state, context
    finally:
        context.stop()
        state.stop()
