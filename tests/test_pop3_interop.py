"""Real software reads the inbox: poplib, curl, mpop, fetchmail and mutt over POP3; Dovecot serves the
same Maildirs over IMAP.

Issue 11, section 5. Each program is Debian's (`.ci/run` installs it); a test skips when
one is missing, except in CI, where it fails. The commands are those of docs/clients.md,
with the test's ports, and the certificate fixture of conftest.py.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import poplib
import pwd
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import USERS, Certificate, RunningServer, ServerProcess, require_tool, wait_for

TOOL_TIMEOUT = 30  # seconds; a client that hangs fails the test instead of the run
MESSAGE_LINES = ["From: Alice <alice@mail.test>", "To: Bob <bob@localhost>", "Subject: for Bob", "", "Hello Bob,", ".",
                 "..two dots", "Grüße"]  # fmt: skip
MESSAGE = "".join(line + "\r\n" for line in MESSAGE_LINES).encode()
BOB = "bob"


def send_to_bob(server: RunningServer | ServerProcess, *messages: bytes, tls: ssl.SSLContext | None = None) -> None:
    """alice sends each message to bob@localhost over SMTP; with tls, over STARTTLS or the server's SMTPS port."""
    import smtplib

    if tls is not None and isinstance(server, RunningServer) and server.listener.implicit_tls:
        connection = smtplib.SMTP_SSL("localhost", server.port, timeout=10, context=tls)
    else:
        connection = smtplib.SMTP("localhost" if tls else "127.0.0.1", server.port, timeout=10)
        if tls is not None:
            connection.starttls(context=tls)
    with connection as client:
        client.login("alice", USERS["alice"])
        for message in messages:
            client.sendmail("alice@mail.test", ["bob@localhost"], message)


def inbox_copy_of(message: bytes, retrieved: bytes) -> bool:
    """True if retrieved is message as bob's inbox holds it: the trace fields, then message byte for byte."""
    return retrieved.startswith(b"Return-Path: <alice@mail.test>\r\nReceived: from ") and retrieved.endswith(
        b"\r\n" + message
    )


def run_tool(args: list[str]) -> str:
    """Run a client program; fail with its output unless it exits 0."""
    result = subprocess.run(args, capture_output=True, timeout=TOOL_TIMEOUT)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, f"{shlex.join(args)} exited {result.returncode}:\n{output}"
    return result.stdout.decode("utf-8", "replace")


@pytest.fixture
def tls_pop3(start_server: Callable[..., RunningServer], certificate: Certificate) -> RunningServer:
    """A server with STLS on its POP3 port, as `--tls-cert cert.pem --tls-key key.pem` starts it."""
    return start_server(pop3=True, tls_context=certificate.server_context())


# ------------------------------------------------------------------------- poplib


def test_poplib_lists_retrieves_and_deletes(pop3_server: RunningServer) -> None:
    send_to_bob(pop3_server, MESSAGE, b"Subject: second\r\n\r\nsecond\r\n")
    client = poplib.POP3(pop3_server.host, pop3_server.pop3_port, timeout=10)
    assert client.getwelcome() == b"+OK mail.test POP3 server ready"
    assert "UIDL" in client.capa()
    client.user(BOB)
    client.pass_(USERS[BOB])
    count, size = client.stat()
    assert count == 2
    _, listing, _ = client.list()
    assert sum(int(line.split()[1]) for line in listing) == size
    _, lines, octets = client.retr(1)
    retrieved = b"\r\n".join(lines) + b"\r\n"
    assert inbox_copy_of(MESSAGE, retrieved) and octets == len(retrieved)  # poplib counts as LIST does
    _, top, _ = client.top(2, 0)
    assert top[-2:] == [b"Subject: second", b""]
    client.dele(1)
    assert client.quit().startswith(b"+OK")
    assert [message.split(b"\n")[-2] for message in pop3_server.inbox(BOB)] == [b"second"]


def test_poplib_over_stls(tls_pop3: RunningServer, certificate: Certificate) -> None:
    send_to_bob(tls_pop3, MESSAGE)
    client = poplib.POP3("localhost", tls_pop3.pop3_port, timeout=10)
    client.stls(context=certificate.client_context())
    client.user(BOB)
    client.pass_(USERS[BOB])
    _, lines, _ = client.retr(1)
    assert inbox_copy_of(MESSAGE, b"\r\n".join(lines) + b"\r\n")
    client.quit()


