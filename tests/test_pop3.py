"""The POP3 server as transcripts: every command of RFC 1939 and its errors, CAPA, STLS, AUTH PLAIN.

Issue 11, section 3: the states (AUTHORIZATION, TRANSACTION, UPDATE), the snapshot taken
at login, deletion only at QUIT, [IN-USE] for a second session, the seed's login rule
(a wrong name or password ends the connection), and the limits it shares with SMTP:
connection caps, the login throttle, the error limit and an idle timeout of its own.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    USERS,
    Certificate,
    POP3Session,
    RawSession,
    RunningServer,
    deliver,
    plain_response,
    wait_for,
    write_users_file,
)

from mailserver.durable import CHUNK as STORED_CHUNK
from mailserver.pop3 import POP3Handler

FIRST = b"Subject: first\n\nHello Alice.\n"
SECOND = b"Subject: second\n\n.a line with a leading dot\n.\nend\n"
THIRD = b"Subject: third\nX-Long: yes\n\nline 1\nline 2\nline 3\n"
MESSAGES = (FIRST, SECOND, THIRD)


def crlf(message: bytes) -> bytes:
    return message.replace(b"\n", b"\r\n")


SIZES = [len(crlf(message)) for message in MESSAGES]
TOTAL = sum(SIZES)


@pytest.fixture
def inbox(pop3_server: RunningServer) -> RunningServer:
    """pop3_server with FIRST, SECOND and THIRD in alice's inbox."""
    for message in MESSAGES:
        deliver(pop3_server.server.mailboxes, "alice", message)
    return pop3_server


@pytest.fixture
def alice(inbox: RunningServer, pop3_connect: Callable[..., POP3Session]) -> POP3Session:
    """A POP3 session logged in as alice, whose inbox holds MESSAGES."""
    session = pop3_connect(inbox)
    session.login()
    return session


def uidls(server: RunningServer, user: str = "alice") -> list[str]:
    names = sorted(path.name for path in (server.mailboxes_path / user / "new").iterdir())
    return [name.split(",")[0] for name in names]


# ---------------------------------------------------------------------- AUTHORIZATION


def test_greeting(pop3_connect: Callable[..., POP3Session]) -> None:
    session = pop3_connect(greeting=False)
    session.expect("S: +OK mail.test POP3 server ready")


def test_capa_lists_the_capabilities(pop3: POP3Session) -> None:
    pop3.expect("""
        C: CAPA
        S: +OK Capability list follows
        S: USER
        S: SASL PLAIN
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: IMPLEMENTATION classroom-mail-server
        S: .
    """)


def test_user_and_pass_log_in_and_tell_the_size_of_the_inbox(inbox: RunningServer, pop3: POP3Session) -> None:
    pop3.expect(f"""
        C: USER alice
        S: +OK Send your password with PASS
        C: PASS {USERS["alice"]}
        S: +OK alice has 3 messages ({TOTAL} octets)
    """)


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("nobody", "wrong"), ("Alice", USERS["bob"])])
def test_a_wrong_name_or_password_ends_the_connection(pop3: POP3Session, user: str, password: str) -> None:
    pop3.expect(f"""
        C: USER {user}
        S: +OK Send your password with PASS
        C: PASS {password}
        S: -ERR [AUTH] Invalid username or password
    """)
    assert pop3.closed_by_server()


def test_pass_needs_user_first(pop3: POP3Session) -> None:
    pop3.expect(f"""
        C: PASS {USERS["alice"]}
        S: -ERR Send USER first
        C: USER
        S: -ERR Syntax: USER <name>
        C: USER alice
        S: +OK *
        C: PASS
        S: -ERR Syntax: PASS <password>
        C: PASS {USERS["alice"]}
        S: +OK alice has 0 messages (0 octets)
    """)


def test_pass_keeps_the_spaces_of_a_password(
    start_server: Callable[..., RunningServer], pop3_connect: Callable[..., POP3Session], tmp_path: Path
) -> None:
    """RFC 1939 7: the whole rest of the line is the password, spaces included."""
    users = write_users_file(tmp_path / "spaced.txt", {"dave": " two  words "})
    server = start_server(pop3=True, users_path=users)
    session = pop3_connect(server)
    assert session.status("USER dave").startswith("+OK")
    assert session.status("PASS  two  words ") == "+OK dave has 0 messages (0 octets)"


