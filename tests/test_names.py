"""One rule for a user's name, everywhere (issue 18, items 5 and 7).

A name is the exact text after the single separating space; whitespace around it is
refused as malformed, before the throttle or bcrypt. It means the account RCPT would find
for it (case ignored, as in addresses), and the session acts as that account, as users.txt
spells it. The throttle counts every spelling of an account as one name. A session ends at
its next command once its account is removed or its password changed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from conftest import USERS, POP3Session, RawSession, RunningServer, deliver, plain_response, write_users_file

from mailserver.users import rewrite_users_file

MALFORMED = "Malformed username: no spaces around it"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---------------------------------------------------------------- whitespace is malformed


@pytest.mark.parametrize("name", [" alice", "alice ", "alice\t", "\talice", " ", ""])
def test_smtp_auth_plain_refuses_whitespace_around_a_name(connect: Callable[..., RawSession], name: str) -> None:
    session = connect()
    session.ehlo()
    assert session.command(f"AUTH PLAIN {plain_response(name, USERS['alice'])}") == (501, [MALFORMED])
    session.login()  # malformed is no failed login: the session goes on, and nothing was counted


@pytest.mark.parametrize("name", [" alice", "alice\t"])
def test_smtp_auth_login_refuses_whitespace_around_a_name(connect: Callable[..., RawSession], name: str) -> None:
    session = connect()
    session.ehlo()
    assert session.command("AUTH LOGIN")[0] == 334
    assert session.command(b64(name))[0] == 334  # the password is asked, and never checked
    assert session.command(b64(USERS["alice"])) == (501, [MALFORMED])
    session.login()


@pytest.mark.parametrize("line", ["USER  alice", "USER alice\t", "USER alice ", "USER \talice"])
def test_pop3_user_refuses_whitespace_around_a_name(pop3: POP3Session, line: str) -> None:
    assert pop3.status(line) == "-ERR Syntax: USER <name>"
    assert pop3.status(f"PASS {USERS['alice']}") == "-ERR Send USER first"
    pop3.login()


def test_pop3_auth_plain_refuses_whitespace_around_a_name(pop3: POP3Session) -> None:
    assert pop3.status(f"AUTH PLAIN {plain_response('alice ', USERS['alice'])}") == f"-ERR {MALFORMED}"
    pop3.login()


def test_whitespace_spellings_do_not_add_to_the_throttle(
    start_server: Callable[..., RunningServer], pop3_connect: Callable[..., POP3Session]
) -> None:
    server = start_server(pop3=True, max_login_failures=1)
    for line in ("USER  alice", "USER alice\t"):
        pop3 = pop3_connect(server)
        assert pop3.status(line) == "-ERR Syntax: USER <name>"
        assert pop3.status("PASS wrong") == "-ERR Send USER first"
    pop3_connect(server).login()  # the limit is 1 failure: none was counted


# ---------------------------------------------------------------- one account, any case


@pytest.mark.parametrize("name", ["Alice", "ALICE"])
def test_a_name_in_another_case_is_the_account_as_users_txt_spells_it(
    connect: Callable[..., RawSession], smtp_server: RunningServer, name: str
) -> None:
    session = connect()
    session.login(name, USERS["alice"])
    assert session.send_message(b"Subject: x\r\n\r\nx\r\n", "alice@mail.test", ["bob@localhost"])[0] == 250
    assert smtp_server.stored("alice") == [b"Subject: x\n\nx\n"]
    assert sorted(path.name for path in smtp_server.mailboxes_path.iterdir()) == ["alice", "bob"]
    assert b"(Authenticated sender: alice)" in smtp_server.inbox("bob")[0]


def test_pop3_in_another_case_opens_the_accounts_inbox(pop3: POP3Session, pop3_server: RunningServer) -> None:
    deliver(pop3_server.server.mailboxes, "bob", b"Subject: for bob\n\nhi\n")
    assert pop3.status("USER BOB") == "+OK Send your password with PASS"
    assert pop3.status(f"PASS {USERS['bob']}") == "+OK bob has 1 message (24 octets)"


@pytest.mark.parametrize("spellings", [("alice", "Alice"), ("ALICE", "alice")])
def test_the_throttle_counts_every_spelling_of_an_account_as_one(
    start_server: Callable[..., RunningServer], pop3_connect: Callable[..., POP3Session], spellings: tuple[str, str]
) -> None:
    server = start_server(pop3=True, max_login_failures=1)
    first, second = pop3_connect(server), pop3_connect(server)
    first.status(f"USER {spellings[0]}")
    assert first.status("PASS wrong") == "-ERR [AUTH] Invalid username or password"
    second.status(f"USER {spellings[1]}")
    refusal = second.status(f"PASS {USERS['alice']}")
    assert refusal.startswith("-ERR [SYS/TEMP] Too many failed logins for this name"), refusal


def test_authzid_in_another_case_is_the_same_account(connect: Callable[..., RawSession]) -> None:
    session = connect()
    session.ehlo()
    assert session.command(f"AUTH PLAIN {plain_response('alice', USERS['alice'], authzid='ALICE')}")[0] == 235


# ---------------------------------------------------------------- sessions end with their account


@pytest.fixture
def own_users(tmp_path: Path) -> Path:
    """A users.txt of this test's own, to edit while the server runs."""
    return write_users_file(tmp_path / "users.txt", USERS)


