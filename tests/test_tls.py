"""TLS: STARTTLS (RFC 3207), --require-tls, the implicit-TLS listener (RFC 8314), the clear-text warning.

Every test uses one self-signed certificate for `localhost` and 127.0.0.1, made once
per test run with the `openssl req` command the README gives teachers, and clients
that verify it, as students' clients would once told to trust it.

The certificate fixture, `require_tool` and `retrieve` live in conftest.py, shared with
test_interop.py and test_client.py.
"""

from __future__ import annotations

import base64
import contextlib
import re
import smtplib
import ssl
from collections.abc import Callable

import pytest
from conftest import USERS, Certificate, RawSession, RunningServer, ServerProcess, read_retr, retrieve, wait_for

ALICE_PLAIN = base64.b64encode(f"\0alice\0{USERS['alice']}".encode()).decode()


# ------------------------------------------------------------------ shared helpers


def start_tls(session: RawSession, context: ssl.SSLContext) -> None:
    """Do the client's side of the handshake, after `220 Ready to start TLS` (or at once, for SMTPS)."""
    session.file.close()  # it may not hold bytes from before the handshake
    session.sock = context.wrap_socket(session.sock, server_hostname="localhost")
    session.file = session.sock.makefile("rb")


def read_until_closed(session: RawSession, timeout: float = 5.0) -> bytes:
    """Whatever the server sends until it closes the connection (a timeout fails the test)."""
    session.sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):  # a close with our bytes unread is a reset
        while chunk := session.file.read1(65536):
            received += chunk
    return received


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def tls_server(start_server: Callable[..., RunningServer], certificate: Certificate) -> RunningServer:
    """A server offering STARTTLS, as `--tls-cert cert.pem --tls-key key.pem` starts it."""
    return start_server(tls_context=certificate.server_context())


# ---------------------------------------------------------------------- STARTTLS


def test_starttls_is_advertised_only_when_configured(
    smtp_server: RunningServer, tls_server: RunningServer, connect: Callable[..., RawSession]
) -> None:
    plain = connect(smtp_server)
    assert "STARTTLS" not in plain.ehlo()
    plain.expect("""
        C: STARTTLS
        S: 454 *
    """)
    assert "STARTTLS" in connect(tls_server).ehlo()


