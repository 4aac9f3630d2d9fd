"""Servers for benchmarks: FerretDB (or MONGODB_URI) and state_svc, as real processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early (code {proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port} within {timeout_s}s")


@contextlib.contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def mongodb(workdir: Path) -> Iterator[tuple[str, str]]:
    """(uri, kind): MONGODB_URI when set, otherwise FerretDB from .tools/bin."""
    external = os.environ.get("MONGODB_URI")
    if external:
        yield external, "mongodb"
        return
    binary = ROOT / ".tools" / "bin" / "ferretdb"
    if not binary.exists():
        raise SystemExit("FerretDB is not built: run 'make tools' (or set MONGODB_URI)")
    port = free_port()
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    args = [
        str(binary),
        f"--listen-addr=127.0.0.1:{port}",
        "--handler=sqlite",
        f"--sqlite-url=file:{workdir / 'data'}/",
        f"--state-dir={workdir}",
        "--telemetry=disable",
        f"--debug-addr=127.0.0.1:{free_port()}",
        "--log-level=error",
    ]
    with process(args, workdir / "ferretdb.log") as proc:
        wait_for_port(port, proc, "FerretDB")
        yield f"mongodb://127.0.0.1:{port}/", "ferretdb"


@contextlib.contextmanager
def state_service(
    workdir: Path, jwt_key: str, mongodb_uri: str | None, database: str, kind: str
) -> Iterator[int]:
    """state_svc on MongoDB (uri given) or on its embedded SQLite file in workdir."""
    with state_service_process(workdir, jwt_key, mongodb_uri, database, kind) as (port, _):
        yield port


@contextlib.contextmanager
def state_service_process(
    workdir: Path, jwt_key: str, mongodb_uri: str | None, database: str, kind: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The same, with its process (for its memory)."""
    port = free_port()
    env = {
        "STATE_PORT": str(port),
        "STATE_METRICS_PORT": "-1",
        "STATE_AUTH_JWT_KEY": jwt_key,
        "STATE_LOG_LEVEL": "WARNING",
        "STATE_FEED_POLL_INTERVAL_S": "0.05",
    }
    if mongodb_uri is None:
        env["STATE_SQLITE_PATH"] = str(workdir / "state.sqlite3")
        env["STATE_SQLITE_SYNCHRONOUS"] = "NORMAL"
    else:
        env["STATE_MONGODB_URI"] = mongodb_uri
        env["STATE_MONGODB_DATABASE"] = database
        env["STATE_MONGODB_WRITE_CONCERN"] = "1" if kind == "ferretdb" else "majority"
    with process(
        [sys.executable, "-m", "voiceagent_backbone.state_svc"], workdir / "state_svc.log", env
    ) as proc:
        wait_for_port(port, proc, "state_svc")
        yield port, proc


@contextlib.contextmanager
def context_service(
    workdir: Path, jwt_key: str, state_port: int, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """context_svc following the state_svc on state_port; its index file lives in workdir."""
    port = free_port()
    env = {
        "CONTEXT_PORT": str(port),
        "CONTEXT_METRICS_PORT": "-1",
        "CONTEXT_AUTH_JWT_KEY": jwt_key,
        "CONTEXT_STATE_TARGET": f"127.0.0.1:{state_port}",
        "CONTEXT_INDEX_PATH": str(workdir / "context.sqlite3"),
        "CONTEXT_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    with process(
        [sys.executable, "-m", "voiceagent_backbone.context_svc"], workdir / "context_svc.log", env
    ) as proc:
        wait_for_port(port, proc, "context_svc", timeout_s=120)
        yield port, proc
