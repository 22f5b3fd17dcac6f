"""Login: SMTP AUTH (RFC 4954) with PLAIN and LOGIN, and what needs it.

A wrong username or password ends the connection (the seed's section 7).
"""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import USERS, RawSession, RunningServer, plain_response, write_users_file

from mailserver import users as users_module

ALICE_PLAIN = base64.b64encode(b"\0alice\0alice-password").decode()  # "AGFsaWNlAGFsaWNlLXBhc3N3b3Jk"


def b64(raw: bytes | str) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


@pytest.fixture
def greeted(session: RawSession) -> RawSession:
    """A session after EHLO, not logged in."""
    assert session.command("EHLO client.test")[0] == 250
    return session


def assert_logged_in(session: RawSession) -> None:
    assert session.command("MAIL FROM:<alice@example.org>")[0] == 250
    assert session.command("RSET")[0] == 250


def assert_not_logged_in(session: RawSession) -> None:
    assert session.command("MAIL FROM:<alice@example.org>")[0] == 530


# ------------------------------------------------------------------------ PLAIN


def test_plain_with_initial_response(greeted: RawSession) -> None:
    greeted.expect(f"""
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
    """)
    assert_logged_in(greeted)


def test_plain_with_empty_challenge(greeted: RawSession) -> None:
    greeted.expect(f"""
        C: AUTH PLAIN
        S: 334*
        C: {ALICE_PLAIN}
        S: 235 *
    """)
    assert_logged_in(greeted)


def test_plain_with_authzid_equal_to_the_user(greeted: RawSession) -> None:
    greeted.expect(f"""
        C: AUTH PLAIN {plain_response("alice", "alice-password", authzid="alice")}
        S: 235 *
    """)


def test_plain_with_another_authzid_is_refused(greeted: RawSession) -> None:
    """Alice's right password, asking to act as bob: 535, and the connection ends."""
    greeted.expect(f"""
        C: AUTH PLAIN {plain_response("alice", "alice-password", authzid="bob")}
        S: 535 *
    """)
    assert greeted.closed_by_server()


# ------------------------------------------------------------------------ LOGIN


def test_login_with_challenges(greeted: RawSession) -> None:
    greeted.expect(f"""
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: {b64("bob")}
        S: 334 UGFzc3dvcmQ6
        C: {b64("bob-password")}
        S: 235 *
    """)
    assert greeted.command("MAIL FROM:<bob@example.org>")[0] == 250


def test_login_with_initial_response(greeted: RawSession) -> None:
    greeted.expect(f"""
        C: AUTH LOGIN {b64("carol")}
        S: 334 UGFzc3dvcmQ6
        C: {b64("carol-password")}
        S: 235 *
    """)
    assert greeted.command("MAIL FROM:<carol@example.org>")[0] == 250


@pytest.mark.parametrize("mechanism", ["plain", "Plain", "pLaIn"])
def test_mechanism_names_are_case_insensitive_plain(greeted: RawSession, mechanism: str) -> None:
    assert greeted.command(f"AUTH {mechanism} {ALICE_PLAIN}")[0] == 235


@pytest.mark.parametrize("mechanism", ["login", "Login"])
def test_mechanism_names_are_case_insensitive_login(greeted: RawSession, mechanism: str) -> None:
    greeted.expect(f"""
        C: AUTH {mechanism} {b64("alice")}
        S: 334 *
        C: {b64("alice-password")}
        S: 235 *
    """)


# ------------------------------------------------------------------------ smtplib


def test_smtplib_login(smtp_server: RunningServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        code, _ = client.login("alice", USERS["alice"])
        assert code == 235
        assert client.mail("alice@example.org")[0] == 250


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("initial_response_ok", [True, False])
def test_smtplib_auth_each_mechanism(smtp_server: RunningServer, mechanism: str, initial_response_ok: bool) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.ehlo("client.test")
        client.user, client.password = "bob", USERS["bob"]
        authobject = getattr(client, f"auth_{mechanism.lower()}")
        code, _ = client.auth(mechanism, authobject, initial_response_ok=initial_response_ok)
        assert code == 235


def test_smtplib_login_with_a_wrong_password(smtp_server: RunningServer) -> None:
    """After the 535 to PLAIN the connection is closed, so smtplib cannot go on to LOGIN."""
    client = smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10)
    try:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.login("alice", "not-the-password")
    finally:
        client.close()


