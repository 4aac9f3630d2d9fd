"""UUIDv7 (RFC 9562): time-ordered ids that clients generate, so retries are idempotent."""

from __future__ import annotations

import hashlib
import os
import random
import re
import threading
import time
import uuid

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_lock = threading.Lock()
# Ids must be unique, not secret: a per-process generator seeded from the OS (and reseeded
# in forked children by the random module) saves two syscalls per id on the agent's hot path.
_random = random.Random(int.from_bytes(os.urandom(16), "big"))
os.register_at_fork(after_in_child=lambda: _random.seed(int.from_bytes(os.urandom(16), "big")))
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A UUIDv7 string; ids from one process increase strictly (a 12-bit counter per ms)."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, _random.getrandbits(10)
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one ms: borrow the next ms
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    rand_b = _random.getrandbits(62)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    # Formatted directly: a third of the cost of str(uuid.UUID(int=...)) on the hot path.
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_for(name: str, time_ms: int) -> str:
    """A UUIDv7 that every writer derives alike from `name` (and a time they share): the
    idempotency key of a record several processes may write, of which one must win."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:10], "big")
    rand_a, rand_b = digest >> 68, digest & ((1 << 62) - 1)
    value = ((time_ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62)
    h = f"{value | rand_b:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_uuid(text: str) -> bool:
    """Canonical lower-case UUID text (any version)."""
    return bool(_UUID.match(text))


def is_uuid7(text: str) -> bool:
    return is_uuid(text) and text[14] == "7" and text[19] in "89ab"


def uuid7_time_ms(text: str) -> int:
    return uuid.UUID(text).int >> 80