REVOKED = "-ERR [AUTH] Your account was removed or its password changed; closing connection"
NEW_HASH = bcrypt.hashpw(b"new-password", bcrypt.gensalt(4)).decode()  # what passwd would write


@pytest.mark.parametrize("change", ["deluser", "passwd"])
def test_an_smtp_session_ends_at_mail_after_its_account_changes(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], own_users: Path, change: str
) -> None:
    server = start_server(users_path=own_users)
    session = connect(server)
    session.login("bob")
    assert session.send_message(b"Subject: before\r\n\r\nx\r\n", "bob@mail.test", ["carol@localhost"])[0] == 250
    rewrite_users_file(own_users, "bob", None if change == "deluser" else NEW_HASH)
    assert session.command("MAIL FROM:<bob@mail.test>") == (
        421,
        ["4.7.0 Your account was removed or its password changed, closing connection"],
    )
    assert session.closed_by_server()
    assert len(server.inbox("carol")) == 1


@pytest.mark.parametrize("change", ["deluser", "passwd"])
@pytest.mark.parametrize("command", ["STAT", "RETR 1", "DELE 1", "NOOP", "QUIT"])
def test_a_pop3_session_ends_at_its_next_command_after_its_account_changes(
    start_server: Callable[..., RunningServer], own_users: Path, change: str, command: str
) -> None:
    server = start_server(users_path=own_users, pop3=True)
    (server.mailboxes_path / "bob" / "new").mkdir(parents=True)
    (server.mailboxes_path / "bob" / "cur").mkdir()
    (server.mailboxes_path / "bob" / "new" / "1.M1P1Q1.x").write_bytes(b"Subject: old\n\nsecret\n")
    pop3 = POP3Session(server.host, server.pop3_port)
    try:
        assert pop3.read_line().startswith("+OK")
        pop3.login("bob")
        assert pop3.status("DELE 1") == "+OK Message 1 deleted"
        rewrite_users_file(own_users, "bob", None if change == "deluser" else NEW_HASH)
        assert pop3.status(command) == REVOKED
        assert pop3.closed_by_server()
    finally:
        pop3.close()
    assert server.inbox("bob") == [b"Subject: old\n\nsecret\n"]  # the marked message stays: no UPDATE state


def test_a_session_that_logged_in_after_passwd_goes_on(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], own_users: Path
) -> None:
    server = start_server(users_path=own_users)
    rewrite_users_file(own_users, "bob", NEW_HASH)
    session = connect(server)
    session.login("bob", "new-password")
    assert session.command("MAIL FROM:<bob@mail.test>")[0] == 250
    assert session.command("NOOP")[0] == 250