# ------------------------------------------------------------ wrong credentials


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("alice", "wrong"),
        ("alice", "bob-password"),  # another user's password
        ("alice", "ALICE-PASSWORD"),
        ("alice", ""),
        ("nobody", "alice-password"),
        ("Alice", "bob-password"),  # Alice is alice (test_names.py), and this is not her password
    ],
)
def test_wrong_credentials_end_the_connection(greeted: RawSession, user: str, password: str) -> None:
    greeted.expect(f"""
        C: AUTH PLAIN {plain_response(user, password)}
        S: 535 *
    """)
    assert greeted.closed_by_server()


def test_wrong_password_with_login_ends_the_connection(greeted: RawSession) -> None:
    greeted.expect(f"""
        C: AUTH LOGIN
        S: 334 *
        C: {b64("alice")}
        S: 334 *
        C: {b64("wrong")}
        S: 535 *
    """)
    assert greeted.closed_by_server()


def test_unknown_user_costs_the_same_bcrypt_work(smtp_server: RunningServer, monkeypatch) -> None:
    """No timing difference tells which names exist: an unknown name is checked against a hash of the same cost."""
    costs: list[int] = []
    checkpw = users_module.bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        costs.append(int(hashed.split(b"$")[2]))
        return checkpw(password, hashed)

    monkeypatch.setattr(users_module.bcrypt, "checkpw", spy)
    for user in ("alice", "nobody"):
        assert not smtp_server.server.users.check(user, b"wrong")
    assert costs == [4, 4]  # the test accounts' cost, once each


# ------------------------------------------------------ long and odd passwords


@pytest.fixture
def long_password_server(start_server: Callable[..., RunningServer], tmp_path: Path) -> RunningServer:
    """A server whose user dave has a password of exactly bcrypt's 72 bytes."""
    users = write_users_file(tmp_path / "users.txt", {"dave": "d" * 72})
    return start_server(users_path=users)


def test_a_72_byte_password_works(long_password_server: RunningServer, connect) -> None:
    session = connect(long_password_server)
    session.command("EHLO client.test")
    assert session.command(f"AUTH PLAIN {plain_response('dave', 'd' * 72)}")[0] == 235


def test_a_password_beyond_72_bytes_is_not_truncated(long_password_server: RunningServer, connect) -> None:
    """bcrypt reads only 72 bytes: the 73-byte password that starts with dave's must not log in."""
    session = connect(long_password_server)
    session.command("EHLO client.test")
    session.expect(f"""
        C: AUTH PLAIN {plain_response("dave", "d" * 73)}
        S: 535 *
    """)
    assert session.closed_by_server()


@pytest.mark.parametrize(
    "password",
    [
        b"x" * 73,
        b"alice-password" + b"x" * 100,
        b"y" * 1024,
        b"\xff\xfe\x80\x81",  # not UTF-8
        b"\x01\x02\x1b[31m\x7f",  # control characters and an ANSI escape
        "pässwörd-☃".encode(),
    ],
    ids=["73-bytes", "right-prefix-114-bytes", "1-KiB", "not-utf8", "control-chars", "non-ascii"],
)
def test_long_and_odd_passwords_get_535(greeted: RawSession, smtp_server: RunningServer, password: bytes) -> None:
    """Sent in answer to the 334, where lines may be long (RFC 4954 4)."""
    greeted.expect(f"""
        C: AUTH PLAIN
        S: 334*
        C: {plain_response("alice", password)}
        S: 535 *
    """)
    assert greeted.closed_by_server()
    assert smtp_server.server.users.check("alice", b"alice-password")  # the server is fine


