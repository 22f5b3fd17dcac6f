"""Real mail software against the server: smtplib, a plain socket, swaks, curl, msmtp, and mutt reading the Maildir.

Each client logs in and sends MESSAGE; RETR (or the Maildir itself) must then give it
back line for line. The programs are Debian's (`.ci/run` installs them); a test skips
when one is missing, except in CI, where it fails. The commands are those of the
README's "Using other clients", with the test's port, and the certificate fixture of conftest.py.
"""

from __future__ import annotations

import copy
import email.generator
import io
import mailbox
import os
import pty
import re
import select
import shlex
import smtplib
import subprocess
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import USERS, Certificate, RawSession, RunningServer, require_tool, retrieve

# The lines a client sends, chosen to trip careless clients and servers: a lone "." and
# leading dots (dot-stuffing), blank lines, spaces at both ends, 8-bit text (8BITMIME).
MESSAGE_LINES = [
    "From: Alice <alice@example.org>",
    "To: Bob <bob@example.org>",
    "Date: Sat, 28 Nov 2026 10:00:00 +0000",  # with Date and Message-ID present, msmtp adds none
    "Message-ID: <interop-test@example.org>",
    "Subject: Greetings from a real client",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    "",
    "Hello Bob,",
    "",
    ".",
    ".leading dot",
    "..two leading dots",
    "  indented, with trailing spaces  ",
    "Grüße aus Köln",
    "",
    "-- ",
    "Alice",
]
MESSAGE = "".join(line + "\r\n" for line in MESSAGE_LINES).encode()
STORED = MESSAGE.replace(b"\r\n", b"\n")  # Maildir keeps LF line ends
ALICE, PASSWORD = "alice", USERS["alice"]
SENDER, RECIPIENT = "alice@example.org", "bob@example.org"
TOOL_TIMEOUT = 30  # seconds; a client that hangs fails the test instead of the run


class Servers(NamedTuple):
    """What `server.py --tls-cert C --tls-key K --tls-port P` starts: two listeners, one store."""

    starttls: RunningServer  # the plain port, offering STARTTLS
    smtps: RunningServer  # the implicit-TLS port


@pytest.fixture
def servers(start_server: Callable[..., RunningServer], certificate: Certificate) -> Servers:
    starttls = start_server(tls_context=certificate.server_context())
    smtps = start_server(
        tls_context=certificate.server_context(), implicit_tls=True, mailboxes_path=starttls.mailboxes_path
    )
    return Servers(starttls, smtps)


class Target(NamedTuple):
    """Where a client sends (server), where its mail is read back (store), the certificate to trust if TLS."""

    server: RunningServer
    store: RunningServer
    certificate: Certificate | None


def target(request: pytest.FixtureRequest, kind: str) -> Target:
    """kind "plain": the server as shipped, without TLS; "starttls" and "smtps": the two listeners of `servers`.

    Only a TLS kind makes the certificate, so the clear-text tests run even where openssl is missing.
    """
    if kind == "plain":
        server = request.getfixturevalue("smtp_server")
        return Target(server, server, None)
    servers: Servers = request.getfixturevalue("servers")
    return Target(
        servers.smtps if kind == "smtps" else servers.starttls, servers.starttls, request.getfixturevalue("certificate")
    )


def run_tool(args: list[str], *, stdin: bytes | None = None) -> str:
    """Run a client program; fail with its output unless it exits 0."""
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=TOOL_TIMEOUT)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, f"{shlex.join(args)} exited {result.returncode}:\n{output}"
    return output


def assert_arrived(server: RunningServer, *, stored: bytes = STORED, lines: list[str] = MESSAGE_LINES) -> None:
    """RETR gives back exactly the one message sent, line for line, and the Maildir holds it."""
    assert retrieve(server.host, server.port, ALICE) == [lines]
    assert server.stored(ALICE) == [stored]


# ------------------------------------------------------------------------ smtplib


