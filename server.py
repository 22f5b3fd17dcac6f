"""A small, real SMTP server for the classroom: login, durable Maildir storage, RETR and DELE.

It implements the "minimum implementation of SMTP" of the seed document (RFC 821's
HELO, MAIL, RCPT, DATA, HELP, NOOP, QUIT), the extensions real clients expect
(EHLO, AUTH PLAIN/LOGIN, SIZE, 8BITMIME, PIPELINING, STARTTLS), and two extra
commands: RETR sends back every message the logged-in user sent, DELE deletes them.

    S: 220 localhost Service ready
    C: EHLO laptop
    S: 250-localhost Hello laptop
    S: 250-AUTH PLAIN LOGIN
    S: 250-SIZE 10485760
    S: 250-8BITMIME
    S: 250-PIPELINING
    S: 250 HELP
    C: AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk
    S: 235 Authentication successful
    C: MAIL FROM:<alice@localhost>
    S: 250 OK
    C: RCPT TO:<bob@example.org>
    S: 250 OK
    C: DATA
    S: 354 Start mail input; end with <CRLF>.<CRLF>
    C: Subject: hi
    C:
    C: hello
    C: .
    S: 250 OK: stored as 1764366000.M000001P42Q000000001.laptop
    C: RETR
    S: 250 1 message follows
    S: Subject: hi
    S:
    S: hello
    S: .
    C: QUIT
    S: 221 localhost Service closing transmission channel

How to read this file: `UserStore` owns users.txt, `MailboxStore` owns the
mailboxes folder, `SMTPHandler` speaks the protocol (one `smtp_<VERB>` method per
command; the docstring of each is its HELP text), `SMTPServer` accepts
connections and enforces the limits, and `main()` parses the command line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import errno
import functools
import getpass
import inspect
import io
import itertools
import logging
import mailbox
import os
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import bcrypt

log = logging.getLogger("smtp")

# Limits, with the reasons behind their numbers.
MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
MAX_AUTH_LINE = 12288  # RFC 4954 4: an AUTH response line may be this long
MAX_TEXT_LINE = 1000  # RFC 5321 4.5.3.1.6, CRLF included, after dot-unstuffing
MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: the minimum a server must accept
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, angle brackets included
MAX_ERRORS = 10  # 5xx replies in one session before we hang up, like Postfix's hard error limit
BCRYPT_MAX_PASSWORD = 72  # bcrypt ignores (bcrypt 5 refuses) longer passwords
# A leading "." that the sender doubled (RFC 5321 4.5.2): on a line with more after it.
LEADING_DOT = re.compile(rb"^\.(?!\r?\n)", re.MULTILINE)
TRACE_MESSAGE_LINES = 20  # --verbose logs this much of a message: a classroom example, not a 10 MB file

USERNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")  # names folders: no "/", no leading "."
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")

# RFC 5321 4.1.2: Mailbox = Local-part "@" ( Domain / address-literal ).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = rf"(?:{_ATOM}(?:\.{_ATOM})*|\"(?:[\x20-\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*\")"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[\x21-\x5a\x5e-\x7e]+\])"
POSTMASTER = "postmaster"  # RFC 5321 4.5.1: must be accepted without a domain
# RFC 5321 4.1.2: "<" [ Mailbox / "postmaster" ] ">" [ SP parameters ]; one pattern, so a quoted ">" is no end.
PATH = re.compile(
    rf"<(?P<address>(?P<local>{_LOCAL_PART})@(?P<domain>{_DOMAIN})|(?i:{POSTMASTER})|)>(?P<parameters>(?: .*)?)"
)


class Reply(NamedTuple):
    """One SMTP reply, for codes that code branches on."""

    code: int
    text: str


OK = Reply(250, "OK")
NEED_AUTH = Reply(530, "Authentication required")
BAD_SEQUENCE_MAIL = Reply(503, "Error: need MAIL command")


# --------------------------------------------------------------------------- users


def hash_password(password: str, rounds: int = 12) -> str:
    """Return the bcrypt hash of password, as stored in users.txt."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


class UsersFileError(ValueError):
    """users.txt cannot be read or has a malformed line; the message names file and line."""


def parse_users(path: Path) -> dict[str, bytes]:
    """Return {name: bcrypt hash} from a users file; raise UsersFileError naming the bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsersFileError(f"{path}: cannot read users file: {error}") from None
    table: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, hashed = line.partition(":")
        if not colon:
            raise UsersFileError(f"{path}:{number}: expected name:bcrypt-hash")
        if not USERNAME.fullmatch(name):
            raise UsersFileError(f"{path}:{number}: bad username {name!r}")
        if not BCRYPT_HASH.fullmatch(hashed):
            raise UsersFileError(f"{path}:{number}: not a bcrypt hash for {name!r}")
        table[name] = hashed.encode()
    return table


class UserStore:
    """The accounts of users.txt (`name:bcrypt-hash` per line), reloaded when the file changes."""

    reload_interval = 1.0  # seconds between stat() calls: edits show up within about a second

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._table = parse_users(self.path)
        self._stamp = self._file_stamp()
        self._next_stat = time.monotonic() + self.reload_interval
        self._dummy_hash = self._make_dummy_hash()

    def __contains__(self, name: object) -> bool:
        return name in self._current()

    def __len__(self) -> int:
        return len(self._current())

    def check(self, name: str, password: bytes) -> bool:
        """Return True if name exists and password is its password.

        An unknown name costs the same bcrypt work as a wrong password, so timing
        does not tell which names exist.
        """
        hashed = self._current().get(name)
        if hashed is None or len(password) > BCRYPT_MAX_PASSWORD:
            bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], self._dummy_hash)
            return False
        return bcrypt.checkpw(password, hashed)

    def _current(self) -> dict[str, bytes]:
        now = time.monotonic()
        if now >= self._next_stat:
            with self._lock:
                if now >= self._next_stat:
                    self._next_stat = now + self.reload_interval
                    self._reload_if_changed()
        return self._table

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._table = parse_users(self.path)
        except UsersFileError as error:
            log.error("%s; keeping the previous %d accounts", error, len(self._table))
            return
        self._dummy_hash = self._make_dummy_hash()
        log.info("reloaded %s: %d accounts", self.path, len(self._table))

    def _make_dummy_hash(self) -> bytes:
        """A hash with the accounts' cost, checked against when the name is unknown."""
        costs = [int(hashed[4:6]) for hashed in self._table.values()]
        rounds = max(costs, default=12)
        return bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds))


