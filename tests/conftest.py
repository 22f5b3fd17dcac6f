"""Fixtures: a real server on 127.0.0.1 port 0, with its own users file and mailboxes.

    def test_noop(session):
        session.expect('''
            C: NOOP
            S: 250 OK
        ''')

In a transcript, `C:` lines are sent (CRLF added) and `S:` lines must match the
replies line by line; `*` in an `S:` line matches any text. POP3 transcripts work the
same way on a `pop3` session (`pop3_server`, `pop3_connect`, `pop3`).

client.py is run as a student runs it: `run_client` pipes a script in, `client_process` keeps
the pipe open for what happens mid-session, and `terminal` types into a pseudo-terminal.
"""

from __future__ import annotations

import base64
import codecs
import dataclasses
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

import bcrypt
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailserver.auth_cache import AuthCache  # noqa: E402  (needs the path above)
from mailserver.config import ServerConfig  # noqa: E402
from mailserver.events import EventBus  # noqa: E402
from mailserver.listener import Listener, MailServer, server_tls_context  # noqa: E402
from mailserver.pop3 import POP3Handler  # noqa: E402
from mailserver.smtp import SMTPHandler  # noqa: E402
from mailserver.storage import MailboxStore  # noqa: E402
from mailserver.users import UserStore  # noqa: E402
from mailserver.webview import WebView, start_web_view  # noqa: E402

USERS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password"}
TEST_ROUNDS = 4  # bcrypt's minimum cost: tests log in often, and cost 12 takes 0.2 s a check


def write_users_file(path: Path, users: dict[str, str], rounds: int = TEST_ROUNDS) -> Path:
    """Write a users.txt with bcrypt hashes of users' passwords."""
    lines = [f"{name}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds)).decode()}" for name, pw in users.items()]
    path.write_text("# test accounts\n" + "\n".join(lines) + "\n")
    return path


@dataclasses.dataclass
class RunningServer:
    """A server running in this process, in a thread of its own."""

    server: MailServer
    listener: Listener
    users: dict[str, str]
    users_path: Path
    mailboxes_path: Path
    pop3_listener: Listener | None = None

    @property
    def host(self) -> str:
        return self.listener.server_address[0]

    @property
    def port(self) -> int:
        return self.listener.server_address[1]

    @property
    def pop3_port(self) -> int:
        assert self.pop3_listener is not None, "start_server(pop3=True) serves POP3"
        return self.pop3_listener.server_address[1]

    @property
    def config(self) -> ServerConfig:
        return self.server.config

    def stored(self, user: str) -> list[bytes]:
        """The messages user sent (the Sent folder), oldest first, as on disk (LF line ends)."""
        contents = []
        for open_message in self.server.mailboxes.sent_messages(user):
            with open_message() as message:
                contents.append(message.read())
        return contents

    def inbox(self, user: str) -> list[bytes]:
        """The messages in user's inbox, oldest first, as on disk (LF line ends)."""
        return inbox_of(self.mailboxes_path / user)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.close()


@pytest.fixture(scope="session")
def shared_users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Hashing once per test run keeps the suite fast.
    return write_users_file(tmp_path_factory.mktemp("users") / "users.txt", USERS)


@pytest.fixture
def start_server(tmp_path: Path, shared_users_file: Path) -> Iterator[Callable[..., RunningServer]]:
    """A factory: start_server(**ServerConfig fields) starts one more server; all stop after the test.

    implicit_tls=True makes its port an SMTPS one (TLS from the first byte); events, the web view's bus.
    """
    running: list[RunningServer] = []

    def start(
        *,
        users_path: Path | None = None,
        mailboxes_path: Path | None = None,
        implicit_tls: bool = False,
        pop3: bool = False,
        events: EventBus | None = None,
        **config: object,
    ) -> RunningServer:
        config.setdefault("hostname", "mail.test")
        mailboxes = mailboxes_path or tmp_path / f"mailboxes{len(running) or ''}"
        settings = ServerConfig(**config)  # type: ignore[arg-type]
        users = UserStore(users_path or shared_users_file, AuthCache(settings.auth_cache_ttl))  # as server.start()
        server = MailServer(settings, users, MailboxStore(mailboxes), events=events)
        listener = server.listen(("127.0.0.1", 0), SMTPHandler, implicit_tls=implicit_tls)
        # stop() waits for serve_forever to look at its shutdown flag, once a poll_interval: every test pays it.
        server.serve_in_background(listener, poll_interval=0.01)
        pop3_listener = None
        if pop3:  # on the same MailServer: caps, throttle and mailboxes shared with SMTP
            pop3_listener = server.listen(("127.0.0.1", 0), POP3Handler, implicit_tls=implicit_tls)
            server.serve_in_background(pop3_listener, poll_interval=0.01)
        instance = RunningServer(
            server, listener, dict(USERS), users_path or shared_users_file, mailboxes, pop3_listener
        )
        running.append(instance)
        return instance

    yield start
    for instance in running:
        instance.stop()