@pytest.mark.parametrize(
    "password",
    [b"z" * 1024, b"pass\x00word", b"\x00", b"\xff" * 80],
    ids=["1-KiB", "nul-inside", "nul-only", "80-bytes-0xff"],
)
def test_long_and_odd_passwords_with_login_get_535(greeted: RawSession, password: bytes) -> None:
    """LOGIN can carry bytes PLAIN cannot, such as NUL."""
    greeted.expect(f"""
        C: AUTH LOGIN {b64("alice")}
        S: 334 *
        C: {b64(password)}
        S: 535 *
    """)
    assert greeted.closed_by_server()


def test_long_password_with_initial_response_gets_535(greeted: RawSession) -> None:
    """The 100-byte password fits in a 512-octet command line: 535, not a crash."""
    greeted.expect(f"""
        C: AUTH PLAIN {plain_response("alice", "p" * 100)}
        S: 535 *
    """)
    assert greeted.closed_by_server()


def test_smtplib_login_with_a_1_kib_password(smtp_server: RunningServer) -> None:
    """smtplib sends AUTH PLAIN <initial-response> whatever its length: the answer must be 535.

    The AUTH line is then about 1.4 KB; the 512-octet command limit does not apply to AUTH.
    """
    client = smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10)
    try:
        client.ehlo("client.test")
        client.user, client.password = "alice", "q" * 1024
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.auth("PLAIN", client.auth_plain)
        assert failure.value.smtp_code == 535
    finally:
        client.close()


@pytest.mark.parametrize("user", [b"\xff\xfe", b"alice\x01", b"../alice", b"a" * 300])
def test_odd_usernames_get_535(greeted: RawSession, user: bytes) -> None:
    greeted.expect(f"""
        C: AUTH PLAIN
        S: 334*
        C: {plain_response(user, "alice-password")}
        S: 535 *
    """)
    assert greeted.closed_by_server()


# ------------------------------------------------------ AUTH line length (RFC 4954)


def long_plain_response(length: int) -> str:
    """A valid PLAIN response of exactly length base64 characters (a multiple of 4), for alice."""
    assert length % 4 == 0
    return plain_response("alice", "w" * (length // 4 * 3 - len(b"\0alice\0")))


def test_auth_response_line_up_to_12288_octets_is_read(greeted: RawSession) -> None:
    """The longest base64 line within 12 288 octets, CRLF included, is decoded and checked: 535."""
    response = long_plain_response(12284)  # + CRLF = 12286 octets: the next multiple of 4 would not fit
    assert len(response) + 2 <= 12288
    greeted.expect(f"""
        C: AUTH PLAIN
        S: 334*
        C: {response}
        S: 535 *
    """)
    assert greeted.closed_by_server()


def test_auth_line_with_initial_response_up_to_12288_octets_is_read(greeted: RawSession) -> None:
    """The 512-octet command limit does not apply to AUTH lines."""
    response = long_plain_response(12272)
    assert len(f"AUTH PLAIN {response}\r\n") <= 12288
    greeted.expect(f"""
        C: AUTH PLAIN {response}
        S: 535 *
    """)
    assert greeted.closed_by_server()


def test_auth_response_line_over_12288_octets_is_refused(greeted: RawSession) -> None:
    greeted.expect(f"""
        C: AUTH PLAIN
        S: 334*
        C: {long_plain_response(12288)}
        S: 501 *
    """)
    assert_not_logged_in(greeted)  # refused, not a crash: the session goes on
    greeted.expect(f"""
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
    """)


def test_auth_line_with_initial_response_over_12288_octets_is_refused(greeted: RawSession) -> None:
    assert greeted.command(f"AUTH PLAIN {long_plain_response(12288)}") == (500, ["Error: line too long"])
    assert_not_logged_in(greeted)  # the excess was discarded, not read as commands
    assert greeted.command(f"AUTH PLAIN {ALICE_PLAIN}")[0] == 235


# ---------------------------------------------------------- cancel, bad base64


def test_cancel_plain(greeted: RawSession) -> None:
    greeted.expect("""
        C: AUTH PLAIN
        S: 334*
        C: *
        S: 501 *
    """)
    assert_not_logged_in(greeted)
    assert greeted.command(f"AUTH PLAIN {ALICE_PLAIN}")[0] == 235  # the session goes on


@pytest.mark.parametrize("step", ["username", "password"])
def test_cancel_login(greeted: RawSession, step: str) -> None:
    greeted.expect("""
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
    """)
    if step == "password":
        greeted.expect(f"""
            C: {b64("alice")}
            S: 334 UGFzc3dvcmQ6
        """)
    greeted.expect("""
        C: *
        S: 501 *
    """)
    assert_not_logged_in(greeted)
    assert greeted.command(f"AUTH PLAIN {ALICE_PLAIN}")[0] == 235


@pytest.mark.parametrize(
    "response",
    [
        "not base64!",
        "AGFsaWNl%",
        "YWJj=ZGVm",
        "a",
        f"{ALICE_PLAIN[:8]}!{ALICE_PLAIN[8:]}",  # right credentials with a stray character: still refused
        f"{ALICE_PLAIN[:8]}\t{ALICE_PLAIN[8:]}",
        ALICE_PLAIN[:-1],  # cut short
    ],
)
def test_bad_base64_in_initial_response(greeted: RawSession, response: str) -> None:
    greeted.expect(f"""
        C: AUTH PLAIN {response}
        S: 501 *
    """)
    assert_not_logged_in(greeted)
    assert greeted.command(f"AUTH PLAIN {ALICE_PLAIN}")[0] == 235


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_bad_base64_after_challenge(greeted: RawSession, mechanism: str) -> None:
    greeted.expect(f"""
        C: AUTH {mechanism}
        S: 334 *
        C: ***not base64***
        S: 501 *
    """)
    assert_not_logged_in(greeted)
    assert greeted.command(f"AUTH PLAIN {ALICE_PLAIN}")[0] == 235


# ------------------------------------------------------------ refused AUTH commands


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "XOAUTH2", "GSSAPI", "DIGEST-MD5", "PLAINX", "NTLM"])
def test_unknown_mechanism(greeted: RawSession, mechanism: str) -> None:
    greeted.expect(f"""
        C: AUTH {mechanism}
        S: 504 *
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
    """)


