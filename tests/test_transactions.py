"""Mail transactions: MAIL, RCPT, DATA, and the seed's RETR and DELE."""

from __future__ import annotations

import logging
import mailbox
import smtplib

import pytest
from conftest import USERS, RawSession, RunningServer

from mailserver.smtp import SMTPHandler

MAX_RECIPIENTS = 100


def maildir_listing(server: RunningServer, user: str) -> dict[str, list[str]]:
    root = server.mailboxes_path / user / ".Sent"
    return {sub: sorted(p.name for p in (root / sub).iterdir()) for sub in ("tmp", "new", "cur")}


# ---------------------------------------------------------------------------- MAIL


def test_mail_rcpt_data(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.expect("""
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        C: RCPT TO:<bob@example.org>
        S: 250 *
        C: DATA
        S: 354 *
        C: Subject: hello
        C:
        C: Hi Bob.
        C: .
        S: 250 *
    """)
    assert smtp_server.stored("alice") == [b"Subject: hello\n\nHi Bob.\n"]


def test_null_reverse_path(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.expect("""
        C: MAIL FROM:<>
        S: 250 *
        C: RCPT TO:<bob@example.org>
        S: 250 *
        C: DATA
        S: 354 *
        C: bounce
        C: .
        S: 250 *
    """)
    assert smtp_server.stored("alice") == [b"bounce\n"]


@pytest.mark.parametrize(
    "parameters",
    [
        "SIZE=1000",
        "SIZE=0",
        "SIZE=10485760",  # exactly the limit
        "size=1000",
        "BODY=7BIT",
        "BODY=8BITMIME",
        "body=8bitmime",
        "SIZE=1000 BODY=8BITMIME",
        "BODY=7BIT SIZE=20",
    ],
)
def test_mail_parameters(logged_in: RawSession, parameters: str) -> None:
    logged_in.expect(f"""
        C: MAIL FROM:<alice@example.org> {parameters}
        S: 250 *
    """)


def test_mail_parameters_with_null_sender(logged_in: RawSession) -> None:
    assert logged_in.command("MAIL FROM:<> SIZE=10 BODY=8BITMIME")[0] == 250


def test_declared_size_over_the_limit(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: MAIL FROM:<alice@example.org> SIZE=10485761
        S: 552 *
        C: RCPT TO:<bob@example.org>
        S: 503 *
        C: MAIL FROM:<alice@example.org> SIZE=10485760
        S: 250 *
    """)


def test_declared_size_against_a_configured_limit(start_server, connect) -> None:
    session = connect(start_server(max_message_size=5000))
    session.login()
    session.expect("""
        C: MAIL FROM:<alice@example.org> SIZE=5001
        S: 552 *
        C: MAIL FROM:<alice@example.org> SIZE=5000
        S: 250 *
    """)


@pytest.mark.parametrize("parameter", ["FROBNICATE=1", "SMTPUTF8", "RET=FULL", "X"])
def test_unknown_mail_parameter(logged_in: RawSession, parameter: str) -> None:
    logged_in.expect(f"""
        C: MAIL FROM:<alice@example.org> {parameter}
        S: 555 *
        C: MAIL FROM:<alice@example.org>
        S: 250 *
    """)


@pytest.mark.parametrize(
    "line",
    [
        "MAIL",
        "MAIL FROM",
        "MAIL FROM:",
        "MAIL FROM:alice@example.org",
        "MAIL FROM:<alice@example.org",
        "MAIL TO:<alice@example.org>",
        "MAIL FROM:<alice>",
        "MAIL FROM:<alice@>",
        "MAIL FROM:<@example.org>",
        "MAIL FROM:<alice@@example.org>",
        "MAIL FROM:<al ice@example.org>",
        "MAIL FROM:<alice@exa mple.org>",
        "MAIL FROM:<alice@example..org>",
        "MAIL FROM:<alice.@example.org>",
        "MAIL FROM:<alice@-example.org>",
    ],
)
def test_mail_syntax_error_states_the_syntax(logged_in: RawSession, line: str) -> None:
    code, lines = logged_in.command(line)
    assert code == 501
    assert "MAIL FROM:<" in " ".join(lines)
    assert logged_in.command("MAIL FROM:<alice@example.org>")[0] == 250  # no transaction was started


def test_mail_inside_a_transaction(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        C: MAIL FROM:<other@example.org>
        S: 503 *
        C: RCPT TO:<bob@example.org>
        S: 250 *
        C: MAIL FROM:<other@example.org>
        S: 503 *
    """)


def test_mail_after_a_finished_transaction(logged_in: RawSession) -> None:
    assert logged_in.send_message(b"first\r\n")[0] == 250
    assert logged_in.send_message(b"second\r\n")[0] == 250


# ---------------------------------------------------------------------------- RCPT


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.org",
        "someone@elsewhere.example",  # not a local user: we store, we do not relay
        "alice@example.org",
        "first.last+tag@sub.example.co.uk",
        '"quoted local"@example.org',
        "bob@[192.0.2.1]",
        "postmaster",
        "Postmaster",
        "x@y",
    ],
)
def test_rcpt_accepts_any_valid_address(logged_in: RawSession, address: str) -> None:
    logged_in.command("MAIL FROM:<alice@example.org>")
    logged_in.expect(f"""
        C: RCPT TO:<{address}>
        S: 250 *
    """)