def test_server_py_serves_pop3s(server_process: Callable[..., ServerProcess], certificate: Certificate) -> None:
    """--pop3s-port: POP3 with TLS from the first byte (RFC 8314), beside the STLS port."""
    process = server_process(
        "--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key), "--pop3s-port", "0"
    )
    wait_for(lambda: "POP3S (implicit TLS) serving on" in process.log)
    port = int(process.log.split("POP3S (implicit TLS) serving on 127.0.0.1:")[1].split()[0])
    send_to_bob(process, MESSAGE)
    client = poplib.POP3_SSL("localhost", port, context=certificate.client_context(), timeout=10)
    assert "STLS" not in client.capa()
    client.user(BOB)
    client.pass_(USERS[BOB])
    _, lines, _ = client.retr(1)
    assert inbox_copy_of(MESSAGE, b"\r\n".join(lines) + b"\r\n")
    client.quit()


# --------------------------------------------------------------------------- curl


def curl_pop3(url: str, *options: str) -> str:
    return run_tool([require_tool("curl"), "--silent", "--show-error", url, "--user", f"{BOB}:{USERS[BOB]}", *options])


@pytest.mark.parametrize("kind", ["plain", "stls"])
def test_curl_lists_retrieves_and_deletes(request: pytest.FixtureRequest, certificate: Certificate, kind: str) -> None:
    server: RunningServer = request.getfixturevalue("pop3_server" if kind == "plain" else "tls_pop3")
    send_to_bob(server, MESSAGE, b"Subject: second\r\n\r\nsecond\r\n")
    url = f"pop3://{'127.0.0.1' if kind == 'plain' else 'localhost'}:{server.pop3_port}"
    tls = [] if kind == "plain" else ["--ssl-reqd", "--cacert", str(certificate.cert)]  # curl then uses STLS
    sizes = [len(message.replace(b"\n", b"\r\n")) for message in server.inbox(BOB)]
    assert curl_pop3(url, *tls) == f"1 {sizes[0]}\r\n2 {sizes[1]}\r\n"
    retrieved = curl_pop3(f"{url}/1", *tls).encode()
    assert inbox_copy_of(MESSAGE.replace(b"\r\n..", b"\r\n."), retrieved.replace(b"\r\n..", b"\r\n."))
    curl_pop3(f"{url}/1", "--request", "DELE", "--list-only", *tls)
    assert curl_pop3(url, *tls) == f"1 {sizes[1]}\r\n"  # numbered afresh in the next session
    assert len(server.inbox(BOB)) == 1


# --------------------------------------------------------------------------- mpop


def mpoprc(path: Path, port: int, maildir: Path, tls: Certificate | None) -> Path:
    """The configuration docs/clients.md gives, with the test's port and Maildir."""
    lines = [
        "account classroom",
        "host localhost",
        f"port {port}",
        f"user {BOB}",
        f"password {USERS[BOB]}",
        "auth user",
        *(["tls on", "tls_starttls on", f"tls_trust_file {tls.cert}"] if tls else ["tls off"]),
        f"delivery maildir {maildir}",
        "keep off",
        f"uidls_file {path.parent / 'mpop-uidls'}",
        "account default : classroom",
    ]
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(0o600)  # mpop refuses a file holding a password that others may read
    return path


@pytest.mark.parametrize("kind", ["plain", "stls"])
def test_mpop_fetches_the_inbox_into_a_maildir(
    request: pytest.FixtureRequest, certificate: Certificate, tmp_path: Path, kind: str
) -> None:
    mpop = require_tool("mpop")
    server: RunningServer = request.getfixturevalue("pop3_server" if kind == "plain" else "tls_pop3")
    send_to_bob(server, MESSAGE, b"Subject: second\r\n\r\nsecond\r\n")
    fetched = tmp_path / "fetched"
    for part in ("tmp", "new", "cur"):
        (fetched / part).mkdir(parents=True)
    config = mpoprc(tmp_path / "mpoprc", server.pop3_port, fetched, certificate if kind == "stls" else None)
    output = run_tool([mpop, f"--file={config}"])
    assert "2 messages" in output or output == ""
    copies = sorted(path.read_bytes() for path in (fetched / "new").iterdir())
    assert len(copies) == 2
    # mpop puts a Received line of its own on top; the rest is the inbox copy, with LF ends.
    first = next(copy for copy in copies if b"for Bob" in copy)
    assert b"\nReturn-Path: <alice@mail.test>\nReceived: from " in first
    assert first.endswith(b"\n" + MESSAGE.replace(b"\r\n", b"\n"))
    assert server.inbox(BOB) == []  # keep off: deleted on the server, at QUIT