@dataclasses.dataclass
class WebRun:
    """A server with the web view (--web), both in this process."""

    mail: RunningServer
    view: WebView
    events: EventBus

    @property
    def url(self) -> str:
        return self.view.url

    def origin(self) -> str:
        return self.view.url.split("?", 1)[0].rstrip("/")


@pytest.fixture
def web_server(start_server: Callable[..., RunningServer]) -> Iterator[Callable[..., WebRun]]:
    """A factory: web_server(host=..., bus=EventBus options, **ServerConfig fields) with SMTP, POP3 and the view."""
    views: list[WebView] = []

    def start(host: str = "127.0.0.1", bus: dict[str, int] | None = None, **config: object) -> WebRun:
        events = EventBus(**(bus or {}))
        mail = start_server(pop3=True, events=events, **config)
        view = start_web_view(mail.server, events, host, 0, ROOT / "client.py")
        views.append(view)
        return WebRun(mail, view, events)

    yield start
    for view in views:
        view.close()


@pytest.fixture
def smtp_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    """A server with the default settings and the USERS accounts."""
    return start_server()


def store_message(store: MailboxStore, user: str, message: bytes) -> str:
    """Store message (LF line ends) in the Sent folder of user the way DATA does; return its key."""
    delivery = store.start_delivery(user)
    delivery.write(message)
    return delivery.commit()


def deliver(store: MailboxStore, recipient: str, message: bytes, sender: str = "carol") -> None:
    """Deliver message (LF line ends) into recipient's inbox the way DATA does, without trace fields."""
    delivery = store.start_delivery(sender, [recipient])
    delivery.write(message)
    delivery.commit()


def inbox_of(maildir: Path) -> list[bytes]:
    """The messages of a Maildir's new/ and cur/, in name order (arrival order for the server's names)."""
    paths = [*maildir.glob("new/*"), *maildir.glob("cur/*")]
    return [path.read_bytes() for path in sorted(paths, key=lambda path: path.name)]


