"""The commands around a mail transaction: greeting, HELO/EHLO, HELP, NOOP, RSET, VRFY, QUIT.

Also the seed's command-reply table (its section 4.2), one test per row, and its
section 8 example, both as transcripts.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable

import pytest
from conftest import USERS, Certificate, RawSession, RunningServer, wait_for

from mailserver.smtp import SMTPHandler

# Every command of the contract, each with a HELP topic of its own.
COMMANDS = ["AUTH", "DATA", "DELE", "EHLO", "HELO", "HELP", "MAIL", "NOOP", "QUIT", "RCPT", "RETR", "RSET", "VRFY"]
TOO_LONG = "x" * 600  # makes any command line longer than 512 octets


def make_errors(session: RawSession, count: int) -> None:
    """Send count unknown commands, each answered 500: steps towards the 10-error limit."""
    for _ in range(count):
        assert session.command("BOGUS")[0] == 500


# ---------------------------------------------------------------------- greeting


def test_greeting_names_the_host(connect: Callable[..., RawSession]) -> None:
    session = connect(greeting=False)
    session.expect("""
        S: 220 mail.test Service ready
    """)


def test_greeting_uses_the_configured_hostname(start_server: Callable[..., RunningServer], connect) -> None:
    server = start_server(hostname="relay.example.org")
    session = connect(server, greeting=False)
    session.expect("""
        S: 220 relay.example.org *
    """)


# ------------------------------------------------------------------- HELO / EHLO


def test_helo(session: RawSession) -> None:
    session.expect("""
        C: HELO client.test
        S: 250 mail.test*
    """)


def test_ehlo_advertises_the_extensions(session: RawSession) -> None:
    ehlo = session.ehlo()
    assert ehlo.greeting.startswith("mail.test")
    required = {"AUTH": "PLAIN LOGIN", "SIZE": "10485760", "8BITMIME": "", "PIPELINING": "", "HELP": ""}
    assert required.items() <= ehlo.extensions.items(), ehlo.extensions
    # smtplib would try CRAM-MD5 first and fail
    assert not any("CRAM-MD5" in f"{keyword} {parameters}" for keyword, parameters in ehlo.extensions.items())


def test_ehlo_size_is_the_configured_limit(start_server: Callable[..., RunningServer], connect) -> None:
    session = connect(start_server(max_message_size=12345))
    assert session.ehlo()["SIZE"] == "12345"


def test_ehlo_as_multiline_reply(session: RawSession) -> None:
    """The reply's shape, whatever the extensions: 250-<hostname> Hello ..., 250- lines, a last 250 line."""
    session.send("EHLO client.test\r\n")
    lines = [session.read_line()]
    while lines[-1].startswith("250-"):
        lines.append(session.read_line())
    assert lines[0].startswith("250-mail.test Hello "), lines
    assert len(lines) >= 2 and lines[-1].startswith("250 "), lines
    session.expect("""
        C: NOOP
        S: 250 *
    """)


@pytest.mark.parametrize("verb", ["HELO", "EHLO"])
def test_hello_without_domain_is_a_syntax_error(session: RawSession, verb: str) -> None:
    session.expect(f"""
        C: {verb}
        S: 501 *
        C: {verb} client.test
        S: 250*
    """)