def test_auth_plain_with_an_initial_response(inbox: RunningServer, pop3: POP3Session) -> None:
    pop3.expect(f"""
        C: AUTH PLAIN {plain_response("alice", USERS["alice"])}
        S: +OK alice has 3 messages ({TOTAL} octets)
    """)


def test_auth_plain_asks_with_a_plus_when_there_is_no_initial_response(pop3: POP3Session) -> None:
    assert pop3.status("AUTH PLAIN") == "+ "  # RFC 5034 4: PLAIN's challenge is empty
    response = plain_response("alice", USERS["alice"], authzid="alice")
    assert pop3.status(response) == "+OK alice has 0 messages (0 octets)"


def test_auth_lists_its_mechanism(pop3: POP3Session) -> None:
    pop3.expect("""
        C: AUTH
        S: +OK Mechanisms follow
        S: PLAIN
        S: .
    """)


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        (["AUTH LOGIN"], "-ERR Unrecognized authentication type; use PLAIN"),
        (["AUTH CRAM-MD5"], "-ERR Unrecognized authentication type; use PLAIN"),
        (["AUTH PLAIN", "*"], "-ERR Authentication cancelled"),
        (["AUTH PLAIN not!base64"], "-ERR Invalid base64"),
        (["AUTH PLAIN", "not!base64"], "-ERR Invalid base64"),
        ([f"AUTH PLAIN {base64.b64encode(b'alice-and-no-nuls').decode()}"], "-ERR Malformed PLAIN response"),
    ],
    ids=["LOGIN", "CRAM-MD5", "cancelled", "bad-base64", "bad-base64-answer", "malformed"],
)
def test_auth_errors_leave_the_session_open(pop3: POP3Session, lines: list[str], reply: str) -> None:
    for line in lines[:-1]:
        assert pop3.status(line) == "+ "
    assert pop3.status(lines[-1]) == reply
    pop3.login()  # and a login still works


@pytest.mark.parametrize(
    "response",
    [plain_response("alice", "wrong"), plain_response("alice", USERS["alice"], authzid="bob")],
    ids=["wrong-password", "someone-elses-identity"],
)
def test_auth_plain_with_wrong_credentials_ends_the_connection(pop3: POP3Session, response: str) -> None:
    pop3.expect(f"""
        C: AUTH PLAIN {response}
        S: -ERR [AUTH] Invalid username or password
    """)
    assert pop3.closed_by_server()


# ------------------------------------------------------------------------------ states


@pytest.mark.parametrize("command", ["STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "RSET", "NOOP"])
def test_transaction_commands_need_a_login(pop3: POP3Session, command: str) -> None:
    assert pop3.status(command) == "-ERR Not logged in: use USER and PASS, or AUTH PLAIN"


@pytest.mark.parametrize("command", ["USER alice", f"PASS {USERS['alice']}", "AUTH PLAIN", "STLS"])
def test_authorization_commands_are_refused_after_the_login(alice: POP3Session, command: str) -> None:
    assert alice.status(command) == "-ERR Already logged in"


def test_capa_after_the_login_offers_no_login(alice: POP3Session) -> None:
    status, lines = alice.block("CAPA")
    assert status == "+OK Capability list follows"
    assert b"USER\r\n" not in lines and b"SASL PLAIN\r\n" not in lines and b"TOP\r\n" in lines


# -------------------------------------------------------------------------- TRANSACTION


def test_stat_list_and_uidl(inbox: RunningServer, alice: POP3Session) -> None:
    first, second, third = uidls(inbox)
    alice.expect(f"""
        C: STAT
        S: +OK 3 {TOTAL}
        C: LIST
        S: +OK 3 messages ({TOTAL} octets)
        S: 1 {SIZES[0]}
        S: 2 {SIZES[1]}
        S: 3 {SIZES[2]}
        S: .
        C: LIST 2
        S: +OK 2 {SIZES[1]}
        C: UIDL
        S: +OK 3 messages ({TOTAL} octets)
        S: 1 {first}
        S: 2 {second}
        S: 3 {third}
        S: .
        C: UIDL 3
        S: +OK 3 {third}
    """)


def test_retr_sends_the_message_with_crlf_and_leading_dots_doubled(alice: POP3Session) -> None:
    alice.send("RETR 2\r\n")
    assert alice.read_line() == f"+OK {SIZES[1]} octets"
    raw = b""
    while not raw.endswith(b"\r\n.\r\n"):
        raw += alice.file.readline(1000)
    assert raw == b"Subject: second\r\n\r\n..a line with a leading dot\r\n..\r\nend\r\n.\r\n"
    assert [alice.retr(number) for number in (1, 3)] == [crlf(FIRST), crlf(THIRD)]
    assert len(alice.retr(2)) == SIZES[1]  # the size LIST promised, before stuffing


def test_a_message_without_a_final_line_end_still_ends_its_block(
    pop3_server: RunningServer, pop3_connect: Callable[..., POP3Session]
) -> None:
    deliver(pop3_server.server.mailboxes, "alice", b"Subject: cut\n\nno line end")
    session = pop3_connect()
    session.login()
    assert session.retr(1) == b"Subject: cut\r\n\r\nno line end\r\n"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b"Subject: third\r\nX-Long: yes\r\n\r\n"),
        (2, b"Subject: third\r\nX-Long: yes\r\n\r\nline 1\r\nline 2\r\n"),
        (99, crlf(THIRD)),
    ],
)
def test_top_sends_the_header_and_that_many_body_lines(alice: POP3Session, lines: int, expected: bytes) -> None:
    status, block = alice.block(f"TOP 3 {lines}")
    assert status == "+OK Top of message follows"
    assert b"".join(block) == expected