# ---------------------------------------------------- fetchmail and mutt (issue 21, item 8)


@pytest.fixture(params=["plain", "stls", "pop3s"])
def any_pop3(
    request: pytest.FixtureRequest, start_server: Callable[..., RunningServer], certificate: Certificate
) -> tuple[str, RunningServer]:
    """(kind, server): POP3 in clear text, with STLS required before a login, or POP3S (TLS from the first byte)."""
    kind = request.param
    if kind == "plain":
        return kind, start_server(pop3=True)
    tls = {"tls_context": certificate.server_context(), "require_tls": kind == "stls"}  # no login before STLS
    return kind, start_server(pop3=True, implicit_tls=kind == "pop3s", **tls)


def fetchmailrc(path: Path, kind: str, port: int, certificate: Certificate, fetched: Path) -> Path:
    """docs/clients.md's fetchmailrc for kind, with the test's port and certificate, delivering into fetched/."""
    tls = {
        "plain": "sslproto ''",  # Debian's fetchmail asks for TLS unless told not to
        "stls": f"sslproto 'tls1.2+' sslcertck sslcertfile {certificate.cert}",
        "pop3s": f"ssl sslproto 'tls1.2+' sslcertck sslcertfile {certificate.cert}",
    }[kind]
    path.write_text(
        f"poll localhost protocol pop3 port {port}\n"
        f"  user {BOB} password {USERS[BOB]}\n"
        f"  {tls}\n"
        "  keep\n"
        f"  mda \"sh -c 'cat > {fetched}/fetched-$$.eml'\"\n"
    )
    path.chmod(0o600)  # fetchmail refuses a file holding a password that others may read
    return path


def test_fetchmail_fetches_the_inbox(
    any_pop3: tuple[str, RunningServer], certificate: Certificate, tmp_path: Path
) -> None:
    fetchmail = require_tool("fetchmail")
    kind, server = any_pop3
    tls = None if kind == "plain" else certificate.client_context()
    send_to_bob(server, MESSAGE, b"Subject: second\r\n\r\nsecond\r\n", tls=tls)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    config = fetchmailrc(tmp_path / "fetchmailrc", kind, server.pop3_port, certificate, fetched)
    # HOME: fetchmail keeps the ids of the messages it has seen (keep) in ~/.fetchids.
    result = subprocess.run(
        [fetchmail, "-f", str(config), "--nosyslog"],
        capture_output=True,
        timeout=TOOL_TIMEOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, output
    assert "2 messages for bob at localhost" in output
    copies = sorted(path.read_bytes() for path in fetched.iterdir())
    # fetchmail writes the Return-Path and a Received line of its own on top; then come ours and the message.
    first = next(copy for copy in copies if b"for Bob" in copy)
    assert first.startswith(b"Return-Path: <alice@mail.test>\nReceived: from localhost [127.0.0.1]\n")
    assert b"\n\tby mail.test with ESMTP" in first
    assert first.endswith(b"\n" + MESSAGE.replace(b"\r\n", b"\n"))
    assert len(copies) == 2 and len(server.inbox(BOB)) == 2  # keep: still on the server


def test_mutt_reads_the_inbox_over_pop3(
    any_pop3: tuple[str, RunningServer], certificate: Certificate, tmp_path: Path
) -> None:
    """docs/clients.md's muttrc: Debian's mutt wants ssl_force_tls=no for a plain pop:// (it refuses otherwise)."""
    from test_interop import run_in_terminal

    mutt = require_tool("mutt")
    kind, server = any_pop3
    send_to_bob(server, MESSAGE, tls=None if kind == "plain" else certificate.client_context())
    tls = "ssl_force_tls=no" if kind == "plain" else f"ssl_force_tls=yes ssl_ca_certificates_file={certificate.cert}"
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"set pop_user={BOB} pop_pass={USERS[BOB]}\nset {tls}\n")
    url = f"{'pops' if kind == 'pop3s' else 'pop'}://localhost:{server.pop3_port}/"
    piped = tmp_path / "piped.eml"
    settings = f"set folder={shlex.quote(str(tmp_path))} quit=yes move=no wait_key=no pipe_decode=no"
    keys = f"<pipe-message>cat > {shlex.quote(str(piped))}<enter><quit>"
    run_in_terminal(
        [mutt, "-n", "-F", str(muttrc), "-f", url, "-e", settings, "-e", f'push "{keys}"'],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "TERM": "vt100"},
    )
    assert piped.read_bytes() == server.inbox(BOB)[0]  # with its trace fields, LF ends as mutt writes them
    assert piped.read_bytes().endswith(b"\n" + MESSAGE.replace(b"\r\n", b"\n"))


