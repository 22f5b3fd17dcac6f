"""Accounts: users.txt (`name:bcrypt-hash` per line), the login check, and the edits of adduser/passwd/deluser.

No password is kept or logged: users.txt holds bcrypt hashes only, and `UserStore.check`
answers yes or no.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import bcrypt

from .auth_cache import AuthCache
from .logs import log

USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")  # names folders: no "/", no leading "."
# bcrypt's costs are 4 to 31: another one is no hash bcrypt can check.
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$(?:0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
BCRYPT_MAX_PASSWORD = 72  # bcrypt ignores (bcrypt 5 refuses) longer passwords
DEFAULT_ROUNDS = 12  # bcrypt's own default cost: about 0.2 s a check


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """Return the bcrypt hash of password, as stored in users.txt."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def cost_of(hashed: bytes) -> int:
    """The bcrypt cost of a hash: `$2b$12$...` -> 12."""
    return int(hashed.split(b"$")[2])


class DummyHashes:
    """What an unknown name is checked against: a hash at the cost of an account, picked from the name.

    The same name always gets the same cost, even after a restart (no average over tries,
    or over restarts, tells it apart from an account), and names spread over the costs as
    the accounts do (a name checked at a rare cost is no sign of an account). The pick is
    keyed with the accounts' hashes, which no client knows, so no one can work it out.
    An edit of users.txt deals the names out afresh.
    """

    def __init__(self, table: dict[str, bytes]) -> None:
        costs = sorted(cost_of(hashed) for hashed in table.values()) or [DEFAULT_ROUNDS]
        # A salt of the cost and a checksum no bcrypt computes (all dots): well-formed, the
        # same work as a real hash, matched by no password, and made without bcrypt work.
        made = {cost: bcrypt.gensalt(cost) + b"." * 31 for cost in set(costs)}
        self.hashes = [made[cost] for cost in costs]  # one per account
        self.key = hashlib.sha256(b"\n".join(sorted(table.values()))).digest()

    def for_name(self, name: str) -> bytes:
        digest = hmac.digest(self.key, name.encode("utf-8", "replace"), "sha256")
        return self.hashes[int.from_bytes(digest[:8]) * len(self.hashes) >> 64]


def find_account(accounts: Iterable[str], name: str) -> str | None:
    """The account that name means, compared case-insensitively as mail addresses are (exact match first)."""
    if name in accounts:
        return name
    folded = name.casefold()
    return next((account for account in accounts if account.casefold() == folded), None)


class UsersFileError(ValueError):
    """users.txt cannot be read or has a malformed line; the message names file and line."""


def parse_users(path: Path) -> dict[str, bytes]:
    """Return {name: bcrypt hash} from a users file; raise UsersFileError naming the bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsersFileError(f"{path}: cannot read users file: {error}") from None
    table: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, hashed = line.partition(":")
        if not colon:
            raise UsersFileError(f"{path}:{number}: expected name:bcrypt-hash")
        if not USERNAME.fullmatch(name):
            raise UsersFileError(f"{path}:{number}: bad username {name!r}")
        if not BCRYPT_HASH.fullmatch(hashed):
            raise UsersFileError(f"{path}:{number}: not a bcrypt hash for {name!r}")
        table[name] = hashed.encode()
    return table


class UserStore:
    """The accounts of users.txt, reloaded when the file changes.

    A login looks at the file every time, so that passwd and deluser count from the next
    login on; other questions (is this a name?) look at most once a second.
    """

    reload_interval = 1.0  # seconds between stat() calls: edits show up within about a second

    def __init__(self, path: Path, auth_cache: AuthCache | None = None) -> None:
        self.path = Path(path)
        # The server hands in its one cache (--auth-cache-ttl); without it, every login pays bcrypt.
        self.auth_cache = AuthCache(ttl=0) if auth_cache is None else auth_cache
        self._lock = threading.Lock()
        self._table = parse_users(self.path)
        self._dummies = DummyHashes(self._table)
        self._stamp = self._file_stamp()
        self._next_stat = time.monotonic() + self.reload_interval

    def __contains__(self, name: object) -> bool:
        return name in self._current()

    def __len__(self) -> int:
        return len(self._current())

    def names(self) -> list[str]:
        """The account names, sorted."""
        return sorted(self._current())

    def account(self, name: str) -> str | None:
        """The account name (as in users.txt) that name means, ignoring case; None if there is none."""
        return find_account(self._current(), name)

    def hash_of(self, name: str) -> bytes | None:
        """The hash users.txt holds for the account name now (the file looked at afresh); None if it has none."""
        return self._current(fresh=True).get(name)

    def check(self, name: str, password: bytes) -> bool:
        """Return True if name exists and password is its password.

        Whatever the name and the password, the bcrypt work is that of an account, so
        timing does not tell which names exist (see DummyHashes). A password that passed
        recently against the same hash is answered by the auth cache, without bcrypt.
        """
        hashed = self._current(fresh=True).get(name)
        if hashed is None:
            bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], self._dummies.for_name(name))
            return False
        return self.auth_cache.recalls(name, password, hashed) or self._bcrypt_check(name, password, hashed)

    def _bcrypt_check(self, name: str, password: bytes, hashed: bytes) -> bool:
        # bcrypt 5 refuses a longer password; it is wrong, but pays this account's cost like any wrong one.
        matches = bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], hashed)
        if not (matches and len(password) <= BCRYPT_MAX_PASSWORD):
            return False  # never cached: the login throttle counts failures
        self.auth_cache.remember(name, password, hashed)
        return True

    def refresh(self, *, fresh: bool = False) -> None:
        """Reload users.txt if it changed: look now if fresh, else at most once every reload_interval."""
        now = time.monotonic()
        if fresh or now >= self._next_stat:
            with self._lock:
                if fresh or now >= self._next_stat:
                    self._next_stat = now + self.reload_interval
                    self._reload_if_changed()

    def _current(self, *, fresh: bool = False) -> dict[str, bytes]:
        """The accounts, after a look at users.txt (see refresh)."""
        self.refresh(fresh=fresh)
        return self._table

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            table = parse_users(self.path)
        except UsersFileError as error:
            log.error("%s; keeping the previous %d accounts", error, len(self._table))
            return
        # No bcrypt work (a new dummy hash used to take 0.2 s here): accounts and costs change together.
        self._table, self._dummies = table, DummyHashes(table)
        self.auth_cache.forget_changed(table)  # a changed or removed account: its entry goes at once
        log.info("reloaded %s: %d accounts", self.path, len(self._table))


def _atomic_write_text(path: Path, text: str) -> None:
    """Replace path's content so that a reader sees the old or the new file, never half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def rewrite_users_file(path: Path, name: str, new_hash: str | None) -> None:
    """Set the hash of name (adding the line if needed), or remove name if new_hash is None.

    Comments and other lines are kept as they are.
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if line.strip().partition(":")[0] != name]
    if new_hash is not None:
        kept.append(f"{name}:{new_hash}")
    _atomic_write_text(path, "".join(line + "\n" for line in kept))