def plain_response(user: bytes | str, password: bytes | str, authzid: bytes | str = "") -> str:
    """The AUTH PLAIN response (RFC 4616): authzid NUL authcid NUL password, in base64."""
    parts = [part.encode() if isinstance(part, str) else part for part in (authzid, user, password)]
    return base64.b64encode(b"\0".join(parts)).decode()


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2: double a leading dot on every line (message ends in CRLF)."""
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


@dataclasses.dataclass(frozen=True)
class EhloReply:
    """A 250 reply to EHLO: its first line, and the extensions by keyword (as sent) with their parameters.

    `"STARTTLS" in reply` asks whether an extension is advertised, `reply["SIZE"]` gives its
    parameters ("" for none): the checks hold whatever other extensions come and in whatever order.
    """

    greeting: str  # "mail.test Hello client.test"
    extensions: dict[str, str]

    def __contains__(self, keyword: object) -> bool:
        return keyword in self.extensions

    def __getitem__(self, keyword: str) -> str:
        return self.extensions[keyword]


class RawSession:
    """A raw socket to the server, for transcripts and for input no real client would send."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source_address: str | None = None) -> None:
        """source_address: the local address to connect from (say 127.0.0.2, to look like another client)."""
        source = None if source_address is None else (source_address, 0)
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=source)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def command(self, line: str) -> tuple[int, list[str]]:
        self.send(line + "\r\n")
        return self.read_reply()

    def read_line(self) -> str:
        """One reply line without CRLF; raise ConnectionError if the server closed instead."""
        raw = self.file.readline(100_000)
        if not raw:
            raise ConnectionError("the server closed the connection")
        assert raw.endswith(b"\r\n"), f"reply line not ended by CRLF: {raw!r}"
        return raw[:-2].decode("utf-8")

    def read_reply(self) -> tuple[int, list[str]]:
        """Read one (possibly multi-line) reply: (code, [text of each line])."""
        lines = []
        while True:
            line = self.read_line()
            assert re.fullmatch(r"\d{3}[ -].*", line), f"malformed reply line: {line!r}"
            lines.append(line[4:])
            if line[3] == " ":
                return int(line[:3]), lines

    def ehlo(self, domain: str = "client.test", verb: str = "EHLO") -> EhloReply:
        """Send EHLO (verb: its spelling); it must get 250. Return the reply as an EhloReply."""
        code, lines = self.command(f"{verb} {domain}")
        assert code == 250, f"{verb}: {code} {lines}"
        extensions = {}
        for line in lines[1:]:
            keyword, _, parameters = line.partition(" ")
            extensions[keyword] = parameters
        return EhloReply(lines[0], extensions)

    def login(self, user: str = "alice", password: str | None = None) -> None:
        password = USERS[user] if password is None else password
        assert self.command("EHLO client.test")[0] == 250
        code, text = self.command(f"AUTH PLAIN {plain_response(user, password)}")
        assert code == 235, text

    def start_data(
        self,
        sender: str = "alice@example.org",
        recipients: Iterable[str] = ("bob@example.org",),
        *,
        mail_parameters: str = "",
        pipelined: bool = False,
    ) -> None:
        """MAIL, RCPT and DATA, up to the 354: what follows is the message.

        Each MAIL and RCPT must get 250 and DATA 354; sender "" is the null reverse-path <>.
        pipelined sends the commands in one packet (RFC 2920) before reading their replies.
        """
        code, text = self._mail_rcpt_data(sender, recipients, mail_parameters, pipelined)
        assert code == 354, f"DATA: {code} {text}"

    def send_message(
        self,
        data: bytes,
        sender: str = "alice@example.org",
        recipients: Iterable[str] = ("bob@example.org",),
        *,
        mail_parameters: str = "",
        data_may_be_refused: bool = False,
    ) -> tuple[int, list[str]]:
        """MAIL, RCPT, DATA, then data as it goes on the wire (dot-stuffed, CRLF ends) and the final dot.

        Return the reply to the message. MAIL and RCPT must get 250, and DATA 354 unless
        data_may_be_refused: then a DATA refused at once returns DATA's own reply.
        """
        code, text = self._mail_rcpt_data(sender, recipients, mail_parameters, pipelined=False)
        if code != 354:
            assert data_may_be_refused, f"DATA: {code} {text}"
            return code, text
        self.send(data + b".\r\n")
        return self.read_reply()

    def _mail_rcpt_data(
        self, sender: str, recipients: Iterable[str], mail_parameters: str, pipelined: bool
    ) -> tuple[int, list[str]]:
        """MAIL and RCPT, each of which must get 250, then DATA; return DATA's reply, whatever it is."""
        envelope = [f"MAIL FROM:<{sender}> {mail_parameters}".rstrip()]
        envelope += [f"RCPT TO:<{recipient}>" for recipient in recipients]
        if pipelined:
            self.send("".join(f"{line}\r\n" for line in [*envelope, "DATA"]))
            replies = [self.read_reply() for _ in envelope]
            assert [code for code, _ in replies] == [250] * len(envelope), list(zip(envelope, replies, strict=True))
            return self.read_reply()
        for line in envelope:
            code, text = self.command(line)
            assert code == 250, f"{line}: {code} {text}"
        return self.command("DATA")

    def retr(self) -> list[bytes]:
        """RETR; return each message as DATA sent it (CRLF ends), with the dot-stuffing undone."""
        code, lines = self.command("RETR")
        assert code == 250 and len(lines) == 1, lines
        messages = []
        for _ in range(int(lines[0].split()[0])):
            block = []
            while (line := self.file.readline(2_000_000)) != b".\r\n":
                assert line.endswith(b"\r\n"), f"RETR block cut short: {line[-80:]!r}"
                block.append(line[1:] if line.startswith(b".") else line)  # RFC 5321 4.5.2
            messages.append(b"".join(block))
        return messages

    def expect(self, transcript: str) -> None:
        """Send each C: line and check that the S: lines come back, in order."""
        for raw in transcript.strip().splitlines():
            line = raw.strip()
            direction, _, text = line.partition(":")
            text = text[1:] if text.startswith(" ") else text
            if direction == "C":
                self.send(text + "\r\n")
            elif direction == "S":
                got = self.read_line()
                pattern = ".*".join(map(re.escape, text.split("*")))
                assert re.fullmatch(pattern, got), f"expected {text!r}, got {got!r}"
            else:
                raise ValueError(f"transcript line must start with C: or S: {raw!r}")

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            self.file.read()  # returns at end of input only
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def connect(smtp_server: RunningServer) -> Iterator[Callable[..., RawSession]]:
    """connect(server=smtp_server) opens a RawSession and reads the greeting; all close after the test."""
    sessions: list[RawSession] = []

    def open_session(server: RunningServer = smtp_server, greeting: bool = True) -> RawSession:
        session = RawSession(server.host, server.port)
        sessions.append(session)
        if greeting:
            code, _ = session.read_reply()
            assert code == 220
        return session

    yield open_session
    for session in sessions:
        session.close()


