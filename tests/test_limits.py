"""The limits that keep one client from wearing the server out: line lengths, size, errors, idle time."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from conftest import RawSession, RunningServer, store_message

MIB = 1024 * 1024

MAX_COMMAND_LINE = 512  # octets, CRLF included
MAX_TEXT_LINE = 1000  # octets, CRLF included
MAX_ERRORS = 10


def line_of(length: int, start: str = "") -> bytes:
    """A line of exactly length octets, CRLF included."""
    return (start + "x" * (length - 2 - len(start))).encode() + b"\r\n"


# ------------------------------------------------------------------ command lines


def test_command_line_of_512_octets_is_accepted(session: RawSession) -> None:
    line = line_of(MAX_COMMAND_LINE, "HELO ")
    session.send(line)
    assert session.read_reply()[0] == 250


def test_command_line_of_513_octets_is_refused(session: RawSession) -> None:
    session.send(line_of(MAX_COMMAND_LINE + 1, "HELO "))
    session.expect("""
        S: 500 *
        C: NOOP
        S: 250 *
    """)


def test_excess_of_a_long_command_line_is_discarded(session: RawSession) -> None:
    """What follows octet 512 must not be read as a command of its own (here: QUIT)."""
    session.send(b"VRFY " + b"a" * (MAX_COMMAND_LINE - 5) + b"QUIT\r\nNOOP\r\n")
    session.expect("""
        S: 500 *
        S: 250 *
    """)


@pytest.mark.parametrize("length", [600, 8192, 100_000, 1_000_000])
def test_very_long_command_lines(session: RawSession, length: int) -> None:
    session.send(b"NOOP " + b"n" * length + b"\r\nNOOP\r\n")
    session.expect("""
        S: 500 *
        S: 250 *
    """)


def test_long_command_line_does_not_break_a_transaction(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.expect(f"""
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        C: RCPT TO:<{"b" * 600}@example.org>
        S: 500 *
        C: RCPT TO:<bob@example.org>
        S: 250 *
        C: DATA
        S: 354 *
        C: still here
        C: .
        S: 250 *
    """)
    assert smtp_server.stored("alice") == [b"still here\n"]


# --------------------------------------------------------------- DATA text lines


def test_text_line_of_1000_octets_is_accepted(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.start_data()
    logged_in.send(line_of(MAX_TEXT_LINE) + b".\r\n")
    assert logged_in.read_reply()[0] == 250
    assert smtp_server.stored("alice") == [b"x" * 998 + b"\n"]


def test_text_line_of_1000_octets_after_unstuffing_is_accepted(
    logged_in: RawSession, smtp_server: RunningServer
) -> None:
    """The doubled dot is transport, not text: 1001 octets on the wire, 1000 in the message."""
    logged_in.start_data()
    logged_in.send(b"." + line_of(MAX_TEXT_LINE, ".") + b".\r\n")
    assert logged_in.read_reply()[0] == 250
    assert smtp_server.stored("alice") == [b"." + b"x" * 997 + b"\n"]


@pytest.mark.parametrize("length", [MAX_TEXT_LINE + 1, 2000, 1_000_000])
def test_text_line_over_1000_octets(logged_in: RawSession, smtp_server: RunningServer, length: int) -> None:
    """500 once the data has ended; the lines after the long one are read as data, not as commands."""
    logged_in.start_data()
    logged_in.send(b"Subject: long\r\n" + line_of(length) + b"QUIT\r\nafter\r\n.\r\n")
    logged_in.expect("""
        S: 500 *
        C: RCPT TO:<bob@example.org>
        S: 503 *
        C: NOOP
        S: 250 *
    """)
    assert smtp_server.stored("alice") == []
    assert list((smtp_server.mailboxes_path / "alice" / "tmp").iterdir()) == []


def test_text_line_over_the_limit_ended_by_bare_lf(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.start_data()
    logged_in.send(b"y" * MAX_TEXT_LINE + b"\nend\r\n.\r\n")  # 1001 octets on the wire
    assert logged_in.read_reply()[0] == 500
    assert smtp_server.stored("alice") == []


def test_send_again_after_a_refused_long_line(logged_in: RawSession, smtp_server: RunningServer) -> None:
    logged_in.start_data()
    logged_in.send(line_of(5000) + b".\r\n")
    assert logged_in.read_reply()[0] == 500
    logged_in.start_data()
    logged_in.send(b"short\r\n.\r\n")
    assert logged_in.read_reply()[0] == 250
    assert smtp_server.stored("alice") == [b"short\n"]


# ------------------------------------------------------------------ message size


@pytest.fixture
def small_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(max_message_size=1000)


@pytest.fixture
def small_session(small_server: RunningServer, connect: Callable[..., RawSession]) -> RawSession:
    session = connect(small_server)
    session.login()
    return session


def test_message_of_exactly_the_size_limit(small_session: RawSession, small_server: RunningServer) -> None:
    """The size counts CRLF line ends: ten lines of 100 octets make 1000."""
    small_session.start_data()
    small_session.send(line_of(100) * 10 + b".\r\n")
    assert small_session.read_reply()[0] == 250
    assert small_server.stored("alice") == [(b"x" * 98 + b"\n") * 10]


def test_size_counts_the_message_after_unstuffing(small_session: RawSession, small_server: RunningServer) -> None:
    """1010 octets on the wire, 1000 once the ten doubled dots are undone."""
    small_session.start_data()
    small_session.send((b"." + line_of(100, ".")) * 10 + b".\r\n")
    assert small_session.read_reply()[0] == 250


def test_size_counts_bare_lf_as_crlf(small_session: RawSession, small_server: RunningServer) -> None:
    """Ten 99-octet lines ended by a bare LF are 1000 octets as received with CRLF ends: accepted."""
    small_session.start_data()
    small_session.send((b"z" * 98 + b"\n") * 9 + b"z" * 98 + b"\r\n.\r\n")
    assert small_session.read_reply()[0] == 250
    small_session.start_data()
    small_session.send((b"z" * 98 + b"\n") * 10 + b"!\r\n.\r\n")  # one more line: 1003 octets
    assert small_session.read_reply()[0] == 552


OVERSIZED = {
    "by-one-line": line_of(100) * 10 + line_of(3),
    "six-times": line_of(100) * 60,
    "two-megabytes-and-a-command": line_of(1000) * 2000 + b"RSET\r\n",
}


@pytest.mark.parametrize("body", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_message_over_the_size_limit(small_session: RawSession, small_server: RunningServer, body: bytes) -> None:
    """552 once the data has ended, nothing stored, and the rest of the data is not read as commands."""
    small_session.start_data()
    small_session.send(body + b".\r\n")
    small_session.expect("""
        S: 552 *
        C: RCPT TO:<bob@example.org>
        S: 503 *
        C: NOOP
        S: 250 *
    """)
    assert small_server.stored("alice") == []
    assert list((small_server.mailboxes_path / "alice" / "tmp").iterdir()) == []


def test_send_again_after_a_refused_big_message(small_session: RawSession, small_server: RunningServer) -> None:
    small_session.start_data()
    small_session.send(line_of(100) * 20 + b".\r\n")
    assert small_session.read_reply()[0] == 552
    small_session.start_data()
    small_session.send(b"small\r\n.\r\n")
    assert small_session.read_reply()[0] == 250
    assert small_server.stored("alice") == [b"small\n"]


# ---------------------------------------------------------------- too many errors


def test_ninth_error_is_tolerated(session: RawSession) -> None:
    for _ in range(MAX_ERRORS - 1):
        assert session.command("BOGUS")[0] == 500
    session.expect("""
        C: NOOP
        S: 250 *
        C: HELO client.test
        S: 250 *
    """)


def test_tenth_error_is_followed_by_421_and_close(session: RawSession) -> None:
    for _ in range(MAX_ERRORS - 1):
        assert session.command("BOGUS")[0] == 500
    session.expect("""
        C: BOGUS
        S: 500 *
        S: 421 mail.test *
    """)
    assert session.closed_by_server()


def test_errors_count_across_the_session_whatever_their_code(logged_in: RawSession) -> None:
    """Ten 5xx replies, interleaved with successes, of many kinds."""
    logged_in.expect(f"""
        C: BOGUS
        S: 500 *
        C: NOOP
        S: 250 *
        C: RCPT TO:<bob@example.org>
        S: 503 *
        C: HELP NOSUCHTOPIC
        S: 504 *
        C: MAIL FROM:<alice@example.org> SIZE=99999999999
        S: 552 *
        C: MAIL FROM:<alice@example.org> FROBNICATE
        S: 555 *
        C: RETR 1
        S: 504 *
        C: AUTH PLAIN
        S: 503 *
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        C: DATA
        S: 503 *
        C: NOOP {"x" * 600}
        S: 500 *
        C: RSET
        S: 250 *
        C: MAIL FROM:<bad>
        S: 501 *
        S: 421 mail.test *
    """)
    assert logged_in.closed_by_server()


def test_pipelined_errors_stop_at_the_tenth(session: RawSession) -> None:
    session.send("BOGUS\r\n" * 12)
    for _ in range(MAX_ERRORS):
        assert session.read_reply()[0] == 500
    assert session.read_reply()[0] == 421
    assert session.closed_by_server()


def test_error_count_is_per_session(smtp_server: RunningServer, connect: Callable[..., RawSession]) -> None:
    first = connect()
    for _ in range(MAX_ERRORS - 1):
        first.command("BOGUS")
    second = connect()
    for _ in range(MAX_ERRORS - 1):
        assert second.command("BOGUS")[0] == 500
    assert first.command("NOOP")[0] == 250
    assert second.command("NOOP")[0] == 250


# --------------------------------------------------------------------- idle time


@pytest.fixture
def impatient_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(timeout=0.5)


def test_idle_session_gets_421_and_close(impatient_server: RunningServer, connect: Callable[..., RawSession]) -> None:
    started = time.monotonic()
    session = connect(impatient_server)
    session.expect("""
        S: 421 mail.test *
    """)
    assert session.closed_by_server()
    assert 0.4 <= time.monotonic() - started < 5


def test_idle_after_login_gets_421(impatient_server: RunningServer, connect: Callable[..., RawSession]) -> None:
    session = connect(impatient_server)
    session.login()
    session.expect("""
        C: MAIL FROM:<alice@example.org>
        S: 250 *
        S: 421 mail.test *
    """)
    assert session.closed_by_server()


def test_idle_in_the_middle_of_a_command_line(
    impatient_server: RunningServer, connect: Callable[..., RawSession]
) -> None:
    session = connect(impatient_server)
    session.send("NOO")
    session.expect("""
        S: 421 *
    """)
    assert session.closed_by_server()


def test_idle_while_answering_an_auth_challenge(
    impatient_server: RunningServer, connect: Callable[..., RawSession]
) -> None:
    session = connect(impatient_server)
    session.ehlo()
    session.expect("""
        C: AUTH LOGIN
        S: 334 *
        S: 421 mail.test *
    """)
    assert session.closed_by_server()


def test_idle_in_the_middle_of_data(impatient_server: RunningServer, connect: Callable[..., RawSession]) -> None:
    session = connect(impatient_server)
    session.login()
    session.start_data()
    session.send("Subject: never finished\r\n")
    session.expect("""
        S: 421 mail.test *
    """)
    assert session.closed_by_server()
    assert impatient_server.stored("alice") == []


def test_a_client_that_stops_reading_is_cut_off_after_the_timeout(
    impatient_server: RunningServer, connect: Callable[..., RawSession]
) -> None:
    """The sockets block without Python's timeout (issue 22): a send the client does not take fails in --timeout."""
    for number in range(3):  # 24 MiB: more than the loopback's socket buffers hold
        store_message(impatient_server.server.mailboxes, "alice", f"Subject: {number}\n\n".encode() + b"x" * 8 * MIB)
    session = connect(impatient_server)
    session.login()
    session.send("RETR\r\n")  # and never read the reply
    assert impatient_server.server.connections.wait_until_idle(10), "the session still sends to a client gone quiet"


def test_a_busy_session_is_not_idle(impatient_server: RunningServer, connect: Callable[..., RawSession]) -> None:
    """The timeout is per wait, not for the whole session: commands every 0.1 s keep it for 0.8 s."""
    session = connect(impatient_server)
    for _ in range(8):
        time.sleep(0.1)  # the pause is the input here, not a wait for something
        assert session.command("NOOP")[0] == 250
