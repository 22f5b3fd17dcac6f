"""The auth cache: a login that passed once is answered without bcrypt, and never wrongly.

A spy on bcrypt.checkpw tells whether a check went to bcrypt; a fake clock stands in
for time, so no test waits or measures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from conftest import POP3Session, RawSession, RunningServer, plain_response, write_users_file

from mailserver import users as users_module
from mailserver.auth_cache import AuthCache
from mailserver.users import UserStore, rewrite_users_file

TTL = 3600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The passwords bcrypt.checkpw was asked about, in order."""
    checks: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checks.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(users_module.bcrypt, "checkpw", spy)
    return checks


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users_file(tmp_path / "users.txt", {"alice": "alice-password", "bob": "bob-password"})


@pytest.fixture
def store(users_file: Path, clock: FakeClock) -> UserStore:
    return UserStore(users_file, AuthCache(TTL, clock=clock))


def test_a_second_login_costs_no_bcrypt(store: UserStore, bcrypt_checks: list[bytes]) -> None:
    assert store.check("alice", b"alice-password")
    assert store.check("alice", b"alice-password")
    assert store.check("alice", b"alice-password")
    assert bcrypt_checks == [b"alice-password"]


def test_another_password_or_user_goes_to_bcrypt(store: UserStore, bcrypt_checks: list[bytes]) -> None:
    assert store.check("alice", b"alice-password")
    assert not store.check("alice", b"alice-passwore")  # a miss: bcrypt says no
    assert not store.check("alice", b"")
    assert store.check("bob", b"bob-password")  # alice's entry is hers alone
    assert bcrypt_checks == [b"alice-password", b"alice-passwore", b"", b"bob-password"]
    assert store.check("alice", b"alice-password")  # the wrong guesses left the entry alone
    assert len(bcrypt_checks) == 4


def test_an_entry_expires_after_the_ttl(store: UserStore, clock: FakeClock, bcrypt_checks: list[bytes]) -> None:
    assert store.check("alice", b"alice-password")
    clock.now += TTL - 1
    assert store.check("alice", b"alice-password")
    assert len(bcrypt_checks) == 1
    clock.now += 1  # TTL seconds after the check that bcrypt made
    assert store.check("alice", b"alice-password")
    assert len(bcrypt_checks) == 2
    clock.now += TTL - 1  # remembered anew from the second bcrypt check
    assert store.check("alice", b"alice-password")
    assert len(bcrypt_checks) == 2


def test_failures_are_never_cached(store: UserStore, bcrypt_checks: list[bytes]) -> None:
    for _ in range(3):
        assert not store.check("alice", b"wrong")
        assert not store.check("nobody", b"wrong")
    assert len(bcrypt_checks) == 6
    assert len(store.auth_cache) == 0


def test_a_changed_password_counts_at_once(users_file: Path, store: UserStore, bcrypt_checks: list[bytes]) -> None:
    """No waiting for the reload interval: the login right after passwd sees the new hash."""
    assert store.check("alice", b"alice-password")
    rewrite_users_file(users_file, "alice", bcrypt.hashpw(b"changed", bcrypt.gensalt(4)).decode())
    assert not store.check("alice", b"alice-password")
    assert store.check("alice", b"changed")
    assert bcrypt_checks == [b"alice-password", b"alice-password", b"changed"]


def test_a_changed_password_drops_the_entry(users_file: Path, store: UserStore) -> None:
    assert store.check("alice", b"alice-password") and store.check("bob", b"bob-password")
    rewrite_users_file(users_file, "alice", bcrypt.hashpw(b"changed", bcrypt.gensalt(4)).decode())
    assert store.check("bob", b"bob-password")  # the first login after the edit looks at the file
    assert len(store.auth_cache) == 1  # bob's; alice's is gone, not just unused


def test_an_entry_remembered_after_the_reload_is_no_good_against_the_new_hash(clock: FakeClock) -> None:
    """Issue 18: a remember() that lands after forget_changed() holds the old hash; it answers no login."""
    old, new = (bcrypt.hashpw(password, bcrypt.gensalt(4)) for password in (b"old-password", b"new-password"))
    cache = AuthCache(TTL, clock=clock)
    cache.forget_changed({"alice": new})  # passwd, reloaded while a bcrypt check was running
    cache.remember("alice", b"old-password", old)  # that check's success lands now
    assert not cache.recalls("alice", b"old-password", new)
    assert len(cache) == 0  # and the stale entry is gone