def test_dele_marks_rset_unmarks_and_marked_messages_are_gone_from_the_listing(
    alice: POP3Session,
) -> None:
    alice.expect(f"""
        C: DELE 2
        S: +OK Message 2 deleted
        C: STAT
        S: +OK 2 {SIZES[0] + SIZES[2]}
        C: LIST
        S: +OK 2 messages ({SIZES[0] + SIZES[2]} octets)
        S: 1 {SIZES[0]}
        S: 3 {SIZES[2]}
        S: .
        C: LIST 2
        S: -ERR Message 2 already deleted
        C: RETR 2
        S: -ERR Message 2 already deleted
        C: DELE 2
        S: -ERR Message 2 already deleted
        C: RSET
        S: +OK Maildrop has 3 messages ({TOTAL} octets)
        C: LIST 2
        S: +OK 2 {SIZES[1]}
        C: NOOP
        S: +OK
    """)


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("RETR", "-ERR Syntax: RETR <message-number>"),
        ("RETR x", "-ERR Syntax: RETR <message-number>"),
        ("RETR 1 2", "-ERR Syntax: RETR <message-number>"),
        ("RETR -1", "-ERR Syntax: RETR <message-number>"),
        ("RETR 0", "-ERR No such message; the inbox has 3 messages"),
        ("RETR 4", "-ERR No such message; the inbox has 3 messages"),
        ("RETR 99999999999999999999", "-ERR Syntax: RETR <message-number>"),
        ("LIST one", "-ERR Syntax: LIST [<message-number>]"),
        ("UIDL 7", "-ERR No such message; the inbox has 3 messages"),
        ("DELE", "-ERR Syntax: DELE <message-number>"),
        ("TOP 1", "-ERR Syntax: TOP <message-number> <lines>"),
        ("TOP 1 -1", "-ERR Syntax: TOP <message-number> <lines>"),
        ("TOP 9 1", "-ERR No such message; the inbox has 3 messages"),
    ],
)
def test_a_bad_argument_gets_a_readable_err(alice: POP3Session, command: str, reply: str) -> None:
    assert alice.status(command) == reply
    assert alice.status("STAT") == f"+OK 3 {TOTAL}"  # and the session goes on


@pytest.mark.parametrize("line", ["HELO x", "EHLO x", "MAIL FROM:<a@b>", "APOP alice 0123", "", "X" * 20])
def test_an_unknown_command_gets_err_with_the_list(pop3: POP3Session, line: str) -> None:
    """Issue 21, item 8: without TLS configured, the list does not offer STLS."""
    assert pop3.status(line) == (
        "-ERR Unknown command; the commands are AUTH CAPA DELE LIST NOOP PASS QUIT RETR RSET STAT TOP UIDL USER"
    )