def test_auth_before_hello(session: RawSession) -> None:
    session.expect(f"""
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 503 *
        C: HELO client.test
        S: 250 *
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
    """)


def test_auth_after_helo_works(session: RawSession) -> None:
    session.expect(f"""
        C: HELO client.test
        S: 250 *
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
    """)


@pytest.mark.parametrize("second", [ALICE_PLAIN, plain_response("bob", "bob-password")])
def test_auth_twice(logged_in: RawSession, second: str) -> None:
    logged_in.expect(f"""
        C: AUTH PLAIN {second}
        S: 503 *
        C: AUTH LOGIN
        S: 503 *
    """)
    assert_logged_in(logged_in)  # still alice, still logged in


# ------------------------------------------------- commands that need the login


@pytest.mark.parametrize("line", ["MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.org>", "DATA", "RETR", "DELE"])
def test_530_before_login(greeted: RawSession, smtp_server: RunningServer, line: str) -> None:
    greeted.expect(f"""
        C: {line}
        S: 530 *
    """)
    assert greeted.command("NOOP")[0] == 250


@pytest.mark.parametrize("line", ["MAIL FROM:<alice@example.org>", "RETR", "DELE"])
def test_530_before_hello(session: RawSession, line: str) -> None:
    assert session.command(line)[0] == 530


def test_530_after_a_cancelled_login(greeted: RawSession) -> None:
    greeted.expect("""
        C: AUTH LOGIN
        S: 334 *
        C: *
        S: 501 *
        C: RETR
        S: 530 *
        C: DELE
        S: 530 *
    """)


def test_no_message_stored_without_login(greeted: RawSession, smtp_server: RunningServer) -> None:
    """DATA refused before login, then its would-be lines are just unknown commands."""
    greeted.expect("""
        C: MAIL FROM:<alice@example.org>
        S: 530 *
        C: RCPT TO:<bob@example.org>
        S: 530 *
        C: DATA
        S: 530 *
    """)
    assert not (smtp_server.mailboxes_path / "alice").exists() or smtp_server.stored("alice") == []
