"""The session base both protocols share: a line-based command loop with deadlines, login and TLS.

- `LineHandler` is one session of a line-based protocol: read a bounded command line,
  call `<prefix><VERB>`, repeat. `SMTPHandler` and `POP3Handler` build on it.
- `TimeLimit` lets the server's watchdog cut a read short (see `limits.ConnectionTable`).
- `Hangup`, raised inside a session, ends it.
- `offered_when()` declares, beside a command, when it is offered (HELP, EHLO, CAPA ask `offers()`).

Logging in comes from `login.LoginMixIn`: its `log_in()` answers the outcome, and hangs up
on a wrong password, for both protocols. Methods a protocol overrides: `greet()`,
`reply_line_too_long()`, `reply_unknown_command()`, `closing()`, `tls_started()`,
`refusal()`, `idle_timeout()`, `send_challenge()`, `refuse_auth()` and `refuse_login()`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import socket
import socketserver
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar

from .chaos import COMMAND_STAGES, DrillMixIn
from .config import ServerConfig
from .data import MessageTrace, dot_stuffed
from .login import Login, LoginMixIn, LoginOutcome
from .logs import WireLog, log
from .sasl import AuthProblem

if TYPE_CHECKING:
    from .listener import Listener

MAX_ERRORS = 10  # error replies in one session before we hang up, like Postfix's hard error limit


class Hangup(Exception):
    """Raised inside a session to end it; whatever reply was due has been sent."""


Command = TypeVar("Command", bound=Callable[..., None])


def offered_when(condition: Callable[[Any], bool]) -> Callable[[Command], Command]:
    """Declare, beside a command, when a session offers it (HELP, EHLO, CAPA): while condition(session) holds."""

    def declare(command: Command) -> Command:
        command.offered_when = condition  # type: ignore[attr-defined]
        return command

    return declare


class LineHandler(DrillMixIn, LoginMixIn, socketserver.StreamRequestHandler):
    """One session of a line-based protocol: read a command line, call `<prefix><VERB>`, repeat.

    A command method gets the text after the verb, replies and returns; raising
    Hangup ends the session.
    """

    server: Listener
    protocol: ClassVar[str]  # "SMTP" or "POP3", in the log
    command_prefix: ClassVar[str]  # "smtp_": the command NOOP is the method smtp_NOOP
    max_command_line: ClassVar[int]  # octets, CRLF included
    longer_lines: ClassVar[dict[str, int]] = {}  # verbs allowed a longer command line, and how long
    verbatim_arguments: ClassVar[frozenset[str]] = frozenset()  # verbs whose argument keeps its outer spaces
    disable_nagle_algorithm = True  # replies are whole writes; don't let Nagle delay them
    rbufsize = 64 * 1024  # fewer system calls while a big message streams in

    # -- what a protocol provides ------------------------------------------------------

    def greet(self) -> None:
        """Send the greeting."""
        raise NotImplementedError

    def reply_line_too_long(self) -> None:
        raise NotImplementedError

    def reply_unknown_command(self) -> None:
        raise NotImplementedError

    def closing(self, reason: str) -> None:
        """Tell the client the server is closing the connection, and why."""
        raise NotImplementedError

    def tls_started(self) -> None:
        """Called once TLS is up: forget what was said in clear text."""

    def idle_timeout(self) -> float:
        """Seconds a session may sit idle, and the most one command line may take."""
        return self.config.timeout

    def logged_in_as(self) -> str | None:
        """The user this session has logged in, or None (--who-interval's summary counts them)."""
        raise NotImplementedError

    def status(self) -> tuple[str | None, str, bool]:
        """For the web view: the user logged in (or None), where the session is, and whether TLS is on."""
        raise NotImplementedError

    def send_challenge(self, challenge: bytes) -> None:
        """Ask for the next answer of an AUTH exchange (SMTP `334`, POP3 `+`)."""
        raise NotImplementedError

    def refuse_auth(self, problem: AuthProblem) -> None:
        """Answer an AUTH whose answer cannot be used; the session goes on."""
        raise NotImplementedError

    @classmethod
    def refusal(cls, hostname: str, reason: str) -> bytes:
        """The line that turns a client away before its session starts (over the caps)."""
        raise NotImplementedError

    # -- the session's life -------------------------------------------------------------

    def setup(self) -> None:
        self.mail = self.server.mail
        self.config: ServerConfig = self.mail.config
        # A blocking socket: Python's socket timeout costs a poll() before every recv() and send(), 8
        # a message. Reads are bounded by the watchdog's deadlines (time_limit), writes by the kernel.
        self.timeout = None
        super().setup()
        self.set_send_timeout(self.idle_timeout())
        self.peer = f"{self.client_address[0]}:{self.client_address[1]}"
        self.tls_active = False
        self.errors = 0
        self.longest_line = max(self.max_command_line, *self.longer_lines.values())  # what read_line may take
        self.deadline: float | None = None  # watched by the server's watchdog
        self.interrupted: str | None = None  # why the server cut our reads short
        self.account: str | None = None  # the account logged in (log_in); TLS forgets it with the rest
        self.login_hash: bytes | None = None  # the users.txt hash the login was checked against
        events = self.mail.events
        self.watch = events.watch(self.protocol, self.peer, status=self.status) if events is not None else None
        self.wire_log = (
            WireLog(self.peer, self.commands(), self.is_account, logged=self.config.verbose, watch=self.watch)
            if self.config.verbose or self.watch is not None
            else None
        )
        self.mail.connections.register(self)

    def set_send_timeout(self, seconds: float) -> None:
        """A send that the client does not take in seconds fails (SO_SNDTIMEO): a client that stops reading
        cannot hold a session forever. Where the OS has no such option, Python's socket timeout does it."""
        whole, fraction = divmod(seconds, 1)
        # POSIX takes a struct timeval; Windows a DWORD of milliseconds.
        value = (
            struct.pack("<L", int(seconds * 1000))
            if os.name == "nt"
            else struct.pack("@ll", int(whole), int(fraction * 1e6))
        )
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        except (OSError, AttributeError):  # no SO_SNDTIMEO here
            self.connection.settimeout(seconds)

    def finish(self) -> None:
        self.mail.connections.unregister(self)
        if self.watch is not None:
            self.watch.close()
        with contextlib.suppress(OSError):
            super().finish()
        if self.connection is not self.request:  # TLS replaced the socket
            with contextlib.suppress(OSError):
                self.connection.close()

    def handle(self) -> None:
        log.info("%s connected", self.peer)
        try:
            if self.server.implicit_tls:
                self.start_tls()
            if not self.drilled("connect"):  # a --chaos drill greets instead, and hangs up
                self.greet()
            while True:
                self.handle_one_command()
        except Hangup:
            pass
        except OSError as error:  # reset, broken pipe, a client that stopped reading
            log.info("%s connection lost: %s", self.peer, error)
        except Exception:
            # A bug of ours: log it, and tell the client rather than vanish.
            log.exception("%s internal error", self.peer)
            with contextlib.suppress(OSError, Hangup):
                self.closing("Internal error")
        finally:
            log.info("%s disconnected", self.peer)

    def handle_one_command(self) -> None:
        """Read one command line and run its method; hang up after too many errors."""
        line = self.read_line(self.longest_line)
        verb = line.split(b" ", 1)[0].decode("ascii", "replace").upper() if line is not None else ""
        if line is None or len(line) + 2 > self.longer_lines.get(verb, self.max_command_line):
            self.reply_line_too_long()
        else:
            command = line.decode("utf-8", "replace")
            self.trace("C:", command)
            _, _, argument = command.partition(" ")
            method = self.command(verb)
            if method is None:
                self.reply_unknown_command()
            elif self.account_revoked():  # deluser or passwd since the login: no more commands
                log.warning("%s %s: the account was removed or its password changed", self.peer, self.account)
                self.refuse_login(Login(LoginOutcome.REVOKED))
                raise Hangup
            elif not self.drilled(COMMAND_STAGES.get(verb)):  # a --chaos drill answers in its place
                method(argument if verb in self.verbatim_arguments else argument.strip())
        if self.errors >= MAX_ERRORS:
            self.closing("Too many errors")
            raise Hangup

    def command(self, verb: str) -> Callable[[str], None] | None:
        """The method for verb (any case), or None; the one lookup behind dispatch and HELP."""
        if not (verb.isascii() and verb.isalpha()):
            return None
        return getattr(self, self.command_prefix + verb.upper(), None)

    @classmethod
    def commands(cls) -> list[str]:
        """Every verb this protocol knows, sorted."""
        prefix = cls.command_prefix
        return sorted(name.removeprefix(prefix) for name in dir(cls) if name.startswith(prefix))

    def offered_commands(self) -> list[str]:
        """The verbs this session offers now, sorted (HELP, POP3's unknown-command reply)."""
        return [verb for verb in self.commands() if self.offers(verb)]

    def offers(self, verb: str) -> bool:
        """True if verb is a command this session offers now: known, and its offered_when() holds."""
        method = self.command(verb)
        condition = getattr(method, "offered_when", None)
        return method is not None and (condition is None or condition(self))

    def help_text(self, verb: str) -> list[str]:
        """verb's docstring, its blank lines dropped: the syntax first, then what it does.

        `{mechanisms}` in it stands for the SASL mechanisms (PLAIN|LOGIN). Under python -OO,
        which drops docstrings, the verb alone.
        """
        method = self.command(verb)
        text = inspect.cleandoc(method.__doc__ or verb) if method is not None else verb
        text = text.replace("{mechanisms}", "|".join(self.mechanisms()))
        return [line for line in text.splitlines() if line]

    def syntax(self, verb: str) -> str:
        """The syntax of verb, as its 501 (POP3: -ERR) quotes it: the first line of its docstring."""
        return self.help_text(verb.upper())[0]

    # -- reading, with deadlines -----------------------------------------------------------

    def read_line(self, limit: int) -> bytes | None:
        """Return the next line without its line end, or None if it was over limit octets.

        An over-long line is read to its end and thrown away. End of input, a timeout
        or an interruption by the server raises Hangup after the closing reply (if due).
        """
        with self.time_limit(self.idle_timeout()):
            line = self.rfile.readline(limit + 1)
            too_long = len(line) > limit
            while too_long and line and not line.endswith(b"\n") and not self.interrupted:
                line = self.rfile.readline(64 * 1024)  # discard the rest, a bounded piece at a time
        self.end_if_gone(line)
        return None if too_long else line.rstrip(b"\r\n")

    def time_limit(self, seconds: float, idle: float | None = None) -> TimeLimit:
        """`with self.time_limit(seconds):` lets the watchdog cut the block off after seconds.

        With idle, each wait inside it (started by the TimeLimit's refresh()) may also take only
        that long. A timeout ends the session with the closing reply.
        """
        return TimeLimit(self, seconds, idle)

    def end_if_gone(self, line: bytes) -> None:
        """Hang up if line shows the client gone (no line end) or the server interrupting us."""
        if self.interrupted or not line.endswith(b"\n"):
            self.hang_up()

    def hang_up(self) -> NoReturn:
        """End the session: with the closing reply if the server cut it short, silently if the client went."""
        if self.interrupted:
            with contextlib.suppress(OSError):
                self.closing(self.interrupted)
        raise Hangup

    def interrupt(self, reason: str) -> None:
        """Called from another thread: make the pending read end, so the session says why and closes."""
        self.interrupted = reason
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown: SSLSocket's would also drop the TLS layer.
            socket.socket.shutdown(self.connection, socket.SHUT_RD)

    # -- writing ------------------------------------------------------------------------------

    def send_lines(self, text: str) -> None:
        """Write reply text (CRLF ends included) in one call; trace its lines with --verbose."""
        if self.wire_log is not None:  # on the hot path: skip the loop when nobody watches
            for line in text.splitlines():
                self.trace("S:", line)
        self.connection.sendall(text.encode("utf-8", "replace"))

    def trace(self, direction: str, line: str, *, credential: bool = False) -> None:
        """With --verbose, log a line of the dialogue ("C:" or "S:"), masked by the session's WireLog.

        credential: the line answers the server's challenge in a login.
        """
        if self.wire_log is None:
            return
        if direction == "C:":
            self.wire_log.client(line, credential=credential)
        else:
            self.wire_log.server(line)

    def trace_message(self, direction: str, line: str) -> None:
        """With --verbose, log a line of a message going direction (DATA, RETR)."""
        if self.wire_log is not None:
            self.wire_log.message(direction, line)

    def message_tracer(self, direction: str) -> MessageTrace | None:
        """With --verbose or --web, what logs the lines of a message going direction; else None."""
        if self.wire_log is None:
            return None
        finished = functools.partial(self.wire_log.message_end, direction)
        return MessageTrace(functools.partial(self.trace_message, direction), finished)

    def send_stored(self, pieces: Iterable[bytes]) -> None:
        """Send a stored message (LF ends) as a dot-stuffed block: CRLF ends, leading dots doubled, then "."

        SMTP's RETR and POP3's RETR and TOP send messages this way (RFC 5321 4.5.2, RFC 1939 3).
        """
        trace = self.message_tracer("S:")
        lines = octets = 0
        for piece in dot_stuffed(self.read_stored(pieces)):
            if trace:
                lines, octets = lines + piece.count(b"\n"), octets + len(piece)
                if trace.lines_left:
                    trace.lines(piece)
            self.connection.sendall(piece)
        if trace:
            trace.end(lines - 1, octets - 3)  # not the final ".": as DATA counts (RFC 5321 4.5.2)

    def read_stored(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """The pieces of a stored message; a disk error ends the session with the closing reply."""
        iterator = iter(pieces)
        while True:
            try:
                piece = next(iterator)
            except StopIteration:
                return
            except OSError:
                # Mid-message there is no way to answer with an error and go on: the block was promised.
                log.exception("%s could not read a stored message", self.peer)
                self.closing("Local error in processing")
                raise Hangup from None
            yield piece

    # -- TLS (RFC 3207, RFC 2595) ------------------------------------------------------------

    def offers_starttls(self) -> bool:
        """True if STARTTLS (POP3: STLS) can work in this session: TLS is configured and not on yet."""
        return self.config.tls_context is not None and not self.tls_active

    def needs_tls_first(self) -> bool:
        """True while --require-tls keeps logins out of a session not yet under TLS."""
        return self.config.require_tls and not self.tls_active

    def start_tls(self) -> None:
        """Wrap the connection in TLS and forget everything said before (RFC 3207 4.2)."""
        context = self.config.tls_context
        assert context is not None
        try:
            with self.time_limit(self.idle_timeout()):
                # wrap_socket() moves the descriptor to a new socket, out of the watchdog's reach
                # (interrupt() shuts the old one down): the handshake gets Python's timeout instead.
                self.connection.settimeout(self.idle_timeout())
                self.connection = context.wrap_socket(self.connection, server_side=True)
                self.connection.settimeout(None)  # blocking again, as setup() made it
        except (OSError, ValueError) as error:
            log.warning("%s TLS handshake failed: %s", self.peer, error)
            raise Hangup from None
        # Plaintext the client pipelined after STARTTLS stays in the old buffer: dropped
        # (RFC 3207 5, and the STARTTLS command injection attack of CVE-2011-0411).
        with contextlib.suppress(OSError):
            self.rfile.close()
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        self.tls_active = True
        self.account = None  # RFC 3207 4.2: a login before TLS is forgotten too
        self.tls_started()


class TimeLimit:
    """The context manager of LineHandler.time_limit().

    A class rather than a @contextmanager generator: it runs around every command
    line read, and costs a third of what a generator does there.
    """

    __slots__ = ("end", "idle", "seconds", "session")

    def __init__(self, session: LineHandler, seconds: float, idle: float | None = None) -> None:
        self.session = session
        self.seconds = seconds
        self.idle = idle  # the most one wait inside the block may take (see refresh)
        self.end = 0.0

    def __enter__(self) -> TimeLimit:
        now = time.monotonic()
        self.end = now + self.seconds
        self.session.deadline = self.end if self.idle is None else min(self.end, now + self.idle)
        return self

    def refresh(self) -> None:
        """A new wait for the client starts: it may take idle seconds, and never past the block's end."""
        self.session.deadline = self.end if self.idle is None else min(self.end, time.monotonic() + self.idle)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        session = self.session
        session.deadline = None
        if kind is not None and issubclass(kind, TimeoutError):
            session.interrupted = session.interrupted or "Timeout"
            session.hang_up()
