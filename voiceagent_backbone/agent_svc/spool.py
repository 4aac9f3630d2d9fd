"""EventSpool: the local file every write goes to before it is sent to state_svc.

One file per job process, `spool-<uuid7>.log`, held with an exclusive flock for the life of
the process. Lines are JSON: a write record `{"op": ..., "c": conversation, "m": base64
protobuf}`, or an acknowledgement `{"ack": N}` meaning the first N write records are stored
in state_svc. Writes are sent strictly in order, so what is acknowledged is always a prefix.

A file whose lock can be taken belongs to a process that died (SIGKILL, OOM): the next
process in the same pod claims it, replays its unacknowledged records first and deletes it.
Records carry client-generated ids, so a record that was stored but whose ack line was
never written is a harmless duplicate that state_svc recognises.

Each record is one `os.write` to the kernel: it survives the process being killed the
moment the call returns. With AGENT_SPOOL_FSYNC the sender also fsyncs before each send
(for a spool on a persistent volume that must survive the machine).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from voiceagent_backbone.servicekit.ids import uuid7

log = logging.getLogger(__name__)

_PREFIX = "spool-"
_SUFFIX = ".log"
# Truncate an own spool whose records are all acknowledged once it is this large.
_COMPACT_BYTES = 1 << 20
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@dataclass(frozen=True)
class SpoolRecord:
    op: str
    conversation_id: str
    message: bytes


def encode_record(op: str, conversation_id: str, message: bytes) -> bytes:
    # Formatted by hand (this runs inside session event handlers): op names and ids are
    # plain ASCII, checked here so the line is always valid JSON.
    if not (op.isidentifier() and (not conversation_id or _SAFE_ID.fullmatch(conversation_id))):
        raise ValueError(f"unsafe spool record key: {op!r}, {conversation_id!r}")
    return b'{"op":"%s","c":"%s","m":"%s"}\n' % (
        op.encode(),
        conversation_id.encode(),
        base64.b64encode(message),
    )


def _parse(path: Path) -> tuple[list[SpoolRecord], int]:
    """Records and the acknowledged count; a torn last line (killed mid-write) is skipped."""
    records: list[SpoolRecord] = []
    acked = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                item = json.loads(line)
                if "ack" in item:
                    acked = max(acked, int(item["ack"]))
                else:
                    records.append(
                        SpoolRecord(str(item["op"]), str(item["c"]), base64.b64decode(item["m"]))
                    )
            except (ValueError, KeyError, TypeError):
                log.warning(
                    "unreadable spool line skipped", extra={"file": path.name, "line": number}
                )
    return records, min(acked, len(records))


class _LockedFile:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.acked = 0
        self.size = os.fstat(fd).st_size

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)
        self.size += len(data)

    def ack(self, count: int) -> None:
        self.acked += count
        self.write(b'{"ack":%d}\n' % self.acked)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self, remove: bool) -> None:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)  # releases the lock


def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class EventSpool(_LockedFile):
    """This process's spool file."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{_PREFIX}{uuid7()}{_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        super().__init__(path, fd)
        self.written = 0

    def append(self, line: bytes) -> None:
        self.write(line)
        self.written += 1

    @property
    def pending(self) -> int:
        return self.written - self.acked

    def ack(self, count: int) -> None:
        super().ack(count)
        if self.acked == self.written and self.size > _COMPACT_BYTES:
            # Everything is stored: start the file over instead of letting it grow.
            os.ftruncate(self.fd, 0)
            self.size = 0
            self.acked = self.written = 0

    def read_from(self, index: int) -> list[SpoolRecord]:
        """Records from `index` on (reloads writes that did not fit in the memory queue)."""
        records, _ = _parse(self.path)
        return records[index:]


class OrphanSpool(_LockedFile):
    """A dead process's spool, claimed (locked) by this process for replay."""

    def __init__(self, path: Path, fd: int) -> None:
        super().__init__(path, fd)
        records, acked = _parse(path)
        self.acked = acked
        self.written = len(records)
        self.pending_records = records[acked:]

    @property
    def pending(self) -> int:
        return self.written - self.acked


def claim_orphans(directory: Path) -> list[OrphanSpool]:
    """Lock and load every spool file no live process holds, oldest first."""
    if not directory.is_dir():
        return []
    claimed: list[OrphanSpool] = []
    # uuid7 names sort by creation time: older processes' writes replay first.
    for path in sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}")):
        fd = _try_lock(path)
        if fd is None:
            continue
        orphan = OrphanSpool(path, fd)
        if not orphan.pending_records:
            orphan.close(remove=True)
            continue
        log.info(
            "claimed a spool left by an earlier process",
            extra={"file": path.name, "pending": len(orphan.pending_records)},
        )
        claimed.append(orphan)
    return claimed
