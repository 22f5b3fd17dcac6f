"""The authentication cache: a login that costs bcrypt once, not every time (as Dovecot's auth_cache).

A client that sends one message per connection (swaks, msmtp, curl, a class's script)
logs in every time, and bcrypt at cost 12 is about 0.2 s of CPU a check: some 8 logins
a second on two cores, however fast the rest is. So a successful check is remembered
for a while, per user, as

    HMAC-SHA256(key, password), the bcrypt hash it was checked against, an expiry

where key is random and made when the server starts. A later login with the same
password, while users.txt still holds the same hash, is answered by one HMAC and
`hmac.compare_digest` instead of bcrypt.

What it trades: someone who can read the server's memory could test guesses against
the HMAC at SHA-256 speed instead of bcrypt's. That someone can already read the
passwords themselves as they arrive, so the cache gives away little; it holds no
password, and nothing of it reaches a disk or a log.

What it never does: remember a failure (the login throttle deals with those), outlive
a change of the account (the entry is dropped as soon as users.txt holds another hash
or no longer holds the name), or grow without bound (least recently used entries go).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class _Entry:
    digest: bytes  # HMAC-SHA256 of the password, under the cache's key
    hashed: bytes  # the users.txt hash the password was checked against
    expires: float  # on the cache's clock


class AuthCache:
    """Successful logins of the last ttl seconds, per user; ttl 0 turns the cache off.

    One instance per server process, shared by every protocol that checks passwords.
    """

    max_entries = 10_000  # users; the least recently used entry goes first

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._key = secrets.token_bytes(32)  # per process: a digest means nothing elsewhere
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def recalls(self, name: str, password: bytes, hashed: bytes) -> bool:
        """True if name logged in with password within the ttl, and its hash is still hashed."""
        if self.ttl <= 0:
            return False
        digest = self._digest(password)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return False
            if entry.hashed != hashed or entry.expires <= self._clock():
                del self._entries[name]  # the account changed, or the entry is too old
                return False
            self._entries.move_to_end(name)
        # Constant time, so that how long a wrong guess takes tells nothing about the right one.
        return hmac.compare_digest(entry.digest, digest)

    def remember(self, name: str, password: bytes, hashed: bytes) -> None:
        """Record that bcrypt found password right for name against hashed; call it on success only."""
        if self.ttl <= 0:
            return
        entry = _Entry(self._digest(password), hashed, self._clock() + self.ttl)
        with self._lock:
            self._entries[name] = entry
            self._entries.move_to_end(name)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget_changed(self, accounts: Mapping[str, bytes]) -> None:
        """Drop the entries of users that accounts (name -> hash) no longer holds, or holds with another hash."""
        with self._lock:
            for name in [name for name, entry in self._entries.items() if accounts.get(name) != entry.hashed]:
                del self._entries[name]

    def _digest(self, password: bytes) -> bytes:
        return hmac.digest(self._key, password, hashlib.sha256)