@pytest.fixture
def session(connect: Callable[..., RawSession]) -> RawSession:
    """A connected RawSession to smtp_server, greeting already read."""
    return connect()


@pytest.fixture
def logged_in(connect: Callable[..., RawSession]) -> RawSession:
    """A RawSession after EHLO and a successful AUTH as alice."""
    session = connect()
    session.login()
    return session


class POP3Session(RawSession):
    """A raw socket to the POP3 port; expect() runs transcripts as for SMTP."""

    def status(self, line: str) -> str:
        """Send one command; return the status line (`+OK ...` or `-ERR ...`)."""
        self.send(line + "\r\n")
        return self.read_line()

    def block(self, line: str) -> tuple[str, list[bytes]]:
        """Send a command answered by a multi-line block; return its status line and its lines, unstuffed.

        The lines keep their CRLF; after an -ERR there is no block.
        """
        status = self.status(line)
        lines: list[bytes] = []
        if status.startswith("+OK"):
            while (raw := self.file.readline(2_000_000)) != b".\r\n":
                assert raw.endswith(b"\r\n"), f"block cut short: {raw[-80:]!r}"
                lines.append(raw[1:] if raw.startswith(b".") else raw)  # RFC 1939 3: byte-stuffing
        return status, lines

    def retr(self, number: int = 1) -> bytes:  # type: ignore[override]
        """RETR number; return the message as sent (CRLF ends), stuffing undone."""
        status, lines = self.block(f"RETR {number}")
        assert status.startswith("+OK"), status
        return b"".join(lines)

    def login(self, user: str = "alice", password: str | None = None) -> None:
        password = USERS[user] if password is None else password
        assert self.status(f"USER {user}").startswith("+OK")
        status = self.status(f"PASS {password}")
        assert status.startswith("+OK"), status


@pytest.fixture
def pop3_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    """A server with SMTP and POP3 on port 0, the default settings and the USERS accounts."""
    return start_server(pop3=True)


@pytest.fixture
def pop3_connect(pop3_server: RunningServer) -> Iterator[Callable[..., POP3Session]]:
    """pop3_connect(server=pop3_server) opens a POP3Session and reads the +OK greeting; all close after the test."""
    sessions: list[POP3Session] = []

    def open_session(server: RunningServer = pop3_server, greeting: bool = True) -> POP3Session:
        session = POP3Session(server.host, server.pop3_port)
        sessions.append(session)
        if greeting:
            assert session.read_line().startswith("+OK")
        return session

    yield open_session
    for session in sessions:
        session.close()