def test_smtplib_ehlo_sees_the_extensions(smtp_server: RunningServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250
        assert client.has_extn("auth") and client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert client.has_extn("size") and client.has_extn("8bitmime") and client.has_extn("pipelining")


# ---------------------------------------------------------------------------- HELP


def test_help_lists_every_command(session: RawSession) -> None:
    code, lines = session.command("HELP")
    assert code == 214
    listed = " ".join(lines).split()
    for command in COMMANDS:
        assert command in listed


@pytest.mark.parametrize("topic", COMMANDS)
def test_help_on_a_command_gives_its_syntax_and_meaning(session: RawSession, topic: str) -> None:
    code, lines = session.command(f"HELP {topic}")
    assert code == 214
    assert lines[0].startswith(topic), lines  # the syntax first
    assert len(lines) >= 2, lines  # then what it does


def test_help_lists_starttls_only_where_it_can_work(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    without_tls = connect()
    assert "STARTTLS" not in " ".join(without_tls.command("HELP")[1]).split()
    with_tls = connect(start_server(tls_context=certificate.server_context()))
    assert "STARTTLS" in " ".join(with_tls.command("HELP")[1]).split()


def test_help_topics_are_case_insensitive(session: RawSession) -> None:
    assert session.command("HELP mail") == session.command("HELP MAIL") == session.command("HELP Mail")


def test_help_on_an_unknown_topic(session: RawSession) -> None:
    session.expect("""
        C: HELP FROBNICATE
        S: 504 *
        C: NOOP
        S: 250 *
    """)


# ----------------------------------------------------------------- NOOP, RSET, VRFY


def test_noop(session: RawSession) -> None:
    session.expect("""
        C: NOOP
        S: 250 *
    """)


def test_rset(session: RawSession) -> None:
    session.expect("""
        C: RSET
        S: 250 *
    """)


def test_vrfy_neither_confirms_nor_denies(session: RawSession) -> None:
    session.expect("""
        C: VRFY alice
        S: 252 Cannot VRFY user: this server does not say which users exist
        C: VRFY nobody@example.org
        S: 252 Cannot VRFY user: this server does not say which users exist
    """)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("HELO client.test", 250),
        ("EHLO client.test", 250),
        ("HELP", 214),
        ("NOOP", 250),
        ("RSET", 250),
        ("VRFY alice", 252),
    ],
)
def test_commands_that_work_before_login(session: RawSession, line: str, expected: int) -> None:
    code, _ = session.command(line)
    assert code == expected


def test_auth_works_before_login(session: RawSession) -> None:
    session.login()  # EHLO, then AUTH: nothing refused for want of a login


# ---------------------------------------------------------------------------- QUIT


def test_quit_says_goodbye_and_closes(session: RawSession) -> None:
    session.expect("""
        C: QUIT
        S: 221 mail.test *
    """)
    assert session.closed_by_server()


def test_quit_before_helo(connect: Callable[..., RawSession]) -> None:
    session = connect()
    assert session.command("QUIT")[0] == 221
    assert session.closed_by_server()


def test_quit_with_smtplib(smtp_server: RunningServer) -> None:
    client = smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10)
    code, text = client.quit()
    assert code == 221
    assert text.startswith(b"mail.test")


# ------------------------------------------------------------ unknown commands


@pytest.mark.parametrize("line", ["FROBNICATE", "EXPN staff", "TURN", "MAIL1 FROM:<a@b.org>", "12345", "\u00e9HLO x"])
def test_unknown_verb(session: RawSession, line: str) -> None:
    code, _ = session.command(line)
    assert code == 500
    assert session.command("NOOP")[0] == 250  # the session goes on


@pytest.mark.parametrize("line", ["", " ", "\t"])
def test_empty_line(session: RawSession, line: str) -> None:
    session.expect(f"""
        C: {line}
        S: 500 *
        C: NOOP
        S: 250 *
    """)


# ------------------------------------------------------------- case-insensitivity


def test_verbs_are_case_insensitive(session: RawSession) -> None:
    ehlo = session.ehlo(verb="ehlo")
    assert ehlo.greeting.startswith("mail.test") and ehlo.extensions  # EHLO's multi-line reply
    session.expect("""
        C: Helo client.test
        S: 250 *
        C: nOoP
        S: 250 *
        C: rset
        S: 250 *
        C: vrfy alice
        S: 252 *
        C: help
        S: 214-*
        S: 214 *
        C: quit
        S: 221 *
    """)