@pytest.mark.parametrize(
    ("mechanism", "initial_response"),
    [("PLAIN", True), ("LOGIN", True), ("LOGIN", False)],
    ids=["login-PLAIN", "LOGIN-initial-response", "LOGIN-challenges"],
)
def test_smtplib_sendmail(smtp_server: RunningServer, mechanism: str, initial_response: bool) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        if mechanism == "PLAIN":
            client.login(ALICE, PASSWORD)  # what most students write; it picks PLAIN
        else:
            client.user, client.password = ALICE, PASSWORD  # smtplib's auth_login reads them from here
            client.ehlo()
            code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=initial_response)
            assert code == 235
        refused = client.sendmail(SENDER, [RECIPIENT, "carol@example.org"], MESSAGE)
    assert refused == {}
    assert_arrived(smtp_server)  # two recipients, stored once


def test_smtplib_send_message_drops_bcc(smtp_server: RunningServer) -> None:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "Bob <bob@example.org>"
    message["Bcc"] = "carol@example.org"
    message["Subject"] = "send_message"
    message.set_content("Hello Bob,\n.\n.leading dot\nGrüße\n")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.login(ALICE, PASSWORD)
        assert client.send_message(message) == {}
    # What smtplib puts on the wire: the message flattened without its Bcc header.
    sent = copy.copy(message)
    del sent["Bcc"]
    flattened = io.BytesIO()
    email.generator.BytesGenerator(flattened).flatten(sent, linesep="\n")
    assert b"Bcc" not in flattened.getvalue()
    assert_arrived(smtp_server, stored=flattened.getvalue(), lines=flattened.getvalue().decode().splitlines())


def test_smtplib_starttls(servers: Servers, certificate: Certificate) -> None:
    with smtplib.SMTP(servers.starttls.host, servers.starttls.port, timeout=10) as client:
        code, _ = client.starttls(context=certificate.client_context())  # verifies the certificate
        assert code == 220
        client.login(ALICE, PASSWORD)
        client.sendmail(SENDER, [RECIPIENT], MESSAGE)
    assert_arrived(servers.starttls)


def test_smtplib_smtps(servers: Servers, certificate: Certificate) -> None:
    with smtplib.SMTP_SSL(
        servers.smtps.host, servers.smtps.port, context=certificate.client_context(), timeout=10
    ) as client:
        client.login(ALICE, PASSWORD)
        client.sendmail(SENDER, [RECIPIENT], MESSAGE)
    assert_arrived(servers.starttls)


# ------------------------------------------------------------------- plain socket


def test_plain_socket_session(smtp_server: RunningServer) -> None:
    """A whole dialogue typed by hand, as with telnet: AUTH LOGIN's challenges, dot-stuffing by the sender."""
    session = RawSession(smtp_server.host, smtp_server.port)
    try:
        session.expect("""
            S: 220 mail.test *
        """)
        ehlo = session.ehlo("laptop")
        assert ehlo.greeting.startswith("mail.test ")
        assert {"AUTH": "PLAIN LOGIN", "8BITMIME": "", "PIPELINING": "", "HELP": ""}.items() <= ehlo.extensions.items()
        assert ehlo["SIZE"]
        session.expect("""
            C: AUTH LOGIN
            S: 334 VXNlcm5hbWU6
            C: YWxpY2U=
            S: 334 UGFzc3dvcmQ6
            C: YWxpY2UtcGFzc3dvcmQ=
            S: 235 *
            C: MAIL FROM:<alice@example.org>
            S: 250 OK
            C: RCPT TO:<bob@example.org>
            S: 250 2.1.5 <bob@example.org>: not a domain of this server, kept in your Sent folder only (no relay)
            C: DATA
            S: 354 Start mail input; end with <CRLF>.<CRLF>
            C: Subject: by hand
            C:
            C: ..
            C: ...two leading dots
            C: .
            S: 250 *
            C: RETR
            S: 250 1 message follows
            S: Subject: by hand
            S:
            S: ..
            S: ...two leading dots
            S: .
            C: QUIT
            S: 221 *
        """)
        assert session.closed_by_server()
    finally:
        session.close()
    assert smtp_server.stored(ALICE) == [b"Subject: by hand\n\n.\n..two leading dots\n"]


# -------------------------------------------------------------------------- swaks