@pytest.fixture
def pop3(pop3_connect: Callable[..., POP3Session]) -> POP3Session:
    """A POP3 session to pop3_server, greeting already read."""
    return pop3_connect()


class ServerProcess:
    """`python server.py` as a real process; the log is collected from stderr.

    SMTP and POP3 both take free ports (never 1100, where a real server may run).
    """

    def __init__(self, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--host", "127.0.0.1", "--port", "0", "--pop3-port", "0", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.log_lines: list[str] = []
        self._serving = threading.Event()
        self._pop3_serving = threading.Event()
        self.port = 0
        self._pop3_port = 0
        threading.Thread(target=self._collect, daemon=True).start()
        if not self._serving.wait(15):
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log)

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log_lines.append(line)
            pop3 = re.search(r"POP3 serving on [\d.]+:(\d+)", line)
            match = re.search(r"serving on [\d.]+:(\d+)", line)
            if pop3:
                self._pop3_port = int(pop3[1])
                self._pop3_serving.set()
            elif match and not self.port:
                self.port = int(match[1])
                self._serving.set()
        self._serving.set()
        self._pop3_serving.set()

    @property
    def pop3_port(self) -> int:
        """The POP3 port from the log (logged just after the SMTP one)."""
        self._pop3_serving.wait(15)
        assert self._pop3_port, "no POP3 serving line in the log:\n" + self.log
        return self._pop3_port

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 10) -> int:
        return self.process.wait(timeout)

    def stop(self, grace: float = 10) -> int | None:
        """SIGTERM, and the exit status; fail the test if the server had to be killed after grace seconds
        (issue 18: a hang is a bug)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"the server did not stop within {grace:g} s of SIGTERM and was killed:\n" + self.log)
            finally:
                if self.process.stdout:
                    self.process.stdout.close()
        elif self.process.stdout:
            self.process.stdout.close()
        return self.process.returncode


@pytest.fixture
def server_process(tmp_path: Path, shared_users_file: Path) -> Iterator[Callable[..., ServerProcess]]:
    """A factory: server_process(*extra_args) runs server.py with the test users and tmp mailboxes."""
    started: list[ServerProcess] = []

    def start(*args: str, users: Path | None = None, mailboxes: Path | None = None) -> ServerProcess:
        process = ServerProcess(
            "--users",
            str(users or shared_users_file),
            "--mailboxes",
            str(mailboxes or tmp_path / "mailboxes"),
            "--hostname",
            "mail.test",
            *args,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Wait until condition() is true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


SYSTEM_PROGRAMS = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])


def require_tool(name: str) -> str:
    """Return the path of a program; skip if it is missing, but fail in CI, which must install it.

    Daemons such as dovecot live in sbin, which a user's PATH (and the Quick start's) may leave out.
    """
    path = shutil.which(name) or shutil.which(name, path=SYSTEM_PROGRAMS)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A self-signed certificate (PEM) and its key, valid for localhost and 127.0.0.1."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """The context server.py builds from --tls-cert and --tls-key."""
        return server_tls_context(str(self.cert), str(self.key))

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate only, and checks the host name."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(directory: Path, names: str = "DNS:localhost,IP:127.0.0.1") -> Certificate:
    """A self-signed certificate for names (subjectAltName syntax), made with the docs' `openssl req` recipe
    (valid one day, not a year)."""
    openssl = require_tool("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    common_name = names.split(",")[0].partition(":")[2]
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={common_name}",
         "-addext", f"subjectAltName={names}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return Certificate(cert, key)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """One certificate per test run, for localhost and 127.0.0.1."""
    return make_certificate(tmp_path_factory.mktemp("certificate"))


def read_retr(session: RawSession) -> list[list[str]]:
    """Send RETR on a logged-in session; return each message as its lines of text."""
    return [message.decode("utf-8").split("\r\n")[:-1] for message in session.retr()]


def retrieve(host: str, port: int, user: str = "alice") -> list[list[str]]:
    """Log in as user over a plain socket and RETR: every message user sent, as lines."""
    session = RawSession(host, port)
    try:
        assert session.read_reply()[0] == 220
        session.login(user)
        return read_retr(session)
    finally:
        session.close()


# --- client.py, run as a student runs it: piped, kept open, or at a terminal ------------

CLIENT = ROOT / "client.py"
TIMEOUT = 15  # seconds any one client process may take before the test fails
# UTF-8 whatever the machine's locale, so the tests can compare text.
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_client(port: int, script: str, *args: str, timeout: float = TIMEOUT) -> Result:
    """Run client.py with script as its piped stdin; return how it ended (fail after timeout seconds)."""
    completed = subprocess.run(
        [sys.executable, str(CLIENT), "--port", str(port), *args],
        input=script,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=ENV,
        timeout=timeout,
        # No controlling terminal: getpass, if wrongly used on a pipe, would warn on stderr.
        start_new_session=True,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


class ClientProcess:
    """client.py with a pipe we keep writing to, for what happens mid-session."""

    def __init__(self, port: int, *args: str, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CLIENT), "--port", str(port), *args],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=ENV,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, chunks), daemon=True)
            for stream, chunks in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: TextIO, chunks: list[str]) -> None:
        while chunk := stream.read(1):  # one at a time: prompts end without a newline
            chunks.append(chunk)

    def output(self) -> str:
        return "".join(self.stdout)

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def finish(self) -> Result:
        """Close stdin and wait for the end (the fixture kills a client that hangs)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(TIMEOUT)
        for reader in self._readers:
            reader.join(TIMEOUT)
        return Result(self.process.returncode, self.output(), "".join(self.stderr))


