"""Server-wide limits: how many sessions, how long each may take, how many failed logins.

One `ConnectionTable` and one `LoginThrottle` exist per server process, whichever port
or protocol a client comes in by: a limit that each listener kept for itself could be
got around by using the other port.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from typing import Protocol


class Interruptible(Protocol):
    """A session the table can cut short: the watchdog and the shutdown do."""

    deadline: float | None

    def interrupt(self, reason: str) -> None: ...


class ConnectionTable:
    """The open sessions of the whole server: caps on their number, their deadlines, and shutdown."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._per_address: defaultdict[str, int] = defaultdict(int)
        self._total = 0
        self._sessions: set[Interruptible] = set()
        self._closing_reason: str | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def admit(self, address: str) -> str | None:
        """Take a slot for address; return why not if the caps are reached."""
        with self._lock:
            if self._total >= self.max_total:
                return "Too many connections"
            if self._per_address[address] >= self.max_per_address:
                return "Too many connections from your address"
            self._total += 1
            self._per_address[address] += 1
            return None

    def release(self, address: str) -> None:
        with self._lock:
            self._total -= 1
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]
            if not self._total:
                self._idle.notify_all()

    def register(self, session: Interruptible) -> None:
        with self._lock:
            self._sessions.add(session)
            closing_reason = self._closing_reason
        if closing_reason:  # it slipped in while the server was closing
            session.interrupt(closing_reason)

    def unregister(self, session: Interruptible) -> None:
        with self._lock:
            self._sessions.discard(session)

    def expire_overdue(self) -> None:
        """Cut off sessions past their deadline: a client sending a byte a second is no exception."""
        now = time.monotonic()
        with self._lock:
            overdue = [s for s in self._sessions if s.deadline is not None and s.deadline < now]
        for session in overdue:
            session.interrupt("Timeout")

    def interrupt_all(self, reason: str) -> None:
        with self._lock:
            self._closing_reason = reason
            sessions = list(self._sessions)
        for session in sessions:
            session.interrupt(reason)

    def wait_until_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._total, timeout)


class LoginThrottle:
    """Counts failed logins per address; too many within the window blocks new attempts."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, deque(maxlen=self.max_failures)).append(time.monotonic())

    def blocked(self, address: str) -> bool:
        """True while address has max_failures failures, the oldest within the window."""
        with self._lock:
            failures = self._failures.get(address)
            if not failures:
                return False
            if time.monotonic() - failures[-1] > self.window:
                del self._failures[address]  # forgotten: keeps the table small
                return False
            return len(failures) >= self.max_failures and time.monotonic() - failures[0] <= self.window