SWAKS_VARIANTS = {  # variant: (listener kind, AUTH mechanism)
    "PLAIN": ("plain", "PLAIN"),
    "LOGIN": ("plain", "LOGIN"),
    "STARTTLS": ("starttls", "LOGIN"),
    "SMTPS": ("smtps", "PLAIN"),
}


@pytest.mark.parametrize("variant", list(SWAKS_VARIANTS))
def test_swaks(request: pytest.FixtureRequest, tmp_path: Path, variant: str) -> None:
    swaks = require_tool("swaks")
    kind, mechanism = SWAKS_VARIANTS[variant]
    to = target(request, kind)
    data = tmp_path / "message.eml"
    # swaks ends the data with CRLF . CRLF itself: a final CRLF in the file would add an empty line.
    data.write_bytes(MESSAGE.removesuffix(b"\r\n"))
    tls = []
    if to.certificate is not None:
        tls = [
            "--tls" if kind == "starttls" else "--tls-on-connect",
            "--tls-verify",
            "--tls-ca-path",
            str(to.certificate.cert),
        ]
    output = run_tool(
        [
            swaks,
            "--server",
            f"{to.server.host}:{to.server.port}",
            *tls,
            "--auth",
            mechanism,
            "--auth-user",
            ALICE,
            "--auth-password",
            PASSWORD,
            "--from",
            SENDER,
            "--to",
            RECIPIENT,
            "--data",
            f"@{data}",
        ]
    )
    assert re.search(rf"^ [-~]> AUTH {mechanism}\b", output, re.MULTILINE)  # the mechanism it was told
    assert ("TLS started" in output) == bool(tls)
    assert_arrived(to.store)


# --------------------------------------------------------------------------- curl