# ------------------------------------------------------------------------- Dovecot


def dovecot_config(*, port: int, base_dir: Path, mailboxes: Path, users: Path, mail_user: str, mail_group: str) -> str:
    """Dovecot 2.3 serving our mailboxes over IMAP, with users.txt as its passwd-file: docs/clients.md's lines."""
    if os.geteuid() == 0:  # Dovecot's own users run the login processes; mail is read as mail_user
        internal = "default_internal_user = dovecot\ndefault_internal_group = dovecot\ndefault_login_user = dovenull\n"
    else:  # an ordinary user can only run every process as itself
        internal = f"default_internal_user = {mail_user}\ndefault_internal_group = {mail_group}\n"
        internal += f"default_login_user = {mail_user}\n"
    return f"""\
base_dir = {base_dir}/run
state_dir = {base_dir}/state
log_path = {base_dir}/dovecot.log
{internal}protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{mailboxes}/%u
passdb {{
  driver = passwd-file
  args = scheme=BLF-CRYPT username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={mailboxes}/%u
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def can_connect(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def running_dovecot(mailboxes: Path, users: Path) -> Iterator[int]:
    """Dovecot on a free loopback port, serving mailboxes; yield the IMAP port, stop it afterwards."""
    dovecot = require_tool("dovecot")
    if os.geteuid() == 0:  # Dovecot reads no mail as root: hand the test's mailboxes to nobody
        mail_user, mail_group = "nobody", "nogroup"
        uid, gid = pwd.getpwnam(mail_user).pw_uid, pwd.getpwnam(mail_user).pw_gid
        for path in [mailboxes, *mailboxes.rglob("*")]:
            os.chown(path, uid, gid)
    else:
        mail_user = pwd.getpwuid(os.getuid()).pw_name
        mail_group = mail_user
    base_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))  # short: Dovecot's sockets live here
    port = free_port()
    config = base_dir / "dovecot.conf"
    config.write_text(
        dovecot_config(
            port=port, base_dir=base_dir, mailboxes=mailboxes, users=users, mail_user=mail_user, mail_group=mail_group
        )
    )
    process = subprocess.Popen(
        [dovecot, "-F", "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: can_connect(port) or process.poll() is not None, timeout=20)
        log = base_dir / "dovecot.log"
        assert process.poll() is None, f"dovecot exited: {process.stdout.read() if process.stdout else ''}"
        yield port
        assert "Error" not in (log.read_text() if log.exists() else ""), log.read_text()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.fixture
def shared_directory(shared_users_file: Path) -> Iterator[Path]:
    """A folder Dovecot's own users may enter (pytest's temporary folders are private to us), with users.txt."""
    directory = Path(tempfile.mkdtemp(prefix="mail-for-dovecot-"))
    directory.chmod(0o755)
    shutil.copy(shared_users_file, directory / "users.txt")
    (directory / "users.txt").chmod(0o644)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_dovecot_serves_the_same_mailboxes_over_imap(
    start_server: Callable[..., RunningServer], shared_directory: Path
) -> None:
    """The documented path for a school that outgrows the server: Dovecot reads our Maildir++ and users.txt."""
    server = start_server(users_path=shared_directory / "users.txt", mailboxes_path=shared_directory / "mailboxes")
    send_to_bob(server, MESSAGE)
    with running_dovecot(server.mailboxes_path, server.users_path) as port:
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            imap.login(BOB, USERS[BOB])  # checked against users.txt's bcrypt hash
            _, folders = imap.list()
            assert sorted(folder.decode().rsplit(" ", 1)[1] for folder in folders) == ["INBOX", "Sent"]
            assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])
            _, fetched = imap.fetch("1", "(RFC822)")
            assert inbox_copy_of(MESSAGE, fetched[0][1])
            imap.logout()
            imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
            imap.login("alice", USERS["alice"])
            assert imap.select("Sent", readonly=True) == ("OK", [b"1"])
            _, fetched = imap.fetch("1", "(RFC822)")
            assert fetched[0][1] == MESSAGE  # the Sent copy, byte for byte
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()