def test_rcpt_before_mail(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: RCPT TO:<bob@example.org>
        S: 503 *
    """)


@pytest.mark.parametrize(
    "line",
    [
        "RCPT",
        "RCPT TO:",
        "RCPT TO:<>",  # the null path is for senders only
        "RCPT TO:bob@example.org",
        "RCPT TO:<bob@example.org",
        "RCPT FROM:<bob@example.org>",
        "RCPT TO:<bob>",
        "RCPT TO:<bob@>",
        "RCPT TO:<bob@exa mple.org>",
        "RCPT TO:<bob@example..org>",
    ],
)
def test_rcpt_syntax_error(logged_in: RawSession, line: str) -> None:
    logged_in.command("MAIL FROM:<alice@example.org>")
    logged_in.expect(f"""
        C: {line}
        S: 501 *
        C: RCPT TO:<bob@example.org>
        S: 250 *
    """)


def test_rcpt_local_part_limit(logged_in: RawSession) -> None:
    """RFC 5321 4.5.3.1.1: a local part of up to 64 octets."""
    logged_in.command("MAIL FROM:<alice@example.org>")
    logged_in.expect(f"""
        C: RCPT TO:<{"l" * 64}@example.org>
        S: 250 *
        C: RCPT TO:<{"l" * 65}@example.org>
        S: 501 *
    """)


def test_mail_local_part_limit(logged_in: RawSession) -> None:
    logged_in.expect(f"""
        C: MAIL FROM:<{"l" * 65}@example.org>
        S: 501 *
        C: MAIL FROM:<{"l" * 64}@example.org>
        S: 250 *
    """)


def path_of_length(length: int) -> str:
    """An address whose path, angle brackets included, is length octets (RFC 5321 4.5.3.1.3)."""
    domain_length = length - 2 - len("bob@")
    labels = ["d" * 60] * (domain_length // 61)
    last = domain_length - 61 * len(labels)
    domain = ".".join([*labels, "e" * last]) if last else ".".join(labels)
    address = f"bob@{domain}"
    assert len(address) + 2 == length
    return address


def test_rcpt_path_limit(logged_in: RawSession) -> None:
    """A path of up to 256 octets; the domain limit of 255 is within it."""
    logged_in.command("MAIL FROM:<alice@example.org>")
    logged_in.expect(f"""
        C: RCPT TO:<{path_of_length(256)}>
        S: 250 *
        C: RCPT TO:<{path_of_length(257)}>
        S: 501 *
        C: RCPT TO:<bob@{"d." * 127}org>
        S: 501 *
    """)


def test_mail_path_limit(logged_in: RawSession) -> None:
    logged_in.expect(f"""
        C: MAIL FROM:<{path_of_length(257)}>
        S: 501 *
        C: MAIL FROM:<{path_of_length(256)}>
        S: 250 *
    """)


def test_100_recipients_then_452(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.command("MAIL FROM:<alice@example.org>")
    for number in range(MAX_RECIPIENTS):
        assert logged_in.command(f"RCPT TO:<r{number}@example.org>")[0] == 250
    logged_in.expect("""
        C: RCPT TO:<one-too-many@example.org>
        S: 452 *
        C: RCPT TO:<and-another@example.org>
        S: 452 *
        C: DATA
        S: 354 *
        C: to a hundred
        C: .
        S: 250 *
    """)
    assert smtp_server.stored("alice") == [b"to a hundred\n"]


def test_recipient_limit_is_per_transaction(logged_in: RawSession) -> None:
    for _ in range(2):
        logged_in.command("MAIL FROM:<alice@example.org>")
        for number in range(MAX_RECIPIENTS):
            assert logged_in.command(f"RCPT TO:<r{number}@example.org>")[0] == 250
        assert logged_in.command("RSET")[0] == 250


# ---------------------------------------------------------------------------- DATA


def test_data_without_mail(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: DATA
        S: 503 *
        C: NOOP
        S: 250 *
    """)


