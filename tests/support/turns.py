"""LiveKit Agents' own log, read by tests and the agent benchmark: its debug line says when a
turn's reply was the preemptive generation, its warning when one was invalidated."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def framework_log() -> Iterator[list[str]]:
    """LiveKit Agents' own log lines (its debug line says when a preemptive reply is used)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("livekit.agents")
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
