"""Server-wide limits: how many sessions, how long each may take, how many failed logins.

One `ConnectionTable` and one `LoginThrottle` exist per server process, whichever port
or protocol a client comes in by: a limit that each listener kept for itself could be
got around by using the other port.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import hashlib
import math
import secrets
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol


class Interruptible(Protocol):
    """A session the table can cut short: the watchdog and the shutdown do."""

    deadline: float | None
    protocol: str  # "SMTP", "POP3"

    def interrupt(self, reason: str) -> None: ...

    def logged_in_as(self) -> str | None:
        """The user the session has logged in, or None."""
        ...


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

    def who_is_here(self) -> tuple[int, dict[str, list[str]]]:
        """The sessions open now, and the users logged in, sorted, by protocol (a user may be there twice)."""
        with self._lock:
            sessions = list(self._sessions)
        users: dict[str, list[str]] = {}
        for session in sessions:
            user = session.logged_in_as()
            if user is not None:
                users.setdefault(session.protocol, []).append(user)
        return len(sessions), {protocol: sorted(names) for protocol, names in sorted(users.items(), reverse=True)}

    def in_use(self) -> tuple[int, dict[str, int]]:
        """Read-only, for the web view: the sessions open in all, and per address."""
        with self._lock:
            return self._total, dict(self._per_address)

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


@dataclasses.dataclass(frozen=True)
class LoginRefused:
    """LoginThrottle.begin()'s answer when a login may not even be checked: why, and the whole seconds to wait."""

    reason: str
    seconds: int

    def __str__(self) -> str:
        return f"{self.reason}, try again in {self.seconds} s"


class _Counts:
    """The failed logins of one key, and its checks in flight, as the times they happened (oldest first)."""

    __slots__ = ("failures", "in_flight", "touched")

    def __init__(self) -> None:
        self.failures: list[float] = []
        self.in_flight: list[float] = []
        self.touched = 0.0  # when a login last began or ended here

    def forget_before(self, cutoff: float) -> None:
        del self.failures[: bisect.bisect_right(self.failures, cutoff)]
        # A check still "in flight" after a whole window was abandoned (its thread died): let it go too.
        del self.in_flight[: bisect.bisect_right(self.in_flight, cutoff)]

    def __bool__(self) -> bool:
        return bool(self.failures or self.in_flight)


class LoginAttempt:
    """One login being checked. From `begin()` on it holds a place in the counts; unless
    `succeeded()` is called before its `with` block ends, it ends as a failed login."""

    def __init__(self, throttle: LoginThrottle, name_key: Hashable, address_key: Hashable, started: float) -> None:
        self._throttle = throttle
        self.name_key = name_key
        self.address_key = address_key
        self.started = started
        self.success = False

    def succeeded(self) -> None:
        """The password was right: this login counts as no failure, and forgives the earlier ones of its name."""
        self.success = True

    def __enter__(self) -> LoginAttempt:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._throttle.end(self)


