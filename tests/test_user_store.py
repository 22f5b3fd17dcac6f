"""UserStore and users.txt, without sockets."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import bcrypt
import pytest
from conftest import TEST_ROUNDS, wait_for, write_users_file

from mailserver.users import UsersFileError, UserStore, parse_users, rewrite_users_file


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(TEST_ROUNDS)).decode()


HASH = hashed("secret")


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users_file(tmp_path / "users.txt", {"alice": "alice-password", "bob": "bob-password"})


@pytest.fixture
def instant_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look at the file on every use instead of once a second, so tests need not wait."""
    monkeypatch.setattr(UserStore, "reload_interval", 0.0)


# ------------------------------------------------------------------------ parsing


def test_parses_names_and_hashes(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"# a comment\n\nalice:{HASH}\n   \n  # indented comment\n  bob:{HASH}  \n")
    assert parse_users(path) == {"alice": HASH.encode(), "bob": HASH.encode()}


def test_empty_file_has_no_accounts(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("# nobody yet\n")
    store = UserStore(path)
    assert len(store) == 0
    assert not store.check("alice", b"anything")


def test_check(users_file: Path) -> None:
    store = UserStore(users_file)
    assert store.check("alice", b"alice-password")
    assert store.check("bob", b"bob-password")
    assert not store.check("alice", b"bob-password")
    assert not store.check("alice", b"")
    assert "alice" in store and "carol" not in store
    assert len(store) == 2


@pytest.mark.parametrize(
    "name",
    ["a", "A", "0", "_", "Z9", "first.last", "under_score", "da-sh", "trailing.", "trailing-", "n" * 64],
)
def test_valid_usernames(tmp_path: Path, name: str) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"{name}:{HASH}\n")
    assert name in UserStore(path)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("alice", "no colon"),
        (f".hidden:{HASH}", "starts with a dot"),
        (f"-dash:{HASH}", "starts with a dash"),
        (f"{'n' * 65}:{HASH}", "65 characters"),
        (f":{HASH}", "empty name"),
        (f"a b:{HASH}", "space"),
        (f"a/b:{HASH}", "slash"),
        (f"..:{HASH}", "dot-dot"),
        (f"caf\u00e9:{HASH}", "non-ASCII"),
        ("alice:secret", "plaintext password"),
        ("alice:", "empty hash"),
        ("alice:$1$abc$0123456789abcdef012345", "md5-crypt hash"),
        (f"alice:{HASH[:-1]}", "truncated bcrypt hash"),
        (f"alice:{HASH}x", "bcrypt hash with extra text"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"# accounts\nbob:{HASH}\n\n{line}\ncarol:{HASH}\n")
    with pytest.raises(UsersFileError) as error:
        UserStore(path)
    assert f"{path}:4" in str(error.value), reason  # the comment and the blank line count too


def test_first_malformed_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"alice:{HASH}\nbroken\nalso broken\n")
    with pytest.raises(UsersFileError, match=r"users\.txt:2\b"):
        parse_users(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no-such-users.txt"
    with pytest.raises(UsersFileError, match=re.escape("no-such-users.txt")):
        UserStore(path)


def test_undecodable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(UsersFileError, match=re.escape("users.txt")):
        UserStore(path)


def test_a_directory_is_not_a_users_file(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match=re.escape(str(tmp_path))):
        UserStore(tmp_path)


# ------------------------------------------------------------- unknown users, passwords


def test_unknown_user(users_file: Path) -> None:
    store = UserStore(users_file)
    assert not store.check("carol", b"alice-password")
    assert not store.check("", b"")
    assert not store.check("../alice", b"alice-password")


@pytest.mark.parametrize("length", [73, 100, 1024, 100_000])
def test_long_passwords_are_refused_not_raised(users_file: Path, length: int) -> None:
    store = UserStore(users_file)
    assert not store.check("alice", b"a" * length)
    assert not store.check("nobody", b"a" * length)


def test_password_of_72_bytes_and_one_more(tmp_path: Path) -> None:
    """bcrypt reads 72 bytes: a longer password that starts with the right 72 must not pass."""
    store = UserStore(write_users_file(tmp_path / "users.txt", {"dave": "d" * 72}))
    assert store.check("dave", b"d" * 72)
    assert not store.check("dave", b"d" * 73)
    assert not store.check("dave", b"d" * 71)


@pytest.mark.parametrize("password", [b"\x00", b"alice-password\x00", b"\xff\xfe", b"\x1b[2J"])
def test_odd_bytes_are_refused_not_raised(users_file: Path, password: bytes) -> None:
    assert not UserStore(users_file).check("alice", password)


def test_non_ascii_password(tmp_path: Path) -> None:
    store = UserStore(write_users_file(tmp_path / "users.txt", {"eve": "pässwörd ☃"}))
    assert store.check("eve", "pässwörd ☃".encode())
    assert not store.check("eve", "pässwörd ☃".encode("latin-1", "replace"))


# -------------------------------------------------------------------------- reloading


def test_reload_on_change(users_file: Path, instant_reload: None) -> None:
    store = UserStore(users_file)
    write_users_file(users_file, {"alice": "new-password", "carol": "carol-password"})
    assert store.check("alice", b"new-password")
    assert not store.check("alice", b"alice-password")
    assert store.check("carol", b"carol-password")
    assert "bob" not in store


def test_reload_within_a_couple_of_seconds(users_file: Path) -> None:
    """With the real interval: an edit shows up without anyone restarting anything."""
    store = UserStore(users_file)
    assert "carol" not in store
    write_users_file(users_file, {"carol": "carol-password"})
    wait_for(lambda: "carol" in store, timeout=3)
    assert store.check("carol", b"carol-password")


def test_malformed_edit_keeps_the_last_good_table(
    users_file: Path, instant_reload: None, caplog: pytest.LogCaptureFixture
) -> None:
    store = UserStore(users_file)
    users_file.write_text(f"alice:{HASH}\nthis line is broken\n")
    with caplog.at_level(logging.ERROR, logger="mailserver"):
        assert store.check("alice", b"alice-password")  # the old table
        assert "bob" in store
    assert f"{users_file}:2" in caplog.text  # logged, naming file and line
    write_users_file(users_file, {"alice": "fixed-password"})
    assert store.check("alice", b"fixed-password")  # a good edit is taken again


def test_removed_file_keeps_the_last_good_table(users_file: Path, instant_reload: None) -> None:
    store = UserStore(users_file)
    users_file.unlink()
    assert store.check("alice", b"alice-password")
    write_users_file(users_file, {"bob": "new-bob"})
    assert store.check("bob", b"new-bob")
    assert "alice" not in store


def test_deleted_account_can_no_longer_log_in(users_file: Path, instant_reload: None) -> None:
    store = UserStore(users_file)
    rewrite_users_file(users_file, "bob", None)
    assert not store.check("bob", b"bob-password")
    assert store.check("alice", b"alice-password")
