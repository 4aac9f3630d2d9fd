"""A circuit breaker for calls on the turn path: after repeated failures, stop waiting on a
service that is down and let the turn go on at once; probe again after a pause."""

from __future__ import annotations

import time
from collections.abc import Callable

from voiceagent_backbone.agent_svc import metrics


class CircuitBreaker:
    def __init__(
        self,
        target: str,
        *,
        failures: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self._threshold = failures
        self._open_s = open_s
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._failures >= self._threshold

    def allow(self) -> bool:
        """Closed: yes. Open: no until the pause is over, then one probe at a time."""
        if not self.is_open:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        metrics.CIRCUIT_OPEN.labels(self.target).set(0)

    def record_failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self.is_open:
            self._open_until = self._clock() + self._open_s
            metrics.CIRCUIT_OPEN.labels(self.target).set(1)