def test_starttls_then_the_whole_session_runs_encrypted(
    tls_server: RunningServer, connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    session = connect(tls_server)
    session.ehlo()
    session.expect("""
        C: STARTTLS
        S: 220 Ready to start TLS
    """)
    start_tls(session, certificate.client_context())
    assert session.sock.version() in ("TLSv1.2", "TLSv1.3")
    ehlo = session.ehlo()
    assert "AUTH" in ehlo
    assert "STARTTLS" not in ehlo  # RFC 3207 4.2: not offered again
    session.expect(f"""
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
        C: MAIL FROM:<alice@example.org>
        S: 250 OK
        C: RCPT TO:<bob@example.org>
        S: 250 2.1.5 <bob@example.org>: not a domain of this server, kept in your Sent folder only (no relay)
        C: DATA
        S: 354 *
        C: Subject: sealed
        C:
        C: ..sent over TLS
        C: .
        S: 250 *
    """)
    assert read_retr(session) == [["Subject: sealed", "", ".sent over TLS"]]


def test_starttls_resets_the_session(
    tls_server: RunningServer, connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    """RFC 3207 4.2: after the handshake the server forgets the greeting and the login."""
    session = connect(tls_server)
    session.login()  # allowed in clear text without --require-tls
    session.expect("""
        C: STARTTLS
        S: 220 Ready to start TLS
    """)
    start_tls(session, certificate.client_context())
    session.expect(f"""
        C: MAIL FROM:<alice@example.org>
        S: 530 *
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 503 *
    """)
    session.ehlo()
    session.expect(f"""
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
        C: MAIL FROM:<alice@example.org>
        S: 250 OK
    """)


def test_starttls_inside_tls_is_refused(
    tls_server: RunningServer, connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    session = connect(tls_server)
    session.ehlo()
    session.expect("""
        C: STARTTLS
        S: 220 Ready to start TLS
    """)
    start_tls(session, certificate.client_context())
    session.ehlo()
    session.expect("""
        C: STARTTLS
        S: 503 *
        C: NOOP
        S: 250 OK
    """)


def test_plaintext_pipelined_after_starttls_is_discarded(
    tls_server: RunningServer, connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    """RFC 3207 5 (and CVE-2011-0411): what came in clear text before the handshake is not run after it.

    A man in the middle could otherwise inject commands, such as a login, into the encrypted session.
    """
    session = connect(tls_server)
    session.ehlo()
    session.send(f"STARTTLS\r\nEHLO injected.test\r\nAUTH PLAIN {ALICE_PLAIN}\r\n")  # one packet
    session.expect("S: 220 Ready to start TLS")
    start_tls(session, certificate.client_context())
    # The first reply in TLS answers our first command: the injected ones were dropped.
    session.expect("""
        C: MAIL FROM:<alice@example.org>
        S: 530 *
        C: NOOP
        S: 250 OK
    """)


def test_a_failed_handshake_ends_that_connection_only(
    tls_server: RunningServer, connect: Callable[..., RawSession]
) -> None:
    bystander = connect(tls_server)
    bystander.login()
    session = connect(tls_server)
    session.ehlo()
    session.expect("""
        C: STARTTLS
        S: 220 Ready to start TLS
    """)
    session.send(b"this is not a TLS ClientHello\r\n")
    assert session.closed_by_server()
    bystander.expect("""
        C: NOOP
        S: 250 OK
    """)
    newcomer = connect(tls_server)
    newcomer.expect("""
        C: NOOP
        S: 250 OK
    """)


def test_a_client_silent_after_starttls_is_cut_off(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    server = start_server(tls_context=certificate.server_context(), timeout=0.5)
    session = connect(server)
    session.ehlo()
    session.expect("""
        C: STARTTLS
        S: 220 Ready to start TLS
    """)
    assert session.closed_by_server(timeout=5)  # the handshake waits --timeout at most
    connect(server).expect("""
        C: NOOP
        S: 250 OK
    """)


# ------------------------------------------------------------------ --require-tls


def test_require_tls_refuses_login_before_starttls(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    server = start_server(tls_context=certificate.server_context(), require_tls=True)
    session = connect(server)
    ehlo = session.ehlo()
    assert "AUTH" not in ehlo
    assert "STARTTLS" in ehlo
    # 530 (RFC 3207 4) or 538 (RFC 4954 6); and no 334 prompt that would draw a password out in clear.
    session.expect(f"""
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 53* *
        C: AUTH LOGIN
        S: 53* *
        C: MAIL FROM:<alice@example.org>
        S: 530 *
        C: STARTTLS
        S: 220 Ready to start TLS
    """)
    start_tls(session, certificate.client_context())
    assert "AUTH" in session.ehlo()
    session.expect(f"""
        C: AUTH PLAIN {ALICE_PLAIN}
        S: 235 *
        C: MAIL FROM:<alice@example.org>
        S: 250 OK
    """)


def test_require_tls_with_smtplib(start_server: Callable[..., RunningServer], certificate: Certificate) -> None:
    server = start_server(tls_context=certificate.server_context(), require_tls=True)
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPNotSupportedError):  # AUTH is not advertised in clear text
            client.login("alice", USERS["alice"])
        client.starttls(context=certificate.client_context())
        client.login("alice", USERS["alice"])
        client.sendmail("alice@example.org", ["bob@example.org"], b"Subject: required\r\n\r\nok\r\n")
    assert server.stored("alice") == [b"Subject: required\n\nok\n"]


# ------------------------------------------------------ implicit TLS (RFC 8314)


def smtps_port(process: ServerProcess) -> int:
    """The port of the implicit-TLS listener, from the start-up log."""
    pattern = r"serving SMTPS \(implicit TLS\) on [\d.]+:(\d+)"
    wait_for(lambda: re.search(pattern, process.log))
    match = re.search(pattern, process.log)
    assert match is not None
    return int(match[1])


def test_server_py_serves_implicit_tls_beside_the_plain_port(
    server_process: Callable[..., ServerProcess], certificate: Certificate
) -> None:
    process = server_process("--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key), "--tls-port", "0")
    port = smtps_port(process)
    assert port != process.port
    with smtplib.SMTP_SSL("127.0.0.1", port, context=certificate.client_context(), timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 503
        client.login("alice", USERS["alice"])
        client.sendmail("alice@example.org", ["bob@example.org"], b"Subject: smtps\r\n\r\nimplicit\r\n")
    # One store behind both listeners: the plain port has the message too.
    assert retrieve("127.0.0.1", process.port) == [["Subject: smtps", "", "implicit"]]


def test_implicit_tls_listener_speaks_tls_from_the_first_byte(
    start_server: Callable[..., RunningServer], connect: Callable[..., RawSession], certificate: Certificate
) -> None:
    server = start_server(tls_context=certificate.server_context(), implicit_tls=True)
    session = connect(server, greeting=False)
    start_tls(session, certificate.client_context())
    session.expect("""
        S: 220 mail.test *
    """)
    session.login()
    session.expect("""
        C: STARTTLS
        S: 503 *
    """)
    plaintext = connect(server, greeting=False)
    plaintext.send("EHLO client.test\r\n")  # a client that forgot TLS: its bytes are no ClientHello
    assert b"220" not in read_until_closed(plaintext)  # a TLS alert at most, no SMTP in clear text


# ------------------------------------------------------- the clear-text warning


def startup_log(process: ServerProcess) -> str:
    """The log once the server has taken a first session: every start-up line comes before that."""
    session = RawSession("127.0.0.1", process.port)  # loopback, even when it listens on 0.0.0.0
    try:
        assert session.read_reply()[0] == 220
    finally:
        session.close()
    wait_for(lambda: " connected" in process.log)
    return process.log


@pytest.mark.parametrize("tls", [False, True], ids=["without-tls", "tls-not-required"])
def test_warns_when_passwords_may_cross_the_network_in_clear(
    server_process: Callable[..., ServerProcess], certificate: Certificate, tls: bool
) -> None:
    """Beyond loopback, a login in clear text stays possible unless --require-tls (RFC 4954 4)."""
    tls_options = ["--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)] if tls else []
    # Only the log is looked at: no traffic goes to the other addresses.
    log = startup_log(server_process("--host", "0.0.0.0", *tls_options))
    assert re.search(r"WARNING .*clear text", log), log


def test_no_warning_when_tls_is_required(
    server_process: Callable[..., ServerProcess], certificate: Certificate
) -> None:
    process = server_process(
        "--host", "0.0.0.0", "--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key), "--require-tls"
    )
    log = startup_log(process)
    assert "serving on 0.0.0.0:" in log
    assert "clear text" not in log
    assert "WARNING" not in log


def test_no_warning_on_loopback(server_process: Callable[..., ServerProcess]) -> None:
    log = startup_log(server_process())
    assert "serving on 127.0.0.1:" in log
    assert "clear text" not in log