def _atomic_write_text(path: Path, text: str) -> None:
    """Replace path's content so that a reader sees the old or the new file, never half."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def rewrite_users_file(path: Path, name: str, new_hash: str | None) -> None:
    """Set the hash of name (adding the line if needed), or remove name if new_hash is None.

    Comments and other lines are kept as they are.
    """
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if line.strip().partition(":")[0] != name]
    if new_hash is not None:
        kept.append(f"{name}:{new_hash}")
    _atomic_write_text(path, "".join(line + "\n" for line in kept))


# ------------------------------------------------------------------------ mailboxes


def _fsync_directory(path: Path) -> None:
    """Make a rename or unlink inside directory path survive a crash."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Delivery:
    """One message being written into a Maildir's tmp/; commit() makes it appear in new/."""

    def __init__(self, maildir: Path, name: str) -> None:
        self.temporary = maildir / "tmp" / name
        self.final = maildir / "new" / name
        self.name = name
        self.size = 0
        # O_EXCL: a name clash must fail loudly, never overwrite another delivery.
        descriptor = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = open(descriptor, "wb", buffering=256 * 1024)  # noqa: SIM115 (closed by commit/abort)

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """Make the message durable, then visible; return its key.

        Maildir's rule: a message appears in new/ only once it is whole, so a crash
        leaves it whole or absent. The fsyncs make "whole" survive a power cut.
        """
        renamed = False
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self.temporary, self.final)
            renamed = True
            _fsync_directory(self.final.parent)
        except BaseException:
            self.abort()
            if renamed:  # visible but maybe not durable: the client will be told 4xx and send again
                with contextlib.suppress(OSError):
                    os.unlink(self.final)
            raise
        return self.name

    def abort(self) -> None:
        """Throw the message away; nothing of it stays visible."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


class MailboxStore:
    """One Maildir per user under root, holding the messages that user sent.

    Only names that pass USERNAME become directories, so no client text reaches a path.
    """

    _sequence = itertools.count(1)  # next() is atomic under the GIL: unique names without a lock

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._hostname = socket.gethostname().replace("/", "_").replace(":", "_").replace(".", "_")
        self._user_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._user_locks_lock = threading.Lock()

    def start_delivery(self, user: str) -> Delivery:
        """Open a new message of user's for writing; raise OSError if the disk refuses."""
        return Delivery(self._maildir(user, create=True), self._unique_name())

    def deliver(self, user: str, message: bytes) -> str:
        """Store message (LF line ends) durably; return its key."""
        delivery = self.start_delivery(user)
        try:
            delivery.write(message)
        except BaseException:
            delivery.abort()
            raise
        return delivery.commit()

    @contextlib.contextmanager
    def messages(self, user: str) -> Iterator[list[Callable[[], BinaryIO]]]:
        """Yield user's messages, oldest first, as functions that open one for reading.

        While the block runs, DELE of the same user waits (deliveries go on), so the
        list stays true; an opener raises KeyError if a Maildir reader moved the message.
        """
        with self._lock_of(user):
            maildir = self._existing_maildir(user)
            # Our names start with a fixed-width timestamp, so name order is arrival order.
            keys = sorted(maildir.keys()) if maildir is not None else []
            yield [functools.partial(maildir.get_file, key) for key in keys]  # type: ignore[union-attr]

    def delete_all(self, user: str) -> int:
        """Delete user's messages; return how many this call deleted."""
        with self._lock_of(user):
            maildir = self._existing_maildir(user)
            if maildir is None:
                return 0
            deleted = 0
            for key in list(maildir.keys()):  # a snapshot: we remove as we go
                with contextlib.suppress(KeyError, FileNotFoundError):
                    maildir.remove(key)
                    deleted += 1
            if deleted:
                path = self._maildir(user, create=False)
                _fsync_directory(path / "new")
                _fsync_directory(path / "cur")
            return deleted

    def clean_temporary_files(self) -> int:
        """Remove what crashed deliveries left in tmp/ (never visible to RETR); return the count."""
        removed = 0
        for leftover in self.root.glob("*/tmp/*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        return removed

    def _maildir(self, user: str, *, create: bool) -> Path:
        if not USERNAME.fullmatch(user):
            raise ValueError(f"not a valid username: {user!r}")
        path = self.root / user
        if create and not (path / "cur").is_dir():
            # Idempotent, as the first messages of a user may arrive at once; cur/ comes
            # last, so where it exists the Maildir is whole.
            for folder in (path, path / "tmp", path / "new", path / "cur"):
                folder.mkdir(mode=0o700, exist_ok=True)
            _fsync_directory(path)
            _fsync_directory(self.root)
        return path

    def _existing_maildir(self, user: str) -> mailbox.Maildir | None:
        path = self._maildir(user, create=False)
        return mailbox.Maildir(path, factory=None, create=False) if (path / "cur").is_dir() else None

    def _lock_of(self, user: str) -> threading.Lock:
        with self._user_locks_lock:
            return self._user_locks[user]

    def _unique_name(self) -> str:
        """A Maildir name (time.unique.host) whose fixed-width start sorts by arrival."""
        now = time.time_ns()
        seconds, microseconds = divmod(now // 1000, 1_000_000)
        sequence = next(self._sequence)
        return f"{seconds:010d}.M{microseconds:06d}P{os.getpid()}Q{sequence:09d}.{self._hostname}"


# ------------------------------------------------------------------------- protocol


@dataclasses.dataclass
class Envelope:
    """One mail transaction: started by MAIL, dropped by RSET, HELO/EHLO and the end of DATA."""

    sender: str
    recipients: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Session:
    """What one connection has said so far; STARTTLS starts a fresh one."""

    greeting: str | None = None  # the HELO/EHLO argument
    user: str | None = None  # set by a successful AUTH
    tls: bool = False
    envelope: Envelope | None = None


class Credentials(NamedTuple):
    authorization_id: str
    user: str
    password: bytes


@dataclasses.dataclass
class ServerConfig:
    """Settings of one listener; the command line fills them in."""

    hostname: str = dataclasses.field(default_factory=socket.gethostname)
    max_message_size: int = 10 * 1024 * 1024
    max_connections: int = 100
    max_connections_per_ip: int = 50  # as Postfix's smtpd_client_connection_count_limit
    timeout: float = 300.0  # RFC 5321 4.5.3.2.7; also the ceiling for one command line
    data_timeout: float = 600.0  # ceiling for one whole DATA transfer (RFC 5321 4.5.3.2.6)
    max_login_failures: int = 5
    login_failure_window: float = 60.0
    verbose: bool = False
    tls_context: ssl.SSLContext | None = None
    require_tls: bool = False
    implicit_tls: bool = False  # SMTPS (RFC 8314): TLS from the first byte


class _Goodbye(Exception):
    """Raised inside the handler to end the session; the reply was already sent."""


class SMTPHandler(socketserver.StreamRequestHandler):
    """One SMTP session: read a command line, call smtp_<VERB>, repeat.

    A command method gets the text after the verb, replies with self.reply() and
    returns; raising _Goodbye ends the session. Its docstring is its HELP text:
    the first line the syntax, the rest what it does.
    """

    server: SMTPServer
    disable_nagle_algorithm = True  # replies are whole writes; don't let Nagle delay them
    rbufsize = 64 * 1024  # fewer system calls while a big message streams in

    # -- plumbing ------------------------------------------------------------------

    def setup(self) -> None:
        self.config = self.server.config
        self.timeout = self.config.timeout  # read by StreamRequestHandler.setup
        super().setup()
        self.peer = f"{self.client_address[0]}:{self.client_address[1]}"
        self.session = Session()
        self.errors = 0
        self.deadline: float | None = None  # watched by the server's watchdog
        self.interrupted: str | None = None  # why the server cut our reads short
        self.server.connections.register(self)

    def finish(self) -> None:
        self.server.connections.unregister(self)
        with contextlib.suppress(OSError):
            super().finish()
        if self.connection is not self.request:  # STARTTLS replaced the socket
            with contextlib.suppress(OSError):
                self.connection.close()

    def handle(self) -> None:
        log.info("%s connected", self.peer)
        try:
            if self.config.implicit_tls:
                self.start_tls()
            self.reply(220, f"{self.config.hostname} Service ready")
            while True:
                self.handle_one_command()
        except _Goodbye:
            pass
        except OSError as error:  # reset, broken pipe, a client that stopped reading
            log.info("%s connection lost: %s", self.peer, error)
        except Exception:
            # A bug of ours: log it, and tell the client rather than vanish.
            log.exception("%s internal error", self.peer)
            with contextlib.suppress(OSError, _Goodbye):
                self.reply(421, f"{self.config.hostname} Internal error, closing transmission channel")
        finally:
            log.info("%s disconnected", self.peer)

    def handle_one_command(self) -> None:
        # Read up to the AUTH bound, since AUTH's initial response may be that long.
        line = self.read_line(MAX_AUTH_LINE)
        if line is None or (len(line) + 2 > MAX_COMMAND_LINE and line[:5].upper() != b"AUTH "):
            self.reply(500, "Error: line too long")
        else:
            command = line.decode("utf-8", "replace")
            self.trace("C:", command)
            verb, _, argument = command.partition(" ")
            method = getattr(self, "smtp_" + verb.upper(), None) if verb.isascii() and verb.isalpha() else None
            if method is None:
                self.reply(500, "Error: command not recognized")
            else:
                method(argument.strip())
        if self.errors >= MAX_ERRORS:
            self.reply(421, f"{self.config.hostname} Too many errors, closing transmission channel")
            raise _Goodbye

    def read_line(self, limit: int) -> bytes | None:
        """Return the next line without its line end, or None if it was over limit.

        An over-long line is read to its end and thrown away. End of input, a timeout
        or an interruption by the server raises _Goodbye after the 421 (if due).
        """
        self.deadline = time.monotonic() + self.config.timeout
        try:
            line = self.rfile.readline(limit + 1)
            too_long = len(line) > limit
            while too_long and line and not line.endswith(b"\n") and not self.interrupted:
                line = self.rfile.readline(64 * 1024)  # discard the rest, a bounded piece at a time
        except TimeoutError:
            self.interrupted = self.interrupted or "Timeout"
            line = b""
        finally:
            self.deadline = None
        self.end_if_gone(line)
        return None if too_long else line.rstrip(b"\r\n")

    def end_if_gone(self, line: bytes) -> None:
        """Raise _Goodbye if line shows the client gone or the server interrupting us."""
        if self.interrupted:
            with contextlib.suppress(OSError):
                self.reply(421, f"{self.config.hostname} {self.interrupted}, closing transmission channel")
            raise _Goodbye
        if not line.endswith(b"\n"):
            raise _Goodbye  # the client closed the connection (perhaps mid-line)

    def reply(self, code: int, *lines: str) -> None:
        """Send one reply: `code-line` for all lines but the last, then `code line`."""
        lines = lines or ("",)
        text = "".join(
            f"{code}{'-' if number < len(lines) - 1 else ' '}{line}\r\n" for number, line in enumerate(lines)
        )
        if self.config.verbose:  # each reply is on the hot path: skip the loop when nobody watches
            for line in text.splitlines():
                self.trace("S:", line)
        if code >= 500:
            self.errors += 1
        self.connection.sendall(text.encode("utf-8", "replace"))

    def trace(self, direction: str, line: str) -> None:
        if self.config.verbose:
            log.info("%s %s %s", self.peer, direction, _printable(_mask_auth(line) if direction == "C:" else line))

    def interrupt(self, reason: str) -> None:
        """Called from another thread: make the pending read end, so handle() says 421."""
        self.interrupted = reason
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown: SSLSocket's would also drop the TLS layer.
            socket.socket.shutdown(self.connection, socket.SHUT_RD)

    # -- the commands of RFC 821 and the seed ----------------------------------------

    def smtp_HELO(self, argument: str) -> None:
        """HELO <domain>

        Say who you are; the server answers 250. Clears any mail transaction.
        """
        self.greet(argument, extended=False)

    def smtp_EHLO(self, argument: str) -> None:
        """EHLO <domain>

        Like HELO, and the server lists the extensions it supports.
        """
        self.greet(argument, extended=True)

    def greet(self, domain: str, *, extended: bool) -> None:
        if not domain:
            self.reply(501, f"Syntax: {'EHLO' if extended else 'HELO'} <domain>")
            return
        self.session.greeting, self.session.envelope = domain, None
        hello = f"{self.config.hostname} Hello {_printable(domain[:100])}"
        if not extended:
            self.reply(250, hello)
            return
        extensions = []
        if not self.needs_tls_first():
            extensions.append("AUTH PLAIN LOGIN")  # never CRAM-MD5: bcrypt keeps no plaintext
        extensions += [f"SIZE {self.config.max_message_size}", "8BITMIME", "PIPELINING"]
        if self.config.tls_context is not None and not self.session.tls:
            extensions.append("STARTTLS")
        extensions.append("HELP")
        self.reply(250, hello, *extensions)

    def smtp_MAIL(self, argument: str) -> None:
        """MAIL FROM:<address> [SIZE=<bytes>] [BODY=7BIT|8BITMIME]

        Start a new message from <address> (<> for none).
        """
        if not self.session.user:
            self.reply(*NEED_AUTH)
            return
        if self.session.envelope is not None:
            self.reply(503, "Error: nested MAIL command")
            return
        parsed = _parse_path(argument, "FROM:", allow_null=True)
        if parsed is None:
            self.reply(501, "Syntax: MAIL FROM:<address> [SIZE=<bytes>] [BODY=7BIT|8BITMIME]")
            return
        address, parameters = parsed
        for parameter in parameters:
            keyword, _, value = parameter.partition("=")
            keyword = keyword.upper()
            if keyword == "SIZE" and value.isdigit() and value.isascii():
                if int(value) > self.config.max_message_size:
                    self.reply(552, f"Message size exceeds the limit of {self.config.max_message_size} bytes")
                    return
            elif keyword == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                pass  # we store bytes as they come; nothing to convert
            else:
                self.reply(555, f"MAIL parameter not recognized: {_printable(parameter[:40])}")
                return
        self.session.envelope = Envelope(sender=address)
        self.reply(*OK)

    def smtp_RCPT(self, argument: str) -> None:
        """RCPT TO:<address>

        Add a recipient to the message started by MAIL.
        """
        if not self.session.user:
            self.reply(*NEED_AUTH)
            return
        envelope = self.session.envelope
        if envelope is None:
            self.reply(*BAD_SEQUENCE_MAIL)
            return
        parsed = _parse_path(argument, "TO:", allow_null=False)
        if parsed is None:
            self.reply(501, "Syntax: RCPT TO:<address>")
            return
        if parsed[1]:
            self.reply(555, f"RCPT parameter not recognized: {_printable(parsed[1][0][:40])}")
            return
        if len(envelope.recipients) >= MAX_RECIPIENTS:
            self.reply(452, f"Too many recipients (at most {MAX_RECIPIENTS})")
            return
        envelope.recipients.append(parsed[0])
        self.reply(*OK)

    def smtp_DATA(self, argument: str) -> None:
        """DATA

        Send the message itself, ended by a line holding a single dot.
        """
        if not self.session.user:
            self.reply(*NEED_AUTH)
            return
        envelope = self.session.envelope
        if envelope is None:
            self.reply(*BAD_SEQUENCE_MAIL)
            return
        if not envelope.recipients:
            self.reply(503, "Error: need RCPT command")
            return
        if argument:
            self.reply(501, "Syntax: DATA")
            return
        self.session.envelope = None  # whatever happens now, the transaction is over
        try:
            delivery = self.server.mailboxes.start_delivery(self.session.user)
        except OSError as error:
            self.reply(*_storage_error(error, self.peer))
            return
        self.reply(354, "Start mail input; end with <CRLF>.<CRLF>")
        try:
            problem = self.receive_data(delivery)
        except BaseException:
            delivery.abort()
            raise
        if problem is not None:
            delivery.abort()
            self.reply(*problem)
            return
        try:
            key = delivery.commit()
        except OSError as error:
            self.reply(*_storage_error(error, self.peer))
            return
        log.info(
            "%s %s stored message %s from <%s> (%d bytes, recipients: %d)",
            self.peer,
            self.session.user,
            key,
            _printable(envelope.sender),
            delivery.size,
            len(envelope.recipients),
        )
        self.reply(250, f"OK: stored as {key}")

    def receive_data(self, delivery: Delivery) -> Reply | None:
        """Copy the message into delivery; return None, or the error reply once the data has ended.

        RFC 5321 4.1.1.4: only <CRLF>.<CRLF> ends the data. A "." line ended by a
        bare LF does not (that would open the door to SMTP smuggling), but
        elsewhere a bare LF is taken as a line end, as Postfix does. Lines are
        stored with LF ends, as Maildir readers expect.

        Whole lines already in the read buffer go through in one piece (see
        take_plain_lines); the rest, one line at a time.
        """
        self.deadline = time.monotonic() + self.config.data_timeout
        readline, write = self.rfile.readline, delivery.write
        limit, max_size = MAX_TEXT_LINE + 1, self.config.max_message_size  # +1: the doubled dot
        size, problem = 0, None
        after_crlf = True  # the DATA command's CRLF counts as the one before a first "."
        at_line_start = True
        to_trace = TRACE_MESSAGE_LINES if self.config.verbose else 0
        try:
            while True:
                block = self.take_plain_lines(after_crlf) if at_line_start and not to_trace else b""
                if block:
                    after_crlf = block.endswith(b"\r\n")
                    if block.startswith(b".") or b"\n." in block:  # the regex costs more than this look
                        block = LEADING_DOT.sub(b"", block)  # RFC 5321 4.5.2; a lone "." stays
                    stored = block.replace(b"\r\n", b"\n")
                else:
                    line = readline(limit + 1)
                    if to_trace:
                        to_trace = self.trace_message_line("C:", line, to_trace)
                    if line == b".\r\n" and after_crlf and at_line_start:
                        if self.config.verbose and not to_trace:
                            self.trace("C:", ".")
                        return problem
                    if not line.endswith(b"\n"):
                        if len(line) <= limit or self.interrupted:  # end of input, or cut off
                            self.end_if_gone(line)
                        problem = problem or Reply(500, f"Error: line longer than {MAX_TEXT_LINE} octets")
                        at_line_start = after_crlf = False
                        continue
                    was_line_start, at_line_start = at_line_start, True
                    after_crlf = line.endswith(b"\r\n")
                    if not was_line_start:
                        continue  # the end of an over-long line
                    text = line[: -2 if after_crlf else -1]
                    if text.startswith(b".") and len(text) > 1:
                        text = text[1:]  # RFC 5321 4.5.2: the sender doubled a leading dot
                    if len(text) + 2 > MAX_TEXT_LINE:
                        problem = problem or Reply(500, f"Error: line longer than {MAX_TEXT_LINE} octets")
                    stored = text + b"\n"
                if problem:
                    continue  # the message is refused already: read on to its end, keep nothing
                size += len(stored) + stored.count(b"\n")  # the size counts CRLF line ends, as SIZE does
                if size > max_size:
                    problem = Reply(552, f"Message size exceeds the limit of {max_size} bytes")
                    continue
                try:
                    write(stored)
                except OSError as error:  # disk full, say: refuse the message once it has ended
                    problem = _storage_error(error, self.peer)
        except TimeoutError:
            self.interrupted = self.interrupted or "Timeout"
            self.end_if_gone(b"")
            raise  # not reached: end_if_gone raised _Goodbye
        finally:
            self.deadline = None

    def take_plain_lines(self, after_crlf: bool) -> bytes:
        """Take the whole lines waiting in the read buffer, up to the end of the data, if none is special.

        Special, and so left for the line-by-line path: the final ".", a partial
        line, and a line that might be over the limit. Bytes operations in C on a
        buffer's worth of lines make a big message cost a fraction of the CPU.
        """
        buffered = self.rfile.peek(1)  # what is buffered, or one read's worth if nothing is
        block = buffered[: buffered.rfind(b"\n") + 1]
        end = block.find(b"\r\n.\r\n")
        if end >= 0:
            block = block[: end + 2]  # up to the CRLF before the final "."
        if after_crlf and block.startswith(b".\r\n"):
            return b""
        longest_safe = MAX_TEXT_LINE - 2  # octets before the LF that cannot be over the limit, CR or dot or not
        if len(block) > longest_safe:
            parts = block.split(b"\n")
            if max(map(len, parts)) > longest_safe:  # cut before the first such line: it goes the careful way
                first_long = next(number for number, part in enumerate(parts) if len(part) > longest_safe)
                block = block[: sum(map(len, parts[:first_long])) + first_long]
        return self.rfile.read(len(block)) if block else b""

    def trace_message_line(self, direction: str, line: bytes, left: int) -> int:
        """Log one line of a message in --verbose mode; return how many more may be logged."""
        self.trace(direction, line.rstrip(b"\r\n").decode("utf-8", "replace"))
        if left == 1:
            self.trace(direction, "... (the rest of the message is not logged)")
        return left - 1

    def smtp_RSET(self, argument: str) -> None:
        """RSET

        Abandon the message being sent; the login stays.
        """
        self.session.envelope = None
        self.reply(*OK)

    def smtp_NOOP(self, argument: str) -> None:
        """NOOP

        Do nothing; the server answers 250 OK.
        """
        self.reply(*OK)

    def smtp_VRFY(self, argument: str) -> None:
        """VRFY <address>

        Not answered, so as not to tell which users exist (RFC 5321 3.5.3).
        """
        if not argument:
            self.reply(501, "Syntax: VRFY <address>")
            return
        self.reply(252, "Cannot VRFY user, but will accept message and attempt delivery")

    def smtp_HELP(self, argument: str) -> None:
        """HELP [<command>]

        List the commands, or explain one.
        """
        commands = self.commands()
        if not argument:
            self.reply(214, "Commands: " + " ".join(commands), "HELP <command> explains one")
            return
        method = commands.get(argument.upper())
        if method is None:
            self.reply(504, f"HELP topic not recognized: {_printable(argument[:40])}")
            return
        text = inspect.cleandoc(method.__doc__ or argument.upper())  # python -OO drops docstrings
        self.reply(214, *(line for line in text.splitlines() if line))

    @classmethod
    def commands(cls) -> dict[str, object]:
        """{VERB: method} for every smtp_VERB method: one table for dispatch and HELP."""
        return {name[5:]: getattr(cls, name) for name in sorted(dir(cls)) if name.startswith("smtp_")}

    def smtp_QUIT(self, argument: str) -> None:
        """QUIT

        End the session; the server answers 221 and closes the connection.
        """
        self.reply(221, f"{self.config.hostname} Service closing transmission channel")
        raise _Goodbye

    # -- login (RFC 4954) -----------------------------------------------------------

    def smtp_AUTH(self, argument: str) -> None:
        """AUTH PLAIN|LOGIN [<initial-response>]

        Log in. A wrong username or password ends the connection.
        """
        if not self.session.greeting:
            self.reply(503, "Error: send HELO or EHLO first")
            return
        if self.session.user:
            self.reply(503, "Error: already authenticated")
            return
        if self.session.envelope is not None:
            self.reply(503, "Error: AUTH not allowed during a mail transaction")
            return
        if self.needs_tls_first():
            self.reply(530, "Must issue a STARTTLS command first")
            return
        address = self.client_address[0]
        if self.server.login_failures.blocked(address):
            log.warning("%s AUTH refused: too many failed logins from %s", self.peer, address)
            self.reply(454, "4.7.0 Too many failed logins, try again later")
            return
        mechanism, _, initial = argument.partition(" ")
        if not mechanism:
            self.reply(501, "Syntax: AUTH PLAIN|LOGIN [<initial-response>]")
            return
        method = getattr(self, "auth_" + mechanism.upper(), None) if mechanism.isalpha() else None
        if method is None:
            self.reply(504, "Unrecognized authentication type; use PLAIN or LOGIN")
            return
        credentials = method(initial.strip() or None)
        if credentials is None:
            return  # cancelled or malformed, already answered
        self.finish_login(credentials)

    def finish_login(self, credentials: Credentials) -> None:
        users, address = self.server.users, self.client_address[0]
        wanted_identity = credentials.authorization_id in ("", credentials.user)
        if users.check(credentials.user, credentials.password) and wanted_identity:
            self.session.user = credentials.user
            log.info("%s login %s", self.peer, credentials.user)
            self.reply(235, "2.7.0 Authentication successful")
            return
        self.server.login_failures.record(address)
        # A name that is not an account may be a password typed into the wrong field: never log it.
        who = credentials.user if credentials.user in users else "an unknown user"
        log.warning("%s login failed for %s", self.peer, who)
        self.reply(535, "5.7.8 Authentication credentials invalid")
        raise _Goodbye  # the seed: a wrong username or password ends the connection

    def auth_PLAIN(self, initial: str | None) -> Credentials | None:
        """RFC 4616: base64 of authzid NUL authcid NUL password."""
        response = self.auth_response(initial, b"")
        if response is None:
            return None
        parts = response.split(b"\0")
        if len(parts) != 3:
            self.reply(501, "Malformed PLAIN response")
            return None
        return Credentials(_text(parts[0]), _text(parts[1]), parts[2])

    def auth_LOGIN(self, initial: str | None) -> Credentials | None:
        """The de-facto LOGIN mechanism: username and password in two base64 answers."""
        user = self.auth_response(initial, b"Username:")
        if user is None:
            return None
        password = self.auth_response(None, b"Password:")
        if password is None:
            return None
        return Credentials("", _text(user), password)

    def auth_response(self, initial: str | None, prompt: bytes) -> bytes | None:
        """Return the decoded initial response, or ask with a 334; None after a 501."""
        if initial is None:
            self.reply(334, base64.b64encode(prompt).decode())
            line = self.read_line(MAX_AUTH_LINE)
            if line is None:
                self.reply(501, "Error: authentication line too long")
                return None
            answer = line.decode("ascii", "replace").strip()
            self.trace("C:", "********")
        else:
            answer = initial
        if answer == "*":
            self.reply(501, "Authentication cancelled")
            return None
        if answer == "=":  # RFC 4954 4: an empty initial response
            return b""
        try:
            return base64.b64decode(answer, validate=True)
        except (binascii.Error, ValueError):
            self.reply(501, "Error: invalid base64")
            return None

    # -- TLS (RFC 3207) --------------------------------------------------------------

    def needs_tls_first(self) -> bool:
        """True while --require-tls keeps AUTH out of a session not yet under TLS."""
        return self.config.require_tls and not self.session.tls

    def smtp_STARTTLS(self, argument: str) -> None:
        """STARTTLS

        Switch this connection to TLS; then say EHLO again.
        """
        if self.config.tls_context is None:
            self.reply(454, "TLS not available")
            return
        if self.session.tls:
            self.reply(503, "Error: TLS already active")
            return
        if argument:
            self.reply(501, "Syntax: STARTTLS")
            return
        self.reply(220, "Ready to start TLS")
        self.start_tls()

    def start_tls(self) -> None:
        """Wrap the connection in TLS and forget everything said before (RFC 3207 4.2)."""
        assert self.config.tls_context is not None
        self.deadline = time.monotonic() + self.config.timeout
        try:
            self.connection = self.config.tls_context.wrap_socket(self.connection, server_side=True)
        except (OSError, ValueError) as error:
            log.warning("%s TLS handshake failed: %s", self.peer, error)
            raise _Goodbye from None
        finally:
            self.deadline = None
        # Plaintext the client pipelined after STARTTLS stays in the old buffer: dropped
        # (RFC 3207 5, and the STARTTLS command injection attack of CVE-2011-0411).
        with contextlib.suppress(OSError):
            self.rfile.close()
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        self.session = Session(tls=True)

    # -- the seed's extra commands ----------------------------------------------------

    def smtp_RETR(self, argument: str) -> None:
        """RETR

        Send back every message you sent, oldest first: a 250 with the count, then each message ended by a "." line.
        """
        user = self.session.user
        if not user:
            self.reply(*NEED_AUTH)
            return
        if argument:
            self.reply(504, "RETR takes no parameter")
            return
        with contextlib.ExitStack() as cleanup:
            try:
                messages = cleanup.enter_context(self.server.mailboxes.messages(user))
            except OSError as error:
                self.reply(*_storage_error(error, self.peer))
                return
            count = len(messages)
            self.reply(250, f"{count} {'message follows' if count == 1 else 'messages follow'}")
            for open_message in messages:
                try:
                    message = open_message()
                except (KeyError, FileNotFoundError):
                    # A Maildir reader moved it meanwhile: an empty block keeps the count true.
                    log.warning("%s a message vanished during RETR", self.peer)
                    message = io.BytesIO()
                with message:
                    self.send_dot_stuffed(message)

    def send_dot_stuffed(self, message: BinaryIO) -> None:
        """Send a stored message (LF ends) as DATA sends it: CRLF ends, leading dots doubled, then "."."""
        at_line_start = True
        to_trace = TRACE_MESSAGE_LINES if self.config.verbose else 0
        while chunk := self.read_stored(message):
            stuffed = chunk.replace(b"\n.", b"\n..")
            if at_line_start and stuffed.startswith(b"."):
                stuffed = b"." + stuffed
            for line in stuffed.splitlines()[:to_trace]:  # 256 KiB hold the first lines, as a rule
                to_trace = self.trace_message_line("S:", line, to_trace)
            self.connection.sendall(stuffed.replace(b"\n", b"\r\n"))
            at_line_start = chunk.endswith(b"\n")
        self.connection.sendall(b".\r\n" if at_line_start else b"\r\n.\r\n")
        self.trace("S:", ".")

    def read_stored(self, message: BinaryIO) -> bytes:
        """Read the next piece of a stored message; a disk error ends the session with 421."""
        try:
            return message.read(256 * 1024)
        except OSError:
            # Mid-RETR there is no way to say 451 and go on: the count was promised.
            log.exception("%s could not read a stored message", self.peer)
            self.reply(421, f"{self.config.hostname} Local error in processing, closing transmission channel")
            raise _Goodbye from None

    def smtp_DELE(self, argument: str) -> None:
        """DELE

        Delete every message you sent; the 250 says how many.
        """
        user = self.session.user
        if not user:
            self.reply(*NEED_AUTH)
            return
        if argument:
            self.reply(504, "DELE takes no parameter")
            return
        try:
            deleted = self.server.mailboxes.delete_all(user)
        except OSError as error:
            self.reply(*_storage_error(error, self.peer))
            return
        log.info("%s %s deleted %d messages", self.peer, user, deleted)
        self.reply(250, f"{deleted} {'message' if deleted == 1 else 'messages'} deleted")


def _parse_path(argument: str, keyword: str, *, allow_null: bool) -> tuple[str, list[str]] | None:
    """Parse `FROM:<address> PARAM...` (or TO:); return (address, params) or None if malformed.

    MAIL may name the null path <> (bounces); RCPT may name <postmaster> without a domain.
    """
    if argument[: len(keyword)].upper() != keyword:
        return None
    match = PATH.fullmatch(argument[len(keyword) :].lstrip())  # "FROM: <a@b>" is common enough to accept
    if match is None:
        return None
    address, local, domain = match["address"], match["local"], match["domain"]
    if local is None and (address == "") != allow_null:
        return None  # <> in RCPT, or <postmaster> in MAIL
    if len(address) + 2 > MAX_PATH or (local and (len(local) > MAX_LOCAL_PART or len(domain) > MAX_DOMAIN)):
        return None
    return address, match["parameters"].split()


def _storage_error(error: OSError, peer: str) -> Reply:
    log.error("%s could not store a message: %s", peer, error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return Reply(452, "Insufficient system storage")
    return Reply(451, "Requested action aborted: local error in processing")


def _text(raw: bytes) -> str:
    """Decode a username from AUTH; undecodable bytes can match no account."""
    return raw.decode("utf-8", "replace")


def _mask_auth(line: str) -> str:
    """Hide the credentials in an AUTH command line, for logs."""
    verb, _, rest = line.partition(" ")
    if verb.upper() != "AUTH":
        return line
    mechanism, _, payload = rest.partition(" ")
    return f"{verb} {mechanism} ********" if payload else line


def _printable(text: str) -> str:
    """Escape control characters, so that client text cannot play tricks on a terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --------------------------------------------------------------------------- server


class LoginThrottle:
    """Counts failed logins per address; too many within the window blocks new attempts."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, deque(maxlen=self.max_failures)).append(time.monotonic())

    def blocked(self, address: str) -> bool:
        """True while address has max_failures failures, the oldest within the window."""
        with self._lock:
            failures = self._failures.get(address)
            if not failures:
                return False
            if time.monotonic() - failures[-1] > self.window:
                del self._failures[address]  # forgotten: keeps the table small
                return False
            return len(failures) >= self.max_failures and time.monotonic() - failures[0] <= self.window


class ConnectionTable:
    """The sessions of one listener: caps on their number, deadlines, and shutdown."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self._per_address: defaultdict[str, int] = defaultdict(int)
        self._total = 0
        self._handlers: set[SMTPHandler] = set()
        self._closing_reason: str | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def admit(self, address: str) -> str | None:
        """Take a slot for address; return why not if the caps are reached."""
        with self._lock:
            if self._total >= self.max_total:
                return "Too many connections"
            if self._per_address[address] >= self.max_per_address:
                return "Too many connections from your address"
            self._total += 1
            self._per_address[address] += 1
            return None

    def release(self, address: str) -> None:
        with self._lock:
            self._total -= 1
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]
            if not self._total:
                self._idle.notify_all()

    def register(self, handler: SMTPHandler) -> None:
        with self._lock:
            self._handlers.add(handler)
            closing_reason = self._closing_reason
        if closing_reason:  # it slipped in while the server was closing
            handler.interrupt(closing_reason)

    def unregister(self, handler: SMTPHandler) -> None:
        with self._lock:
            self._handlers.discard(handler)

    def expire_overdue(self) -> None:
        """Cut off sessions past their deadline: a client sending a byte a second is no exception."""
        now = time.monotonic()
        with self._lock:
            overdue = [h for h in self._handlers if h.deadline is not None and h.deadline < now]
        for handler in overdue:
            handler.interrupt("Timeout")

    def interrupt_all(self, reason: str) -> None:
        with self._lock:
            self._closing_reason = reason
            handlers = list(self._handlers)
        for handler in handlers:
            handler.interrupt(reason)

    def wait_until_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: not self._total, timeout)


class SMTPServer(socketserver.ThreadingTCPServer):
    """A thread per connection; the caps are checked before a thread is started.

    Methods for the caller: serve_forever(), shutdown(), server_close() (which
    gives open sessions a moment to finish), and the context manager.
    """

    # Restarting the server must not wait out TIME_WAIT sockets of the last run.
    allow_reuse_address = True
    # Handler threads must not keep the process alive: server_close() interrupts them itself.
    daemon_threads = True
    block_on_close = False
    # The listen backlog: a whole class connecting at once must not be dropped (default is 5).
    request_queue_size = 1024
    shutdown_grace = 2.0  # seconds server_close() waits for sessions to finish

    def __init__(
        self,
        server_address: tuple[str, int],
        handler_class: type[SMTPHandler] = SMTPHandler,
        *,
        config: ServerConfig,
        users: UserStore,
        mailboxes: MailboxStore,
    ) -> None:
        self.config = config
        self.users = users
        self.mailboxes = mailboxes
        self.connections = ConnectionTable(config.max_connections, config.max_connections_per_ip)
        self.login_failures = LoginThrottle(config.max_login_failures, config.login_failure_window)
        self._closing = threading.Event()  # before binding: a failed bind calls server_close()
        super().__init__(server_address, handler_class)
        self._watchdog = threading.Thread(target=self._watch_deadlines, name="smtp-watchdog", daemon=True)
        self._watchdog.start()

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        refusal = self.connections.admit(client_address[0])
        if refusal is not None:
            log.warning("%s:%s refused: %s", client_address[0], client_address[1], refusal)
            if not self.config.implicit_tls:  # a TLS client would not understand plaintext
                with contextlib.suppress(OSError):
                    request.sendall(f"421 {self.config.hostname} {refusal}, closing transmission channel\r\n".encode())
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # e.g. no more threads: free the slot, drop the connection
            self.connections.release(client_address[0])
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(client_address[0])

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        log.exception("%s:%s unexpected error", client_address[0], client_address[1])

    def server_close(self) -> None:
        """Stop listening, tell open sessions we are going, and wait a moment for them."""
        super().server_close()
        self._closing.set()
        self.connections.interrupt_all("Service shutting down")
        self.connections.wait_until_idle(self.shutdown_grace)

    def _watch_deadlines(self) -> None:
        while not self._closing.wait(0.25):
            self.connections.expire_overdue()


# ------------------------------------------------------------------- command line


def _read_new_password(name: str) -> str:
    """Ask twice on a terminal; from a pipe, the first line of stdin is the password."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != password:
            raise UsersFileError("the passwords do not match")
    if not password:
        raise UsersFileError("the password is empty")
    if len(password.encode()) > BCRYPT_MAX_PASSWORD:
        raise UsersFileError(f"the password is longer than bcrypt's {BCRYPT_MAX_PASSWORD} bytes")
    return password


def manage_users(args: argparse.Namespace) -> None:
    """adduser, passwd and deluser: edit users.txt; a running server notices by itself."""
    name, path = args.name, Path(args.users)
    if not USERNAME.fullmatch(name):
        raise UsersFileError(f"bad username {name!r}: 1-64 of A-Z a-z 0-9 . _ -, not starting with . or -")
    # Parsing first also refuses to edit a file the server would not load.
    existing = parse_users(path) if args.command != "adduser" or path.exists() else {}
    if args.command == "adduser" and name in existing:
        raise UsersFileError(f"{path}: user {name!r} exists already (use passwd to change the password)")
    if args.command != "adduser" and name not in existing:
        raise UsersFileError(f"{path}: no user {name!r}")
    if args.command == "deluser":
        rewrite_users_file(path, name, None)
        print(f"deleted {name} from {path}; the mailbox {Path(args.mailboxes) / name} is kept")
        return
    rewrite_users_file(path, name, hash_password(_read_new_password(name), args.rounds))
    print(f"{'added' if args.command == 'adduser' else 'changed the password of'} {name} in {path}")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="A small SMTP server with login, RETR and DELE.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2525, help="port (default 2525; 0 picks a free one)")
    parser.add_argument("--hostname", default=socket.gethostname(), help="name in the greeting")
    parser.add_argument("--users", default="users.txt", help="the accounts file (default users.txt)")
    parser.add_argument("--mailboxes", default="mailboxes", help="where mail is stored (default mailboxes)")
    parser.add_argument("--max-message-size", type=int, default=10 * 1024 * 1024, metavar="BYTES")
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--max-connections-per-ip", type=int, default=50)
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="idle timeout, and the most one command line may take (default 300)",
    )
    parser.add_argument(
        "--data-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="the most one DATA transfer may take (default 600)",
    )
    parser.add_argument(
        "--max-login-failures",
        type=int,
        default=5,
        help="failed logins from one address before it must wait (default 5)",
    )
    parser.add_argument("--login-failure-window", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--tls-cert", help="certificate (PEM) for STARTTLS and --tls-port")
    parser.add_argument("--tls-key", help="private key (PEM) of --tls-cert")
    parser.add_argument("--tls-port", type=int, help="also listen here with implicit TLS (SMTPS)")
    parser.add_argument("--require-tls", action="store_true", help="refuse AUTH before STARTTLS")
    parser.add_argument("--verbose", action="store_true", help="log every line as C:/S: (passwords masked)")
    commands = parser.add_subparsers(dest="command", metavar="{adduser,passwd,deluser}")
    for command, help_text in (
        ("adduser", "add an account"),
        ("passwd", "change a password"),
        ("deluser", "remove an account (its mailbox is kept)"),
    ):
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument("name")
        if command != "deluser":
            sub.add_argument("--rounds", type=int, default=12, help="bcrypt cost (default 12)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.command:
            manage_users(args)
        else:
            serve(args)
    except (UsersFileError, ssl.SSLError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:  # Ctrl-C at adduser's password prompt
        parser.exit(130, "\n")


def serve(args: argparse.Namespace) -> None:
    """Run the server until Ctrl-C or SIGTERM."""
    # From here on SIGTERM stops the server the way Ctrl-C does, at whatever moment it comes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        servers = start_servers(args)
    except KeyboardInterrupt:
        return
    listeners = [threading.Thread(target=extra.serve_forever, name="smtps", daemon=True) for extra in servers[1:]]
    try:
        for listener in listeners:
            listener.start()
        for server in servers:
            host, port = server.server_address[:2]
            kind = " SMTPS (implicit TLS)" if server.config.implicit_tls else ""
            log.info("serving%s on %s:%d (%d accounts in %s, mail in %s)", kind, host, port,
                     len(server.users), server.users.path, server.mailboxes.root)  # fmt: skip
        servers[0].serve_forever()
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        # A second Ctrl-C must not interrupt the orderly stop; it takes two seconds at most.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server, listener in zip(servers[1:], listeners, strict=True):
            if listener.is_alive():
                server.shutdown()
        for server in servers:
            server.server_close()
    log.info("stopped")


def start_servers(args: argparse.Namespace) -> list[SMTPServer]:
    """Check the options, load the users, and bind the plain listener and the SMTPS one if asked."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsersFileError("--tls-cert and --tls-key go together")
    if (args.require_tls or args.tls_port is not None) and not args.tls_cert:
        raise UsersFileError("--require-tls and --tls-port need --tls-cert and --tls-key")
    config = ServerConfig(
        hostname=args.hostname,
        max_message_size=args.max_message_size,
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        timeout=args.timeout,
        data_timeout=args.data_timeout,
        max_login_failures=args.max_login_failures,
        login_failure_window=args.login_failure_window,
        verbose=args.verbose,
        tls_context=tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None,
        require_tls=args.require_tls,
    )
    users = UserStore(Path(args.users))
    mailboxes = MailboxStore(Path(args.mailboxes))
    if removed := mailboxes.clean_temporary_files():
        log.info("removed %d unfinished deliveries left by a crash", removed)
    if not args.require_tls and not _is_loopback(args.host):
        log.warning(
            "listening on %s, and clients may log in without TLS: their passwords cross the network in "
            "clear text (use --tls-cert, --tls-key and --require-tls)",
            args.host,
        )
    threading.stack_size(512 * 1024)  # a session needs little stack; 1000 of them add up
    servers = [SMTPServer((args.host, args.port), config=config, users=users, mailboxes=mailboxes)]
    if args.tls_port is not None:
        tls_config = dataclasses.replace(config, implicit_tls=True)
        try:
            servers.append(SMTPServer((args.host, args.tls_port), config=tls_config, users=users, mailboxes=mailboxes))
        except BaseException:
            servers[0].server_close()
            raise
    return servers


def _is_loopback(host: str) -> bool:
    try:
        return all(info[4][0].startswith(("127.", "::1")) for info in socket.getaddrinfo(host, None))
    except OSError:
        return False


if __name__ == "__main__":
    main()
