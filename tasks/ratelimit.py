"""When each request of the HTTP layer (tasks/http.py) may start: spacing across all threads,
and per-host pauses for 429/503 that hold back every thread, slots already handed out included."""

from __future__ import annotations

import collections
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable


class Stopped(Exception):
    """The session was closed while this request waited for its turn."""


@dataclass(slots=True)
class _Gate:
    """Per-host state of the limiter."""

    paused_until: float = 0.0
    epoch: int = 0  # bumped by every pause: slots handed out before it are void
    probe: str = "none"  # after a pause: "wanted", then "inflight" until the first answer
    strikes: int = 0  # consecutive 429s without Retry-After


class Limiter:
    """When each request may start.

    Slots are handed out in order, `interval` apart across all threads and hosts, so threads
    that oversleep do not drift the schedule and the average never exceeds 1/interval. After
    a start that came late the next ones may catch up, at most 10% faster, and never more than
    one second's worth of starts within a second. `pause(host, until)` holds back every
    request to that host, including those already holding a slot: such a slot is void and its
    thread queues again once the pause is over. After a pause one request (the probe) goes
    first and the others wait for its answer, so a pause never ends in a burst."""

    MARGIN = 1.01  # the server never sees more than 1/interval, a thread waking 10 ms late included
    CATCH_UP = 0.9  # after a late start the next may follow at 0.9 interval, till the schedule is met again

    def __init__(self, interval: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._next = 0.0  # the next slot to hand out
        self._starts: collections.deque = collections.deque(maxlen=1)  # when the last requests actually went
        self._gates: dict[str, _Gate] = {}
        self._stopped = False
        self._set_interval(interval * self.MARGIN)

    def _set_interval(self, interval: float) -> None:
        self.interval = interval
        per_second = max(1, math.ceil(1.0 / interval)) if interval > 0 else 1
        self._starts = collections.deque(self._starts, maxlen=per_second)

    def _gate(self, host: str) -> _Gate:
        return self._gates.setdefault(host, _Gate())

    def slow_down(self, interval: float) -> None:
        with self._cond:
            self._set_interval(max(self.interval, interval * self.MARGIN))

    def _ready(self, start: float) -> float:
        """The slot, unless the starts so far need this one to wait longer."""
        ready = start
        if self._starts and self.interval:
            ready = max(ready, self._starts[-1] + self.CATCH_UP * self.interval)
            if len(self._starts) == self._starts.maxlen:
                ready = max(ready, self._starts[0] + self._starts.maxlen * self.interval)
        return ready

    def acquire(self, host: str) -> bool:
        """Wait for this host's next slot; True when this request is the probe after a pause."""
        with self._cond:
            gate = self._gate(host)
            while True:
                if self._stopped:
                    raise Stopped(host)
                now = self._clock()
                if now < gate.paused_until:
                    self._cond.wait(gate.paused_until - now)
                    continue
                if gate.probe == "inflight":
                    self._cond.wait()
                    continue
                start = max(now, self._next)
                self._next = start + self.interval
                epoch, probe = gate.epoch, gate.probe == "wanted"
                if probe:
                    gate.probe = "inflight"
                while not self._stopped and gate.epoch == epoch:
                    now, ready = self._clock(), self._ready(start)
                    if now >= ready:
                        break
                    self._cond.wait(ready - now)
                if gate.epoch == epoch and not self._stopped:
                    self._starts.append(now)
                    return probe
                # paused while this slot waited: it is void, queue again

    def release(self, host: str, probe: bool) -> None:
        """The request's answer (or error) is in; after a probe, let the others go."""
        if probe:
            with self._cond:
                gate = self._gate(host)
                if gate.probe == "inflight":
                    gate.probe = "none"
                self._cond.notify_all()

    def pause(self, host: str, until: float) -> None:
        with self._cond:
            gate = self._gate(host)
            gate.paused_until = max(gate.paused_until, until)
            gate.epoch += 1
            gate.probe = "wanted"
            self._cond.notify_all()

    def back_off(self, host: str, base: float, cap: float, now: float) -> float:
        """A 429 without Retry-After: pause the host base, 2 base, 4 base, ... (capped, jittered up)."""
        with self._cond:
            gate = self._gate(host)
            gate.strikes += 1
            wait = min(cap, base * 2 ** (gate.strikes - 1) * random.uniform(1.0, 1.25))
        self.pause(host, now + wait)
        return wait

    def answered(self, host: str) -> None:
        """An answer that is not "slow down": the next 429 backs off from the start."""
        with self._cond:
            self._gate(host).strikes = 0

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