@pytest.fixture
def client_process() -> Iterator[Callable[..., ClientProcess]]:
    started: list[ClientProcess] = []

    def start(port: int, *args: str, cwd: Path | None = None) -> ClientProcess:
        started.append(ClientProcess(port, *args, cwd=cwd))
        return started[-1]

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


class Terminal:
    """client.py in a pseudo-terminal, typed into as a person does."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = os.forkpty()
        if self.pid == 0:  # the child: become the client at once
            try:
                os.execve(sys.executable, [sys.executable, str(CLIENT), *args], env or ENV)
            finally:
                os._exit(127)
        self.output = ""
        self._matched = 0  # where the next expect() starts looking
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.returncode: int | None = None

    def _read(self, deadline: float, *, required: bool = True) -> bool:
        """Read what is there; return False at the end of output (or, unless required, at the deadline)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            if not required:
                return False
            pytest.fail(f"no output in time; so far:\n{self.output}")
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the client has exited and closed the terminal
            chunk = b""
        self.output += self._decoder.decode(chunk)
        return bool(chunk)

    def expect(self, text: str) -> None:
        """Wait for text after the previous match, as pexpect does."""
        deadline = time.monotonic() + TIMEOUT
        while (found := self.output.find(text, self._matched)) < 0:
            if not self._read(deadline):
                pytest.fail(f"{text!r} never came; output:\n{self.output}")
        self._matched = found + len(text)

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def ctrl_c(self, then: str, tries: int = 3) -> None:
        """Type Ctrl-C until then shows, at most tries times.

        CPython's readline notices a signal only while it waits in select(): a Ctrl-C that
        lands between a key's echo and that wait is taken at the next key, as at a real
        terminal; a second Ctrl-C is what a person would type.
        """
        for _ in range(tries):
            self.type("\x03")
            deadline = time.monotonic() + 2
            while (found := self.output.find(then, self._matched)) < 0:
                if not self._read(deadline, required=False):
                    break
            else:
                self._matched = found + len(then)
                return
        pytest.fail(f"{then!r} never came after Ctrl-C; output:\n{self.output}")

    def wait(self) -> int:
        """Read to the end of output, then return the exit status."""
        deadline = time.monotonic() + TIMEOUT
        while self._read(deadline):
            pass
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def close(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(*args: str, env: dict[str, str] | None = None) -> Terminal:
        opened.append(Terminal(*args, env=env))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound by us but not listening: connecting to it is refused, and no one else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
