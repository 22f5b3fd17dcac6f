"""client.py's errors say what to do next, in one line: TLS mix-ups, certificates, hosts and ports, waits.

Each test makes the mistake a student makes in class and checks the one line that comes back.
"""

from __future__ import annotations

import errno
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Certificate, RunningServer, make_certificate
from test_client import DELETE, LOGIN, QUIT, deliver, run_client, trace_lines

import client as client_module


def test_plain_client_on_the_tls_port_is_told_to_add_tls(
    start_server: Callable[..., RunningServer], certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SMTPS port waits for a TLS handshake and never greets; the client says so instead of hanging."""
    server = start_server(tls_context=certificate.server_context(), implicit_tls=True)
    monkeypatch.setattr(client_module, "GREETING_TIMEOUT", 0.5)  # the real one is 10 s
    account = client_module.Account("127.0.0.1", server.port, None)
    with pytest.raises(client_module.CannotConnectError) as refused:
        account.connect()
    assert str(refused.value) == (
        f"No greeting from 127.0.0.1:{server.port} within 0.5 s — is this the TLS port? Then add --tls."
    )


def test_starttls_client_on_the_tls_port_is_told_to_use_tls_instead(
    start_server: Callable[..., RunningServer], certificate: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_server(tls_context=certificate.server_context(), implicit_tls=True)
    monkeypatch.setattr(client_module, "GREETING_TIMEOUT", 0.5)
    account = client_module.Account("127.0.0.1", server.port, None, certificate.client_context())
    with pytest.raises(client_module.CannotConnectError, match=r"Then use --tls instead of --starttls\.$"):
        account.connect()


def test_greeting_timeout_is_ten_seconds_and_the_session_timeout_stays(smtp_server: RunningServer) -> None:
    assert client_module.GREETING_TIMEOUT == 10
    with client_module.MailClient(smtp_server.host, smtp_server.port) as client:
        assert client.sock is not None
        assert client.sock.gettimeout() == client_module.SOCKET_TIMEOUT == client.timeout


def test_tls_client_on_the_plain_port(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + QUIT, "--tls")
    assert result.returncode == 1
    assert result.stderr == f"127.0.0.1:{smtp_server.port} does not speak TLS — drop --tls, or use --starttls.\n"


def test_starttls_against_a_server_without_tls(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, LOGIN + QUIT, "--starttls")
    assert result.returncode == 1
    assert result.stderr == f"127.0.0.1:{smtp_server.port} does not offer STARTTLS — drop --starttls.\n"


def test_plain_client_against_require_tls_is_told_before_typing_a_password(
    start_server: Callable[..., RunningServer], certificate: Certificate
) -> None:
    server = start_server(tls_context=certificate.server_context(), require_tls=True)
    result = run_client(server.port, LOGIN + QUIT)
    assert result.returncode == 1
    assert result.stderr == "The server accepts logins only over TLS: add --starttls --cafile cert.pem.\n"
    assert "Password:" not in result.stdout and "Username:" not in result.stdout


def test_certificate_of_another_server_in_cafile(
    start_server: Callable[..., RunningServer], certificate: Certificate, tmp_path: Path
) -> None:
    other = make_certificate(tmp_path)  # same names, another key: not the one the server has
    server = start_server(tls_context=certificate.server_context())
    result = run_client(server.port, LOGIN + QUIT, "--starttls", "--cafile", str(other.cert))
    assert result.returncode == 1
    assert result.stderr.startswith(f"The server's certificate is not trusted by {other.cert} (")
    assert result.stderr.endswith("): is it the cert.pem your teacher handed out for this server?\n")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("mode", ["--starttls", "--tls"])
def test_certificate_for_another_name_says_which_names_it_holds(
    start_server: Callable[..., RunningServer], tmp_path: Path, mode: str
) -> None:
    teachers = make_certificate(tmp_path, "DNS:teacher.lan,IP:192.0.2.7")
    server = start_server(tls_context=teachers.server_context(), implicit_tls=mode == "--tls")
    result = run_client(server.port, LOGIN + QUIT, mode, "--cafile", str(teachers.cert))
    assert result.returncode == 1
    assert result.stderr == (
        "The server's certificate is for teacher.lan, 192.0.2.7, not 127.0.0.1: "
        "use --host teacher.lan, or a certificate made for 127.0.0.1.\n"
    )


def test_name_check_stays_on_after_reading_the_names(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    teachers = make_certificate(tmp_path, "DNS:teacher.lan")
    server = start_server(tls_context=teachers.server_context())
    context = teachers.client_context()
    account = client_module.Account("127.0.0.1", server.port, None, context)
    with pytest.raises(client_module.CannotConnectError, match=r"is for teacher\.lan, not 127\.0\.0\.1"):
        account.connect()
    assert context.check_hostname


class WatchedContext(ssl.SSLContext):
    """An SSL context that records every change of its name check."""

    changes: list[bool]

    @property  # type: ignore[override]
    def check_hostname(self) -> bool:
        return ssl.SSLContext.check_hostname.__get__(self)

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        self.changes.append(value)
        ssl.SSLContext.check_hostname.__set__(self, value)


@pytest.mark.parametrize("implicit_tls", [False, True])
def test_the_names_are_read_over_a_context_of_their_own(
    start_server: Callable[..., RunningServer], tmp_path: Path, implicit_tls: bool
) -> None:
    """Not a flag flipped on the shared context, which every other connection of the session uses."""
    teachers = make_certificate(tmp_path, "DNS:teacher.lan")
    server = start_server(tls_context=teachers.server_context(), implicit_tls=implicit_tls)
    context = WatchedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.changes = []
    context.load_verify_locations(teachers.cert)
    account = client_module.Account("127.0.0.1", server.port, None, context, implicit_tls=implicit_tls)
    with pytest.raises(client_module.CannotConnectError, match=r"is for teacher\.lan, not 127\.0\.0\.1"):
        account.connect()
    assert context.changes == []


def test_unknown_host() -> None:
    result = run_client(2525, LOGIN + QUIT, "--host", "no-such-host.invalid")
    assert result.returncode == 1
    assert result.stderr == "Unknown host 'no-such-host.invalid': check the name or address after --host.\n"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError("timed out"), "No answer from 192.0.2.7:2525"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "Cannot connect to 192.0.2.7:2525: No route to host"),
    ],
)
def test_a_host_that_cannot_be_reached_points_at_the_address_and_the_firewall(
    monkeypatch: pytest.MonkeyPatch, error: OSError, expected: str
) -> None:
    def unreachable(*args: object, **kwargs: object) -> socket.socket:
        raise error

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(client_module.CannotConnectError) as refused:
        client_module.Account("192.0.2.7", 2525, None).connect()
    assert str(refused.value) == f"{expected} — check --host, and that no firewall blocks port 2525."


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_port_out_of_range(port: str) -> None:
    result = run_client(2525, LOGIN + QUIT, "--port", port)  # the last --port wins
    assert result.returncode == 2
    assert result.stderr == f"Port {port} is out of range: a port is a number from 1 to 65535.\n"
    assert result.stdout == ""


# --- a login the server refuses for a while: 454 says how long ----------------------------


@pytest.mark.parametrize(
    ("limits", "names", "reason"),
    [
        ({"max_login_failures": 2}, ["alice", "alice"], "for this name"),
        ({"max_login_failures_per_ip": 2}, ["bob", "carol"], "from your address"),
    ],
)
def test_454_says_why_and_how_long_to_wait(
    start_server: Callable[..., RunningServer], limits: dict[str, int], names: list[str], reason: str
) -> None:
    server = start_server(**limits)
    for name in names:
        with smtplib.SMTP(server.host, server.port) as smtp, pytest.raises(smtplib.SMTPException):
            smtp.login(name, "a typo")
    result = run_client(server.port, LOGIN + QUIT)
    assert result.returncode == 1
    wait = re.fullmatch(rf"Login refused: too many failed logins {reason}; try again in (\d+) s\.\n", result.stderr)
    assert wait, result.stderr
    assert 0 < int(wait[1]) <= server.config.login_failure_window


def test_other_refusals_are_shown_as_the_server_says_them() -> None:
    assert client_module.login_refusal(454, b"4.7.0 Too many failed logins, try again later") == (
        "Login refused: 454 4.7.0 Too many failed logins, try again later"
    )


# --- the small things ------------------------------------------------------------------------


def test_failed_scripted_login_exits_1_when_the_input_ends(smtp_server: RunningServer) -> None:
    result = run_client(smtp_server.port, "alice\nnot-the-password\n")
    assert result.returncode == 1
    assert "Login failed: wrong username or password." in result.stdout
    assert result.stderr == "Not logged in: the input ended after a failed login.\n"


def test_machine_name_with_an_underscore_gives_a_valid_default_sender(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(hostname="teachers_laptop")
    result = run_client(server.port, LOGIN + "1\n\nbob@example.org\nhi\nhello\n.\n" + QUIT)
    assert result.returncode == 0, result.stderr
    assert "From [alice@localhost]: " in result.stdout
    [stored] = server.stored("alice")
    assert b"From: alice@localhost\n" in stored


def test_default_sender_is_the_servers_name_when_it_is_a_domain() -> None:
    assert client_module.default_sender("alice", "mail.test") == "alice@mail.test"
    assert client_module.default_sender("alice", "my_laptop") == "alice@localhost"
    assert client_module.default_sender("a..b", "my_laptop") == ""  # no default: the prompt asks


def test_delete_with_trace_counts_without_printing_the_messages(smtp_server: RunningServer) -> None:
    for number in (1, 2):
        deliver(smtp_server, f"Subject: private {number}\r\n\r\nsecret text {number}\r\n")
    result = run_client(smtp_server.port, LOGIN + DELETE + "y\n" + QUIT, "--trace")
    assert result.returncode == 0, result.stderr
    assert "secret text" not in result.stdout and "private" not in result.stdout
    assert "   (2 messages counted, not shown)" in result.stdout
    assert "Delete all 2 messages you sent? [y/N] " in result.stdout
    lines = trace_lines(result.stdout)
    assert lines[lines.index("C: RETR") + 1] == "S: 250 2 messages follow"
    assert "S: 250 2 messages deleted" in lines
    assert smtp_server.stored("alice") == []


def test_count_reads_past_every_message(smtp_server: RunningServer) -> None:
    """After counting, the connection is in step: the next command gets its own reply."""
    for number in range(3):
        deliver(smtp_server, f"Subject: {number}\r\n\r\n.leading dot\r\n")
    with client_module.MailClient(smtp_server.host, smtp_server.port) as client:
        client.login("alice", "alice-password")
        assert client.count() == 3
        assert client.noop() == (250, b"OK")


def test_end_of_input_key_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    assert client_module.end_of_input_key() == "Ctrl-D"
    monkeypatch.setattr(client_module.sys, "platform", "win32")
    assert client_module.end_of_input_key() == "Ctrl-Z, Enter"


def test_every_error_that_ends_the_client_is_one_line() -> None:
    errors = [
        smtplib.SMTPServerDisconnected("Connection unexpectedly closed"),
        smtplib.SMTPResponseException(421, b"mail.test Timeout\nsecond line"),
        client_module.ReconnectFailedError("reason"),
        OSError(101, "Network is unreachable"),
    ]
    for error in errors:
        assert "\n" not in client_module.error_message(error)
