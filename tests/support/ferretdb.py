"""The MongoDB-wire server for tests: FerretDB v1.24.2 on SQLite, or MONGODB_URI."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import child_process, free_port, tool_path


@dataclass(frozen=True)
class MongoTarget:
    uri: str
    # A database name unique to this test session, so runs against a shared server
    # never see each other's data.
    database: str
    kind: str  # "ferretdb" or "external"


@contextlib.contextmanager
def mongo_target(workdir: Path) -> Iterator[MongoTarget]:
    database = f"test_{uuid.uuid4().hex[:12]}"
    external = os.environ.get("MONGODB_URI")
    if external:
        yield MongoTarget(external, database, "external")
        return
    port = free_port()
    args = ferretdb_command(workdir, port)
    with child_process(args, workdir / "ferretdb.log") as proc:
        proc.wait_for_port(port, timeout_s=30, what="FerretDB")
        yield MongoTarget(f"mongodb://127.0.0.1:{port}/", database, "ferretdb")


def ferretdb_command(workdir: Path, port: int) -> list[str | os.PathLike[str]]:
    """FerretDB on SQLite files in WORKDIR/data, listening on PORT: run it again with the
    same arguments and it serves the same data (the chaos test restarts it)."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    return [
        tool_path("ferretdb"),
        f"--listen-addr=127.0.0.1:{port}",
        "--handler=sqlite",
        f"--sqlite-url=file:{data}/",
        f"--state-dir={workdir}",
        "--telemetry=disable",
        f"--debug-addr=127.0.0.1:{free_port()}",
        "--log-level=warn",
    ]