def test_the_list_of_commands_offers_stls_while_it_can_work(
    tls_pop3: RunningServer, pop3_connect: Callable[..., POP3Session], certificate: Certificate
) -> None:
    session = pop3_connect(tls_pop3)
    listed = "-ERR Unknown command; the commands are AUTH CAPA DELE LIST NOOP PASS QUIT RETR RSET STAT{} TOP UIDL USER"
    assert session.status("HELO x") == listed.format(" STLS")
    assert session.status("STLS") == "+OK Begin TLS negotiation"
    start_tls(session, certificate.client_context())
    assert session.status("HELO x") == listed.format("")  # TLS is on: STLS would be refused


def test_commands_are_case_insensitive(alice: POP3Session) -> None:
    assert alice.status("stat") == f"+OK 3 {TOTAL}"
    assert alice.status("List 1") == f"+OK 1 {SIZES[0]}"


# ----------------------------------------------------------------------- line limits


def test_a_command_line_of_255_octets_is_read_and_256_refused(pop3: POP3Session) -> None:
    """RFC 2449 4: up to 255 octets, CRLF included."""
    assert pop3.status("USER " + "a" * 248) == "+OK Send your password with PASS"  # 253 + CRLF
    assert pop3.status("USER " + "a" * 249) == "-ERR Line too long (at most 255 octets)"
    pop3.send("NOOP " + "z" * 100_000 + "\r\n")  # thrown away to its end, a piece at a time
    assert pop3.read_line() == "-ERR Line too long (at most 255 octets)"
    pop3.login()


def test_auth_may_have_a_longer_line(pop3: POP3Session) -> None:
    """RFC 5034 4: an initial response can make AUTH longer than other commands."""
    long_identity = plain_response("alice", USERS["alice"], authzid="a" * 300)
    assert len(f"AUTH PLAIN {long_identity}") > 255
    pop3.expect(f"""
        C: AUTH PLAIN {long_identity}
        S: -ERR [AUTH] Invalid username or password
    """)


# ------------------------------------------------------------- snapshot, UPDATE, IN-USE


def test_mail_delivered_during_a_session_appears_in_the_next(inbox: RunningServer, alice: POP3Session) -> None:
    deliver(inbox.server.mailboxes, "alice", b"Subject: late\n\nlate\n")
    alice.expect(f"""
        C: STAT
        S: +OK 3 {TOTAL}
        C: QUIT
        S: +OK mail.test POP3 server signing off (3 messages left)
    """)
    assert len(inbox.inbox("alice")) == 4


def test_quit_removes_the_marked_messages(
    inbox: RunningServer, alice: POP3Session, pop3_connect: Callable[..., POP3Session]
) -> None:
    alice.expect("""
        C: DELE 1
        S: +OK *
        C: DELE 3
        S: +OK *
        C: QUIT
        S: +OK mail.test POP3 server signing off (1 message left)
    """)
    assert alice.closed_by_server()
    assert inbox.inbox("alice") == [SECOND]
    again = pop3_connect(inbox)
    again.login()
    assert again.status("STAT") == f"+OK 1 {SIZES[1]}"