class LoginThrottle:
    """Failed logins per (address, name) and per address; past a limit, a login is refused unchecked.

    A login holds its place in the counts from before its password is checked, so however
    many guesses arrive at once, at most the limit's worth of bcrypt checks ever run per
    name and per address. A login that finds the places taken by checks still running
    (not by failures) waits for them, a bcrypt check or so, instead of being refused: a
    whole class logging in at once from one address is queued, never turned away.

    The first limit (small) makes a name that failed too often from an address wait, and
    only that name: a class on one machine shares one address. The second (larger) stops
    an address guessing across many names. A successful login
    forgives the failures of its name (the student got in), not those of its address (or
    an attacker's own account would wipe the count). The name counted is what the client
    typed, account or not, so a 454 tells nothing about which names exist; the table
    keeps a keyed digest of it, never the text (it may be a password typed in the wrong field).

    The same calls serve every protocol (SMTP AUTH, POP3 USER/PASS and AUTH):

        attempt = throttle.begin(address, name)
        if isinstance(attempt, LoginRefused):
            # Nothing is checked. str(attempt) says why and for how long, e.g.
            # "Too many failed logins for this name, try again in 42 s": SMTP 454, POP3 -ERR [SYS/TEMP].
            return
        with attempt:  # just the check: the client may be back with its next login as soon as it has a reply
            if users.check(name, password):
                attempt.succeeded()
        if attempt.success: ...  # logged in; else the failure is counted already

    Bounded: a record whose last login is a window old goes at the next begin(); past
    max_records the least recently used go, even if young.
    """

    max_records = 20_000  # about 370 bytes each: 7 MB at most; a window of bcrypt checks seldom makes this many
    max_wait = 30.0  # seconds a login waits for the checks ahead of it (a class at cost 12: 30 checks on 2 cores, 4 s)

    def __init__(
        self,
        max_per_name: int,
        max_per_address: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_per_name = max_per_name
        self.max_per_address = max_per_address
        self.window = window
        self._clock = clock
        self._name_key = secrets.token_bytes(16)
        self._records: OrderedDict[Hashable, _Counts] = OrderedDict()  # least recently touched first
        self._lock = threading.Lock()
        self._check_ended = threading.Condition(self._lock)  # wakes the logins waiting for a place

    def __len__(self) -> int:
        return len(self._records)

    def begin(self, address: str, name: str) -> LoginAttempt | LoginRefused:
        """Take a place for a login of name from address, or say why not and for how long."""
        name_key = (address, self._digest(name))
        give_up = time.monotonic() + self.max_wait
        with self._check_ended:
            while True:
                now = self._clock()
                blocks = [
                    block
                    for block in (
                        self._block(name_key, self.max_per_name, "Too many failed logins for this name", now),
                        self._block(address, self.max_per_address, "Too many failed logins from your address", now),
                    )
                    if block is not None
                ]
                if not blocks:
                    break
                refusal = max(blocks, key=lambda block: block.seconds)
                if refusal.seconds:
                    return refusal
                # Only checks in flight stand in the way: wait for one to end, within reason.
                if not self._check_ended.wait(give_up - time.monotonic()):
                    return LoginRefused(refusal.reason, 1)
            for key in (name_key, address):
                self._touch(key, now).in_flight.append(now)
            self._forget_old(now)
            return LoginAttempt(self, name_key, address, now)

    def _digest(self, name: str) -> bytes:
        # casefold: Alice and ALICE are one name to count, whatever users.txt makes of them.
        return hashlib.blake2b(name.casefold().encode("utf-8", "replace"), key=self._name_key, digest_size=16).digest()

    def held_back(self, accounts: Iterable[str]) -> list[tuple[str, str | None, int]]:
        """For the web view: (address, name, seconds left) of each login held back now; changes no count.

        The name is None for a whole address held back, and "" for a name that is none of accounts:
        the table keeps no names, and a name that is no account may be a password typed in the
        wrong field.
        """
        names = {self._digest(account): account for account in accounts}
        held = []
        with self._lock:
            now = self._clock()
            for key in list(self._records):
                address, name = (key[0], names.get(key[1], "")) if isinstance(key, tuple) else (key, None)
                limit = self.max_per_address if name is None else self.max_per_name
                refusal = self._block(key, limit, "", now)
                if refusal is not None and refusal.seconds:
                    held.append((str(address), name, refusal.seconds))
        return held

    def _block(self, key: Hashable, limit: int, reason: str, now: float) -> LoginRefused | None:
        """What keeps a login under key from starting now: failures (refused for N s), or
        checks in flight that hold every place (seconds 0: wait for one to end); None if nothing."""
        counts = self._records.get(key)
        if counts is None:
            return None
        counts.forget_before(now - self.window)
        if len(counts.failures) + len(counts.in_flight) < limit:
            return None
        if len(counts.failures) < limit:
            return LoginRefused(reason, 0)  # the checks in flight end within a bcrypt check or so
        # The count drops below the limit when this failure leaves the window.
        leaves = counts.failures[len(counts.failures) - limit] + self.window
        return LoginRefused(reason, max(1, math.ceil(leaves - now)))

    def end(self, attempt: LoginAttempt) -> None:
        """Count the end of attempt (its `with` block calls this): a failure, unless it succeeded."""
        with self._lock:
            now = self._clock()
            for key in (attempt.name_key, attempt.address_key):
                counts = self._touch(key, now)
                with contextlib.suppress(ValueError):  # already forgotten, if it took a window
                    counts.in_flight.remove(attempt.started)
                if not attempt.success:
                    counts.failures.append(now)
                elif key is attempt.name_key:
                    counts.failures.clear()
                if not counts:
                    del self._records[key]
            self._forget_old(now)
            self._check_ended.notify_all()

    def _touch(self, key: Hashable, now: float) -> _Counts:
        """The record of key, made if need be, marked as the most recently used."""
        counts = self._records.get(key)
        if counts is None:
            counts = self._records[key] = _Counts()
        counts.touched = now
        self._records.move_to_end(key)
        return counts

    def _forget_old(self, now: float) -> None:
        """Drop the records untouched for a window (all they hold is older), and the oldest beyond max_records."""
        cutoff = now - self.window
        while self._records:
            key, counts = next(iter(self._records.items()))
            if counts.touched > cutoff and len(self._records) <= self.max_records:
                return
            del self._records[key]