def test_transaction_verbs_are_case_insensitive(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.expect("""
        C: mail from:<alice@example.org>
        S: 250 *
        C: Rcpt To:<bob@example.org>
        S: 250 *
        C: data
        S: 354 *
        C: Subject: lower case
        C:
        C: hello
        C: .
        S: 250 *
        C: retr
        S: 250 1 *
        S: Subject: lower case
        S:
        S: hello
        S: .
        C: dele
        S: 250 1 *
    """)


def test_auth_verb_is_case_insensitive(session: RawSession) -> None:
    session.ehlo()
    session.expect("""
        C: auth plain AGFsaWNlAGFsaWNlLXBhc3N3b3Jk
        S: 235 *
    """)


# ------------------------------------------------------------------ pipelining


def test_pipelined_commands_get_their_replies_in_order(session: RawSession) -> None:
    session.send("HELO client.test\r\nNOOP\r\nVRFY x\r\nBOGUS\r\nHELP NOOP\r\nRSET\r\nQUIT\r\n")
    codes = [session.read_reply()[0] for _ in range(7)]
    assert codes == [250, 250, 252, 500, 214, 250, 221]
    assert session.closed_by_server()


def test_pipelined_mail_transaction(logged_in: RawSession, smtp_server: RunningServer) -> None:
    """RFC 2920: MAIL, RCPT and DATA may go in one packet; the message follows the 354."""
    logged_in.send(
        "MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"
    )
    assert [logged_in.read_reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    logged_in.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert [logged_in.read_reply()[0] for _ in range(3)] == [250, 250, 221]
    assert smtp_server.stored("alice") == [b"Subject: pipelined\n\nbody\n"]


def test_pipelined_login_and_whole_session_in_one_packet(session: RawSession, smtp_server: RunningServer) -> None:
    session.send(
        "EHLO client.test\r\n"
        "AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk\r\n"
        "MAIL FROM:<alice@example.org>\r\n"
        "RCPT TO:<bob@example.org>\r\n"
        "DATA\r\n"
        "one packet\r\n"
        ".\r\n"
        "RETR\r\n"
        "QUIT\r\n"
    )
    assert session.read_reply()[0] == 250  # EHLO
    assert [session.read_reply()[0] for _ in range(5)] == [235, 250, 250, 354, 250]
    session.expect("""
        S: 250 1 *
        S: one packet
        S: .
        S: 221 *
    """)


# ------------------------------------------------------------ a bug in a command


def test_a_handler_exception_is_answered_and_logged(
    session: RawSession, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a command is logged with its traceback and answered 421 (the session ends), not a silent hang-up."""

    def broken(handler: SMTPHandler, argument: str) -> None:
        raise RuntimeError("a bug in NOOP")

    monkeypatch.setattr(SMTPHandler, "smtp_NOOP", broken)
    with caplog.at_level(logging.ERROR, logger="mailserver"):
        assert session.command("NOOP") == (421, ["mail.test Internal error, closing transmission channel"])
        wait_for(lambda: "RuntimeError: a bug in NOOP" in caplog.text and "Traceback" in caplog.text)


# ---------------------------------------------- the seed's reply-code table (4.2)


def test_seed_table_connection_success_220(connect: Callable[..., RawSession]) -> None:
    """CONNECTION ESTABLISHMENT  S: 220"""
    connect(greeting=False).expect("""
        S: 220 mail.test *
    """)


def test_seed_table_connection_failure_421(start_server: Callable[..., RunningServer], connect) -> None:
    """CONNECTION ESTABLISHMENT  F: 421 (over --max-connections)"""
    server = start_server(max_connections=1)
    first = connect(server)
    second = connect(server, greeting=False)
    second.expect("""
        S: 421 mail.test *
    """)
    assert second.closed_by_server()
    assert first.command("NOOP")[0] == 250  # the admitted session is not disturbed


def test_seed_table_helo(session: RawSession) -> None:
    """HELO  S: 250  E: 500, 504, 421

    504 has no case in the contract: HELO takes one parameter and a missing one is 501.
    """
    make_errors(session, 8)
    session.expect(f"""
        C: HELO client.test
        S: 250 *
        C: HELO {TOO_LONG}
        S: 500 *
        C: HELO
        S: 501 *
        S: 421 mail.test *
    """)
    assert session.closed_by_server()


def test_seed_table_mail(logged_in: RawSession) -> None:
    """MAIL  S: 250  E: 500, 504

    The contract answers an unknown MAIL parameter with 555 (RFC 5321), the seed's 504.
    """
    logged_in.expect(f"""
        C: MAIL FROM:<{TOO_LONG}@example.org>
        S: 500 *
        C: MAIL FROM:<mytest@mail.gr> FROBNICATE=1
        S: 555 *
        C: MAIL FROM:<mytest@mail.gr>
        S: 250 *
    """)


def test_seed_table_rcpt(logged_in: RawSession) -> None:
    """RCPT  S: 250  E: 500, 421"""
    logged_in.command("MAIL FROM:<mytest@mail.gr>")
    make_errors(logged_in, 8)
    logged_in.expect(f"""
        C: RCPT TO:<recipienttest@domain.gr>
        S: 250 *
        C: RCPT TO:<{TOO_LONG}@domain.gr>
        S: 500 *
        C: RCPT TO:<{TOO_LONG}@domain.gr>
        S: 500 *
        S: 421 mail.test *
    """)
    assert logged_in.closed_by_server()


def test_seed_table_data(logged_in: RawSession, smtp_server: RunningServer) -> None:
    """DATA  I: 354 -> data -> S: 250  E: 500, 421"""
    logged_in.expect("""
        C: MAIL FROM:<mytest@mail.gr>
        S: 250 *
        C: RCPT TO:<recipienttest@domain.gr>
        S: 250 *
        C: DATA
        S: 354 *
        C: table row
        C: .
        S: 250 *
    """)
    assert smtp_server.stored("alice") == [b"table row\n"]
    make_errors(logged_in, 8)
    logged_in.expect(f"""
        C: MAIL FROM:<mytest@mail.gr>
        S: 250 *
        C: RCPT TO:<recipienttest@domain.gr>
        S: 250 *
        C: DATA
        S: 354 *
        C: {"y" * 1200}
        C: .
        S: 500 *
        C: DATA {TOO_LONG}
        S: 500 *
        S: 421 mail.test *
    """)
    assert logged_in.closed_by_server()


def test_seed_table_data_421_when_the_data_stalls(start_server: Callable[..., RunningServer], connect) -> None:
    """DATA  E: 421 (the client stops sending in the middle of the message)"""
    server = start_server(data_timeout=0.5)
    session = connect(server)
    session.login()
    session.expect("""
        C: MAIL FROM:<mytest@mail.gr>
        S: 250 *
        C: RCPT TO:<recipienttest@domain.gr>
        S: 250 *
        C: DATA
        S: 354 *
        C: half a message
        S: 421 mail.test *
    """)
    assert session.closed_by_server()
    assert server.stored("alice") == []


def test_seed_table_help(session: RawSession) -> None:
    """HELP  S: 211, 214  E: 500, 504, 421"""
    make_errors(session, 7)
    session.expect(f"""
        C: HELP
        S: 214-*
        S: 214 *
        C: HELP DATA
        S: 214-DATA
        S: 214 *
        C: HELP {TOO_LONG}
        S: 500 *
        C: HELP NOSUCHTOPIC
        S: 504 *
        C: HELP ANOTHERONE
        S: 504 *
        S: 421 mail.test *
    """)
    assert session.closed_by_server()


def test_seed_table_noop(session: RawSession) -> None:
    """NOOP  S: 250  E: 500, 421"""
    make_errors(session, 8)
    session.expect(f"""
        C: NOOP
        S: 250 *
        C: NOOP {TOO_LONG}
        S: 500 *
        C: NOOP {TOO_LONG}
        S: 500 *
        S: 421 mail.test *
    """)
    assert session.closed_by_server()


def test_seed_table_quit(session: RawSession) -> None:
    """QUIT  S: 221  E: 500"""
    session.expect(f"""
        C: QUIT {TOO_LONG}
        S: 500 *
        C: QUIT
        S: 221 mail.test *
    """)
    assert session.closed_by_server()


# ----------------------------------------------------------- the seed's section 8


def test_seed_section_8_example(logged_in: RawSession, smtp_server: RunningServer) -> None:
    """The seed's example, after the login its section 7 asks for."""
    logged_in.expect("""
        C: MAIL FROM:<mytest@mail.gr>
        S: 250 *
        C: RCPT TO:<recipienttest@domain.gr>
        S: 250 *
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: Blah blah blah(MAIL CONTENT) ...
        C: .
        S: 250 *
        C: QUIT
        S: 221 mail.test *
    """)
    assert logged_in.closed_by_server()
    assert smtp_server.stored("alice") == [b"Blah blah blah(MAIL CONTENT) ...\n"]


def test_seed_section_8_example_with_smtplib(smtp_server: RunningServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.login("alice", USERS["alice"])
        refused = client.sendmail("mytest@mail.gr", ["recipienttest@domain.gr"], "Blah blah blah(MAIL CONTENT) ...")
        assert refused == {}
        code, text = client.docmd("RETR")
        assert code == 250 and text.startswith(b"1 ")
        block = [client.file.readline() for _ in range(2)]  # smtplib reads replies only: the block by hand
        assert block == [b"Blah blah blah(MAIL CONTENT) ...\r\n", b".\r\n"]
    assert smtp_server.stored("alice") == [b"Blah blah blah(MAIL CONTENT) ...\n"]