def test_the_inbox_is_free_as_soon_as_quit_answers(
    inbox: RunningServer, alice: POP3Session, pop3_connect: Callable[..., POP3Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that logs in again right after QUIT's +OK finds its inbox free, however late the old thread ends."""
    ended = threading.Event()
    real_finish = POP3Handler.finish

    def lingering_finish(handler: POP3Handler) -> None:
        ended.wait(10)
        real_finish(handler)

    monkeypatch.setattr(POP3Handler, "finish", lingering_finish)
    try:
        assert alice.status("DELE 1") == "+OK Message 1 deleted"
        assert alice.status("QUIT").startswith("+OK")
        again = pop3_connect(inbox)
        again.login()
        assert again.status("STAT") == f"+OK 2 {SIZES[1] + SIZES[2]}"
    finally:
        ended.set()


def test_a_dropped_connection_deletes_nothing(
    inbox: RunningServer, alice: POP3Session, pop3_connect: Callable[..., POP3Session]
) -> None:
    for number in (1, 2, 3):
        assert alice.status(f"DELE {number}") == f"+OK Message {number} deleted"
    alice.close()  # no QUIT
    assert inbox.inbox("alice") == list(MESSAGES)

    def logged_in_again() -> bool:  # the server notices the drop in its own time
        session = pop3_connect(inbox)
        assert session.status("USER alice").startswith("+OK")
        return session.status(f"PASS {USERS['alice']}").startswith("+OK alice has 3 messages")

    wait_for(logged_in_again)


def test_quit_before_login_says_goodbye(pop3: POP3Session) -> None:
    pop3.expect("""
        C: QUIT
        S: +OK mail.test POP3 server signing off
    """)
    assert pop3.closed_by_server()


def test_a_second_session_of_the_same_user_is_in_use(
    inbox: RunningServer,
    alice: POP3Session,
    pop3_connect: Callable[..., POP3Session],
    connect: Callable[..., RawSession],
) -> None:
    second = pop3_connect(inbox)
    second.expect(f"""
        C: USER alice
        S: +OK *
        C: PASS {USERS["alice"]}
        S: -ERR [IN-USE] Your inbox is open in another POP3 session; try again when it ends
        C: STAT
        S: -ERR Not logged in: *
    """)
    other_user = pop3_connect(inbox)
    other_user.login("bob")  # another inbox is free
    # SMTP delivery into the inbox goes on meanwhile.
    smtp = connect(inbox)
    smtp.login("bob")
    smtp.expect("""
        C: MAIL FROM:<bob@mail.test>
        S: 250 OK
        C: RCPT TO:<alice@localhost>
        S: 250 OK
        C: DATA
        S: 354 *
        C: Subject: while you read
        C: .
        S: 250 *
    """)
    alice.expect("""
        C: QUIT
        S: +OK *
    """)
    second.login()
    assert second.status("STAT").startswith("+OK 4 ")


# ------------------------------------------------------------------ limits shared with SMTP


def test_too_many_errors_end_the_session(pop3: POP3Session) -> None:
    for _ in range(9):
        assert pop3.status("STAT").startswith("-ERR")
    pop3.expect("""
        C: BOGUS
        S: -ERR Unknown command*
        S: -ERR [SYS/TEMP] mail.test Too many errors, closing connection
    """)
    assert pop3.closed_by_server()


def test_pop3_has_an_idle_timeout_of_its_own(
    start_server: Callable[..., RunningServer],
    pop3_connect: Callable[..., POP3Session],
    connect: Callable[..., RawSession],
) -> None:
    """--pop3-timeout for POP3 (RFC 1939 3 asks at least 10 minutes), --timeout for SMTP."""
    server = start_server(pop3=True, timeout=30.0, pop3_timeout=0.5)
    smtp = connect(server)
    pop3 = pop3_connect(server)
    pop3.login()
    assert pop3.status("DELE 1").startswith("-ERR")  # nothing to delete: only the idle time counts
    pop3.sock.settimeout(10)
    assert pop3.read_line() == "-ERR [SYS/TEMP] mail.test Timeout, closing connection"
    assert pop3.closed_by_server()
    smtp.expect("""
        C: NOOP
        S: 250 OK
    """)


def test_the_connection_caps_count_both_protocols(
    start_server: Callable[..., RunningServer],
    pop3_connect: Callable[..., POP3Session],
    connect: Callable[..., RawSession],
) -> None:
    server = start_server(pop3=True, max_connections_per_ip=2)
    connect(server)
    pop3_connect(server)
    refused = pop3_connect(server, greeting=False)
    refused.expect("S: -ERR [SYS/TEMP] mail.test Too many connections from your address, closing connection")
    smtp_refused = connect(server, greeting=False)
    smtp_refused.expect("S: 421 *Too many connections from your address*")


def fail_a_login(protocol: str, server: RunningServer) -> None:
    """One wrong password for alice, over SMTP or POP3; the server closes the connection."""
    if protocol == "pop3":
        session = POP3Session(server.host, server.pop3_port)
        assert session.read_line().startswith("+OK")
        assert session.status(f"AUTH PLAIN {plain_response('alice', 'wrong')}").startswith("-ERR [AUTH]")
    else:
        session = RawSession(server.host, server.port)
        assert session.read_reply()[0] == 220
        assert session.command("EHLO client.test")[0] == 250
        assert session.command(f"AUTH PLAIN {plain_response('alice', 'wrong')}")[0] == 535
    assert session.closed_by_server()
    session.close()


@pytest.mark.parametrize("failing", ["pop3", "smtp"])
def test_failed_logins_in_one_protocol_throttle_both(
    start_server: Callable[..., RunningServer],
    pop3_connect: Callable[..., POP3Session],
    connect: Callable[..., RawSession],
    failing: str,
) -> None:
    """One login throttle for the whole server: a guess on either port counts against both."""
    server = start_server(pop3=True, max_login_failures=2)
    for _ in range(2):
        fail_a_login(failing, server)
    smtp = connect(server)
    assert smtp.command("EHLO client.test")[0] == 250
    assert smtp.command(f"AUTH PLAIN {plain_response('alice', USERS['alice'])}")[0] == 454
    pop3 = pop3_connect(server)
    pop3.expect(f"""
        C: USER alice
        S: +OK *
        C: PASS {USERS["alice"]}
        S: -ERR [SYS/TEMP] Too many failed logins for this name, try again in * s
    """)
    pop3.login("bob")  # nothing was checked, and the session goes on; another name is not held up


# ------------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_pop3(start_server: Callable[..., RunningServer], certificate: Certificate) -> RunningServer:
    return start_server(pop3=True, tls_context=certificate.server_context(), require_tls=True)


def start_tls(session: POP3Session, context: ssl.SSLContext) -> None:
    session.file.close()
    session.sock = context.wrap_socket(session.sock, server_hostname="localhost")
    session.file = session.sock.makefile("rb")


def test_require_tls_refuses_logins_before_stls(
    tls_pop3: RunningServer, pop3_connect: Callable[..., POP3Session], certificate: Certificate
) -> None:
    session = pop3_connect(tls_pop3)
    session.expect(f"""
        C: CAPA
        S: +OK Capability list follows
        S: TOP
        S: UIDL
        S: RESP-CODES
        S: AUTH-RESP-CODE
        S: PIPELINING
        S: STLS
        S: IMPLEMENTATION classroom-mail-server
        S: .
        C: USER alice
        S: -ERR [AUTH] Use STLS first: this server takes no password in clear text
        C: PASS {USERS["alice"]}
        S: -ERR [AUTH] Use STLS first: *
        C: AUTH PLAIN {plain_response("alice", USERS["alice"])}
        S: -ERR [AUTH] Use STLS first: *
        C: STLS
        S: +OK Begin TLS negotiation
    """)
    start_tls(session, certificate.client_context())
    _, capabilities = session.block("CAPA")
    assert b"USER\r\n" in capabilities and b"STLS\r\n" not in capabilities  # RFC 2595 4: not offered again
    session.login()
    assert session.status("STLS") == "-ERR Already logged in"


def test_stls_forgets_a_user_named_in_clear_text(
    start_server: Callable[..., RunningServer], pop3_connect: Callable[..., POP3Session], certificate: Certificate
) -> None:
    """RFC 2595 4: after the handshake, nothing said before counts, not even a USER answered +OK."""
    server = start_server(pop3=True, tls_context=certificate.server_context())
    session = pop3_connect(server)
    assert session.status("USER alice") == "+OK Send your password with PASS"
    assert session.status("STLS") == "+OK Begin TLS negotiation"
    start_tls(session, certificate.client_context())
    assert session.status(f"PASS {USERS['alice']}") == "-ERR Send USER first"
    session.login()


def test_stls_without_a_certificate_is_refused(pop3: POP3Session) -> None:
    assert pop3.status("STLS") == "-ERR TLS not available"
    pop3.login()


def test_plaintext_pipelined_after_stls_is_discarded(
    tls_pop3: RunningServer, pop3_connect: Callable[..., POP3Session], certificate: Certificate
) -> None:
    """RFC 2595 4 (and CVE-2011-0411): nothing said in clear text counts after the handshake."""
    session = pop3_connect(tls_pop3)
    session.send("STLS\r\nUSER alice\r\n")  # one packet: a man in the middle's USER
    assert session.read_line() == "+OK Begin TLS negotiation"
    start_tls(session, certificate.client_context())
    assert session.status(f"PASS {USERS['alice']}") == "-ERR Send USER first"


# ---------------------------------------------------------------------------- the log


@pytest.mark.parametrize("how", ["user-pass", "auth-initial", "auth-asked"])
def test_no_password_reaches_the_verbose_log(
    start_server: Callable[..., RunningServer],
    pop3_connect: Callable[..., POP3Session],
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    server = start_server(pop3=True, verbose=True)
    session = pop3_connect(server)
    password, token = USERS["alice"], plain_response("alice", USERS["alice"])
    with caplog.at_level(logging.INFO, logger="mailserver"):
        if how == "user-pass":
            session.login()
        elif how == "auth-initial":
            assert session.status(f"AUTH PLAIN {token}").startswith("+OK")
        else:
            assert session.status("AUTH PLAIN") == "+ "
            assert session.status(token).startswith("+OK")
        assert session.status("QUIT").startswith("+OK")
        wait_for(lambda: "disconnected" in caplog.text)
    assert "S: +OK alice has 0 messages" in caplog.text  # the dialogue is logged ...
    assert password not in caplog.text and token not in caplog.text  # ... but not the secret
    assert "********" in caplog.text


def test_the_verbose_log_shows_a_folded_header_line_indented(
    start_server: Callable[..., RunningServer],
    connect: Callable[..., RawSession],
    pop3_connect: Callable[..., POP3Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21, item 11: the projector shows the Received field's second line as `    by ...`, not `\\tby ...`."""
    server = start_server(pop3=True, verbose=True)
    sender = connect(server)
    sender.login()
    assert (
        sender.send_message(b"Subject: folded\r\n\tand continued\r\n\r\nhi\r\n", recipients=["bob@mail.test"])[0] == 250
    )
    session = pop3_connect(server)
    with caplog.at_level(logging.INFO, logger="mailserver"):
        session.login("bob")
        assert session.retr(1).startswith(b"Return-Path:")
    logged = [record.getMessage().split(" ", 1)[1] for record in caplog.records if " S: " in record.getMessage()]
    received = logged.index("S: Received: from client.test ([127.0.0.1])")
    assert logged[received + 1] == "S:     (Authenticated sender: alice)"
    assert logged[received + 2].startswith("S:     by mail.test with ESMTPA; ")
    assert "S:     and continued" in logged
    assert not [line for line in logged if "\\t" in line]


# ---------------------------------------------------------------- a message another program stored with CRLF


CRLF_STORED = b"Subject: saved by Dovecot\r\n\r\n.a dotted line\r\nmixed: a bare LF next\nend\r\n"
CRLF_ON_THE_WIRE = b"Subject: saved by Dovecot\r\n\r\n.a dotted line\r\nmixed: a bare LF next\r\nend\r\n"


def stored_by_another_program(server: RunningServer, user: str, content: bytes) -> None:
    """A file in user's new/ without our size fields: as Dovecot (mail_save_crlf) or a teacher's copy writes it."""
    new = server.mailboxes_path / user / "new"
    new.mkdir(parents=True, exist_ok=True)
    (server.mailboxes_path / user / "cur").mkdir(exist_ok=True)
    (new / "1764366000.M1P1.dovecot").write_bytes(content)


def test_a_message_stored_with_crlf_is_sent_with_one_crlf_and_sized_alike(
    pop3_server: RunningServer, pop3: POP3Session
) -> None:
    """Issue 18: RETR, TOP and LIST sent or counted \\r\\r\\n for a file stored with CRLF."""
    stored_by_another_program(pop3_server, "bob", CRLF_STORED)
    pop3.login("bob")
    assert pop3.retr(1) == CRLF_ON_THE_WIRE
    assert pop3.status("LIST 1") == f"+OK 1 {len(CRLF_ON_THE_WIRE)}"
    assert pop3.status("STAT") == f"+OK 1 {len(CRLF_ON_THE_WIRE)}"
    status, lines = pop3.block("TOP 1 1")
    assert status == "+OK Top of message follows"
    assert lines == [b"Subject: saved by Dovecot\r\n", b"\r\n", b".a dotted line\r\n"]


def test_a_crlf_cut_between_two_chunks_stays_one_crlf(pop3_server: RunningServer, pop3: POP3Session) -> None:
    # The CR is the last octet of the first 256 KiB chunk read, its LF the first of the next.
    first_line = b"x" * (STORED_CHUNK - 1 - len(b"Subject: long\r\n\r\n")) + b"\r"
    content = b"Subject: long\r\n\r\n" + first_line + b"\nthe end\r\n"
    assert content[STORED_CHUNK - 1 : STORED_CHUNK + 1] == b"\r\n"
    stored_by_another_program(pop3_server, "bob", content)
    pop3.login("bob")
    assert pop3.status("LIST 1") == f"+OK 1 {len(content)}"
    assert pop3.retr(1) == content