@pytest.mark.parametrize("kind", ["plain", "starttls", "smtps"])
def test_curl(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    curl = require_tool("curl")
    to = target(request, kind)
    data = tmp_path / "message.eml"
    data.write_bytes(MESSAGE)
    scheme = "smtps" if kind == "smtps" else "smtp"
    tls = []
    if to.certificate is not None:
        # --ssl-reqd: STARTTLS on smtp://, and give up rather than log in without TLS.
        tls = ["--ssl-reqd", "--cacert", str(to.certificate.cert)]
    output = run_tool(
        [
            curl,
            "--silent",
            "--show-error",
            "--verbose",
            "--url",
            f"{scheme}://127.0.0.1:{to.server.port}/client.test",  # the path is curl's EHLO name
            *tls,
            "--user",
            f"{ALICE}:{PASSWORD}",
            "--mail-from",
            SENDER,
            "--mail-rcpt",
            RECIPIENT,
            "--upload-file",
            str(data),
        ]
    )
    assert ("> STARTTLS" in output) == (kind == "starttls")
    assert_arrived(to.store)


# -------------------------------------------------------------------------- msmtp


# msmtp's "auth on" picks the best mechanism but refuses PLAIN and LOGIN without TLS
# ("cannot use a secure authentication method"): in clear text it must be told "auth plain".
MSMTP_SETTINGS = {
    "plain": {"auth": "plain", "tls": "off"},
    "starttls": {"auth": "on", "tls": "on", "tls_starttls": "on"},
    "smtps": {"auth": "on", "tls": "on", "tls_starttls": "off"},
}


@pytest.mark.parametrize("kind", list(MSMTP_SETTINGS))
def test_msmtp(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    msmtp = require_tool("msmtp")
    to = target(request, kind)
    settings = {"host": "127.0.0.1", "port": str(to.server.port), "user": ALICE, "password": PASSWORD, "from": SENDER}
    settings |= MSMTP_SETTINGS[kind]
    if to.certificate is not None:
        settings["tls_trust_file"] = str(to.certificate.cert)
    config = tmp_path / "msmtprc"
    config.write_text(
        "account classroom\n"
        + "".join(f"{key} {value}\n" for key, value in settings.items())
        + "account default : classroom\n"
    )
    config.chmod(0o600)  # msmtp refuses a config file with a password that others can read
    run_tool([msmtp, f"--file={config}", RECIPIENT], stdin=MESSAGE)
    assert_arrived(to.store)


# ------------------------------------------------------------------- Maildir readers


def send_with_smtplib(server: RunningServer, *messages: bytes) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.login(ALICE, PASSWORD)
        for message in messages:
            client.sendmail(SENDER, [RECIPIENT], message)


def test_python_mailbox_reads_the_maildir(smtp_server: RunningServer) -> None:
    second = b"Subject: second\r\n\r\n.\r\nthe end\r\n"
    send_with_smtplib(smtp_server, MESSAGE, second)
    maildir = mailbox.Maildir(smtp_server.mailboxes_path / ALICE, create=False).get_folder("Sent")
    # Maildir keys carry no order; the server's names start with the arrival time.
    keys = sorted(maildir.keys())
    assert [maildir.get_bytes(key) for key in keys] == [STORED, second.replace(b"\r\n", b"\n")]
    first = maildir[keys[0]]
    assert first["Subject"] == "Greetings from a real client"
    assert first.get_payload(decode=True).decode() == "".join(line + "\n" for line in MESSAGE_LINES[9:])


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = TOOL_TIMEOUT) -> str:
    """Run a full-screen program in a pseudo-terminal; return what it drew once it has exited."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(args, stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        # Keep reading, or the program blocks once the terminal's buffer is full.
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    screen += os.read(controller, 65536)
                except OSError:  # EIO: the program closed the terminal
                    break
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"{args[0]} did not exit within {timeout} s; the screen showed:\n{screen.decode(errors='replace')}")
    finally:
        os.close(controller)
    assert process.returncode == 0, screen.decode(errors="replace")
    return screen.decode(errors="replace")


def test_mutt_reads_the_maildir(smtp_server: RunningServer, tmp_path: Path) -> None:
    """mutt opens the mailbox read-only in a pseudo-terminal and pipes the message out, as a teacher would."""
    mutt = require_tool("mutt")
    send_with_smtplib(smtp_server, MESSAGE)
    maildir = smtp_server.mailboxes_path / ALICE / ".Sent"
    before = sorted(path.relative_to(maildir) for path in maildir.rglob("*"))
    piped = tmp_path / "piped.eml"
    settings = (
        f"set folder={shlex.quote(str(tmp_path))}"  # else mutt asks whether to create ~/Mail
        " quit=yes move=no wait_key=no pipe_decode=no"
    )
    keys = f"<pipe-message>cat > {shlex.quote(str(piped))}<enter><quit>"
    run_in_terminal(
        [mutt, "-n", "-F", "/dev/null", "-R", "-f", str(maildir), "-e", settings, "-e", f'push "{keys}"'],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "TERM": "vt100"},
    )
    assert piped.read_bytes() == STORED
    assert sorted(path.relative_to(maildir) for path in maildir.rglob("*")) == before  # -R: nothing moved
    assert retrieve(smtp_server.host, smtp_server.port, ALICE) == [MESSAGE_LINES]


def test_mutt_reads_an_inbox(smtp_server: RunningServer, tmp_path: Path) -> None:
    """`mutt -f mailboxes/bob` shows bob's inbox: the message sent to bob@localhost, under its trace fields."""
    mutt = require_tool("mutt")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.login(ALICE, PASSWORD)
        client.sendmail(SENDER, ["bob@localhost"], MESSAGE)
    piped = tmp_path / "piped.eml"
    settings = f"set folder={shlex.quote(str(tmp_path))} quit=yes move=no wait_key=no pipe_decode=no"
    keys = f"<pipe-message>cat > {shlex.quote(str(piped))}<enter><quit>"
    run_in_terminal(
        [mutt, "-n", "-F", "/dev/null", "-R", "-f", str(smtp_server.mailboxes_path / "bob"), "-e", settings,
         "-e", f'push "{keys}"'],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "TERM": "vt100"},
    )  # fmt: skip
    assert piped.read_bytes() == smtp_server.inbox("bob")[0]
    assert piped.read_bytes().startswith(f"Return-Path: <{SENDER}>\nReceived: from ".encode())
    assert piped.read_bytes().endswith(b"\n" + STORED)