def test_a_check_that_races_passwd_does_not_let_the_old_password_back_in(
    users_file: Path, store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_checkpw = bcrypt.checkpw

    def passwd_during_the_check(password: bytes, hashed: bytes) -> bool:
        result = real_checkpw(password, hashed)
        if password == b"alice-password":  # the old password's check: passwd lands before it returns
            rewrite_users_file(users_file, "alice", bcrypt.hashpw(b"new-password", bcrypt.gensalt(4)).decode())
            store.refresh(fresh=True)
        return result

    monkeypatch.setattr(users_module.bcrypt, "checkpw", passwd_during_the_check)
    assert store.check("alice", b"alice-password")  # right when it began
    monkeypatch.setattr(users_module.bcrypt, "checkpw", real_checkpw)
    assert not store.check("alice", b"alice-password")  # the entry it left must not answer for the new hash
    assert store.check("alice", b"new-password")


def test_a_deleted_user_is_refused_at_once(users_file: Path, store: UserStore, bcrypt_checks: list[bytes]) -> None:
    assert store.check("bob", b"bob-password")
    rewrite_users_file(users_file, "bob", None)
    assert not store.check("bob", b"bob-password")
    assert len(store.auth_cache) == 0
    assert len(bcrypt_checks) == 2  # the second is the unknown-user dummy check


def test_a_returning_user_with_the_same_password_still_pays_bcrypt(
    users_file: Path, store: UserStore, bcrypt_checks: list[bytes]
) -> None:
    """deluser, then adduser with the same password: a new hash (new salt), so a new check."""
    assert store.check("bob", b"bob-password")
    rewrite_users_file(users_file, "bob", None)
    assert not store.check("bob", b"bob-password")
    rewrite_users_file(users_file, "bob", bcrypt.hashpw(b"bob-password", bcrypt.gensalt(4)).decode())
    assert store.check("bob", b"bob-password")
    assert len(bcrypt_checks) == 3


def test_the_cache_is_bounded_least_recently_used_first(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, bcrypt_checks: list[bytes]
) -> None:
    monkeypatch.setattr(AuthCache, "max_entries", 3)
    names = ["u1", "u2", "u3", "u4"]
    store = UserStore(write_users_file(tmp_path / "users.txt", {name: "pw" for name in names}), AuthCache(TTL, clock))
    for name in names[:3]:
        assert store.check(name, b"pw")
    assert store.check("u1", b"pw")  # u1 is now the most recently used: u2 goes next
    assert store.check("u4", b"pw")
    assert len(store.auth_cache) == 3
    assert len(bcrypt_checks) == 4
    for name in ("u1", "u3", "u4"):
        assert store.check(name, b"pw")
    assert len(bcrypt_checks) == 4  # all three still remembered
    assert store.check("u2", b"pw")
    assert len(bcrypt_checks) == 5  # u2 was forgotten


def test_ttl_zero_turns_the_cache_off(users_file: Path, bcrypt_checks: list[bytes]) -> None:
    store = UserStore(users_file, AuthCache(0))
    for _ in range(3):
        assert store.check("alice", b"alice-password")
    assert len(bcrypt_checks) == 3
    assert len(store.auth_cache) == 0


def test_without_a_cache_every_login_pays_bcrypt(users_file: Path, bcrypt_checks: list[bytes]) -> None:
    store = UserStore(users_file)  # what a UserStore does unless the server hands it a cache
    assert store.check("alice", b"alice-password") and store.check("alice", b"alice-password")
    assert len(bcrypt_checks) == 2


def test_the_cache_keeps_no_password(clock: FakeClock) -> None:
    """A keyed hash, with a key of this process's own: two caches make different digests of one password."""
    first, second = AuthCache(TTL, clock), AuthCache(TTL, clock)
    hashed = b"$2b$04$" + b"a" * 53
    first.remember("alice", b"alice-password", hashed)
    second.remember("alice", b"alice-password", hashed)
    (entry,) = first._entries.values()
    assert b"alice-password" not in repr(entry).encode()
    assert entry.digest != second._entries["alice"].digest
    assert first.recalls("alice", b"alice-password", hashed)
    assert not first.recalls("alice", b"alice-password!", hashed)


# ------------------------------------------------------------------- through SMTP


def log_in(server: RunningServer, connect: Callable[..., RawSession], password: str = "alice-password") -> int:
    session = connect(server)
    session.command("EHLO client.test")
    code = session.command(f"AUTH PLAIN {plain_response('alice', password)}")[0]
    session.close()
    return code


def test_the_server_checks_a_reconnecting_client_once(
    smtp_server: RunningServer, connect: Callable[..., RawSession], bcrypt_checks: list[bytes]
) -> None:
    """The default --auth-cache-ttl: a client logging in for every message pays bcrypt once."""
    for _ in range(3):
        assert log_in(smtp_server, connect) == 235
    assert bcrypt_checks == [b"alice-password"]
    assert log_in(smtp_server, connect, "wrong") == 535  # and a wrong password is still wrong


def test_the_server_with_ttl_zero_checks_every_login(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], bcrypt_checks: list[bytes]
) -> None:
    server = start_server(auth_cache_ttl=0)
    for _ in range(3):
        assert log_in(server, connect) == 235
    assert len(bcrypt_checks) == 3


def test_smtp_and_pop3_share_one_cache(
    pop3_server: RunningServer,
    connect: Callable[..., RawSession],
    pop3_connect: Callable[..., POP3Session],
    bcrypt_checks: list[bytes],
) -> None:
    """One cache for the whole server: a login over SMTP spares the next over POP3, and the other way round."""
    assert log_in(pop3_server, connect) == 235
    for _ in range(2):
        session = pop3_connect(pop3_server)
        session.login()
        # QUIT gives the inbox back before its +OK: a bare close would race the next login to [IN-USE].
        assert session.status("QUIT").startswith("+OK")
    assert bcrypt_checks == [b"alice-password"]