def test_data_without_recipient(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        C: DATA
        S: 503 *
        C: RCPT TO:<bob@example.org>
        S: 250 *
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: .
        S: 250 *
    """)


def test_data_after_only_refused_recipients(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        C: RCPT TO:<not an address>
        S: 501 *
        C: DATA
        S: 503 *
    """)


def test_leading_dots_are_unstuffed(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.start_data()
    logged_in.expect("""
        C: ..one dot
        C: ...
        C: ..
        C: .not stuffed by a sloppy client
        C: middle . dot
        C: .
        S: 250 *
    """)
    assert smtp_server.stored("alice") == [b".one dot\n..\n.\nnot stuffed by a sloppy client\nmiddle . dot\n"]


def test_dot_line_ended_by_bare_lf_does_not_end_the_data(logged_in: RawSession, smtp_server: RunningServer) -> None:
    """SMTP smuggling: only <CRLF>.<CRLF> ends the data, so the smuggled MAIL stays message text."""
    smuggled = b"hello\r\n.\nMAIL FROM:<mallory@example.org>\r\nRCPT TO:<victim@example.org>\r\n"
    assert logged_in.send_message(smuggled)[0] == 250
    assert logged_in.command("NOOP")[0] == 250  # one reply for the message: nothing was taken as a command
    [stored] = smtp_server.stored("alice")
    assert stored == b"hello\n.\nMAIL FROM:<mallory@example.org>\nRCPT TO:<victim@example.org>\n"


@pytest.mark.parametrize(
    "ending",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"],
    ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CRLF"],
)
def test_only_crlf_dot_crlf_ends_the_data(logged_in: RawSession, smtp_server: RunningServer, ending: bytes) -> None:
    assert logged_in.send_message(b"text" + ending + b"after\r\n")[0] == 250
    assert logged_in.command("NOOP")[0] == 250
    [stored] = smtp_server.stored("alice")
    assert stored.endswith(b"after\n")


def test_bare_lf_elsewhere_is_a_line_end(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(b"Subject: bare\n\nline one\nline two\r\n")[0] == 250
    assert smtp_server.stored("alice") == [b"Subject: bare\n\nline one\nline two\n"]
    assert logged_in.retr() == [b"Subject: bare\r\n\r\nline one\r\nline two\r\n"]


def test_leading_dot_after_bare_lf_is_unstuffed(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(b"one\n..two\r\n")[0] == 250
    assert smtp_server.stored("alice") == [b"one\n.two\n"]


def test_message_with_several_recipients_is_stored_once(logged_in: RawSession, smtp_server: RunningServer) -> None:
    recipients = ["bob@example.org", "carol@example.org", "dave@elsewhere.example", "alice@example.org"]
    assert logged_in.send_message(b"to many\r\n", recipients=recipients)[0] == 250
    assert smtp_server.stored("alice") == [b"to many\n"]
    assert not (smtp_server.mailboxes_path / "bob").exists()  # stored for the sender: no recipient is local
    assert logged_in.retr() == [b"to many\r\n"]


def test_same_recipient_twice_stores_once(logged_in: RawSession, smtp_server: RunningServer) -> None:
    assert logged_in.send_message(b"twice\r\n", recipients=["bob@example.org"] * 2)[0] == 250
    assert len(smtp_server.stored("alice")) == 1


def test_eight_bit_body(logged_in: RawSession, smtp_server: RunningServer) -> None:
    body = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße, Ελλάδα, 日本\r\n".encode()
    assert logged_in.send_message(body, mail_parameters="BODY=8BITMIME")[0] == 250
    assert logged_in.retr() == [body]


def test_250_only_once_the_message_is_in_new(
    logged_in: RawSession, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the moment the server sends DATA's 250, the whole message is in new/ and nothing is left in tmp/."""
    seen: list[tuple[int, dict[str, list[str]], list[bytes]]] = []
    reply = SMTPHandler.reply
    maildir = smtp_server.mailboxes_path / "alice" / ".Sent"

    def spy(handler: SMTPHandler, code: int, *lines: str) -> None:
        if (maildir / "new").is_dir():
            contents = [path.read_bytes() for path in sorted((maildir / "new").iterdir())]
            seen.append((code, maildir_listing(smtp_server, "alice"), contents))
        reply(handler, code, *lines)

    monkeypatch.setattr(SMTPHandler, "reply", spy)
    assert logged_in.send_message(b"durable\r\n")[0] == 250
    code, listing, stored = seen[-1]
    assert code == 250
    assert len(listing["new"]) == 1 and listing["tmp"] == []
    assert stored == [b"durable\n"]


def test_transaction_is_cleared_after_data(logged_in: RawSession) -> None:
    assert logged_in.send_message(b"done\r\n")[0] == 250
    logged_in.expect("""
        C: RCPT TO:<bob@example.org>
        S: 503 *
        C: DATA
        S: 503 *
    """)


# -------------------------------------------------- HELO, EHLO and RSET mid-transaction


@pytest.mark.parametrize("line", ["RSET", "HELO client.test", "EHLO client.test"])
def test_reset_clears_the_transaction_and_keeps_the_login(
    logged_in: RawSession, smtp_server: RunningServer, line: str
) -> None:
    logged_in.command("MAIL FROM:<alice@example.org>")
    logged_in.command("RCPT TO:<bob@example.org>")
    code, _ = logged_in.command(line)
    assert code == 250
    logged_in.expect("""
        C: RCPT TO:<carol@example.org>
        S: 503 *
        C: DATA
        S: 503 *
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        C: RCPT TO:<carol@example.org>
        S: 250 *
        C: DATA
        S: 354 *
        C: after a reset
        C: .
        S: 250 *
    """)
    assert smtp_server.stored("alice") == [b"after a reset\n"]
    assert logged_in.command("RETR")[0] == 250  # still logged in


@pytest.mark.parametrize("line", ["RSET", "HELO client.test", "EHLO client.test"])
def test_reset_keeps_a_login_made_before_any_transaction(logged_in: RawSession, line: str) -> None:
    assert logged_in.command(line)[0] == 250
    assert logged_in.command("MAIL FROM:<alice@example.org>")[0] == 250


# ---------------------------------------------------------------------------- RETR


def test_retr_with_no_messages(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: RETR
        S: 250 0 *
        C: NOOP
        S: 250 *
    """)


def test_retr_format(logged_in: RawSession) -> None:
    logged_in.send_message(b"Subject: one\r\n\r\n..dotted\r\n")
    logged_in.send_message(b"Subject: two\r\n\r\nsecond\r\n")
    logged_in.expect("""
        C: RETR
        S: 250 2 messages follow
        S: Subject: one
        S:
        S: ..dotted
        S: .
        S: Subject: two
        S:
        S: second
        S: .
        C: NOOP
        S: 250 *
    """)


def test_retr_count_line_for_one_message(logged_in: RawSession) -> None:
    logged_in.send_message(b"only\r\n")
    code, lines = logged_in.command("RETR")
    assert code == 250 and lines[0].split()[0] == "1"


def test_retr_oldest_first(logged_in: RawSession) -> None:
    for number in range(5):
        logged_in.send_message(f"Subject: {number}\r\n\r\nmessage {number}\r\n".encode())
    assert logged_in.retr() == [f"Subject: {n}\r\n\r\nmessage {n}\r\n".encode() for n in range(5)]


def test_retr_shows_only_the_users_own_messages(smtp_server: RunningServer, connect) -> None:
    alice, bob = connect(), connect()
    alice.login("alice")
    bob.login("bob")
    alice.send_message(b"from alice\r\n", recipients=["bob@example.org"])
    bob.send_message(b"from bob\r\n", sender="bob@example.org")
    assert alice.retr() == [b"from alice\r\n"]
    assert bob.retr() == [b"from bob\r\n"]


ROUND_TRIP = {
    "plain": b"Subject: x\r\n\r\nhello\r\n",
    "empty": b"",
    "one empty line": b"\r\n",
    "leading dots": b".\r\n..\r\n...\r\n. space\r\n.x\r\n",
    "dots everywhere": b".first\r\nmiddle\r\n.\r\n.last\r\n",
    "whitespace": b"  indented\r\n\ttab\r\ntrailing  \r\n \r\n\r\n\r\n",
    "eight bit": "Grüße ☃\r\n".encode() + b"\xff\xfe raw\r\n",
    "lone CR in a line": b"a\rb\r\n",
    "long line": b"L" * 998 + b"\r\n",
    "long dotted line": b"." + b"L" * 997 + b"\r\n",
    "headers": b"From: a@b\r\nTo: c@d\r\nSubject: folded\r\n continued\r\n\r\nbody\r\n",
}


@pytest.mark.parametrize("message", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_retr_returns_exactly_what_data_accepted(logged_in: RawSession, message: bytes) -> None:
    wire = b"".join(b"." + line if line.startswith(b".") else line for line in message.splitlines(keepends=True))
    assert logged_in.send_message(wire)[0] == 250
    assert logged_in.retr() == [message]


def test_round_trip_with_smtplib(smtp_server: RunningServer) -> None:
    message = b"Subject: via smtplib\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n"
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.login("alice", USERS["alice"])
        client.sendmail("alice@example.org", ["bob@example.org"], message)
    assert smtp_server.stored("alice") == [message.replace(b"\r\n", b"\n")]


@pytest.mark.parametrize("line", ["RETR 1", "RETR all", "DELE 1", "DELE *"])
def test_retr_and_dele_take_no_argument(logged_in: RawSession, smtp_server: RunningServer, line: str) -> None:
    logged_in.send_message(b"keep me\r\n")
    logged_in.expect(f"""
        C: {line}
        S: 504 *
    """)
    assert smtp_server.stored("alice") == [b"keep me\n"]


def test_retr_is_readable_by_the_stored_maildir(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.send_message(b"Subject: mailbox\r\n\r\nbody\r\n")
    box = mailbox.Maildir(smtp_server.mailboxes_path / "alice" / ".Sent", factory=None, create=False)
    [message] = list(box)
    assert message["Subject"] == "mailbox"
    assert message.get_payload() == "body\n"


# ---------------------------------------------------------------------------- DELE


def test_dele_counts_and_deletes(logged_in: RawSession, smtp_server: RunningServer) -> None:
    for number in range(3):
        logged_in.send_message(f"{number}\r\n".encode())
    logged_in.expect("""
        C: DELE
        S: 250 3 *
        C: RETR
        S: 250 0 *
        C: DELE
        S: 250 0 *
    """)
    assert smtp_server.stored("alice") == []


def test_dele_with_one_message(logged_in: RawSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailserver")
    logged_in.send_message(b"one\r\n")
    assert logged_in.command("DELE") == (250, ["1 message deleted"])
    assert "alice deleted 1 message" in caplog.text and "1 messages" not in caplog.text


def test_dele_with_nothing_stored(logged_in: RawSession) -> None:
    logged_in.expect("""
        C: DELE
        S: 250 0 *
    """)


def test_dele_touches_only_the_users_messages(smtp_server: RunningServer, connect) -> None:
    alice, bob = connect(), connect()
    alice.login("alice")
    bob.login("bob")
    alice.send_message(b"alice's\r\n")
    bob.send_message(b"bob's\r\n", sender="bob@example.org")
    assert alice.command("DELE")[1][0].split()[0] == "1"
    assert smtp_server.stored("bob") == [b"bob's\n"]


def test_sending_after_dele(logged_in: RawSession) -> None:
    logged_in.send_message(b"old\r\n")
    assert logged_in.command("DELE")[0] == 250
    logged_in.send_message(b"new\r\n")
    assert logged_in.retr() == [b"new\r\n"]
