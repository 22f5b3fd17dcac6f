"""A menu-driven terminal client for the teaching SMTP server.

Run it next to ``python server.py``; with ``--trace`` every line on the
wire is printed, so a class can watch what each menu choice means in SMTP::

    $ python client.py --trace
    S: 220 localhost Service ready
    220 localhost Service ready
    Username: alice
    Password:
    C: EHLO laptop
    S: 250-localhost Hello laptop
    S: 250-AUTH PLAIN LOGIN
    ...
    S: 250 HELP
    C: AUTH PLAIN ********
    S: 235 2.7.0 Authentication successful
    Logged in as alice.

The standard commands come from ``smtplib``: ``MailClient`` only adds the
server's two extra verbs, RETR and DELE, and the ``C:``/``S:`` trace.  The
menu below it prompts, calls one ``MailClient`` method and prints the
result; it never speaks the protocol itself.

Piped input works too: when stdin is not a terminal every answer, the
password included, is read line by line::

    printf 'alice\\nwonderland\\n4\\n' | python client.py
"""

import argparse
import email
import email.policy
import email.utils
import getpass
import io
import itertools
import re
import smtplib
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info < (3, 11):  # noqa: UP036  (for whoever runs an older Python: one line, not a traceback)
    sys.exit(f"client.py needs Python 3.11 or newer; this is Python {sys.version.split()[0]} (python.org has it)")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2525
# Seconds to wait for the server on each socket operation, so a server that
# hangs ends the session with a message instead of freezing the terminal.
SOCKET_TIMEOUT = 60
# Seconds to wait for the 220 greeting: a server greets at once, and a TLS
# port (SMTPS) stays silent, waiting for the client to start TLS.
GREETING_TIMEOUT = 10
# Seconds to wait for the answer to QUIT when leaving.
QUIT_TIMEOUT = 2
MAX_LOGIN_ATTEMPTS = 3
# The server's lines are at most 1001 octets (1000 + a stuffed dot);
# smtplib allows replies of 8192, and so do we for RETR lines.
MAX_LINE = 8192
# A long message in the trace shows this many lines, then how many were cut.
TRACE_BODY_LINES = 10
TRACE_MASK = "********"
CLOSED_NOTE = "(the server closed the connection)"

# Reply codes the client branches on (RFC 5321 4.2.3, RFC 4954 6).
OK = 250
START_MAIL_INPUT = 354
AUTH_CHALLENGE = 334
AUTH_FAILED = 535
SERVICE_NOT_AVAILABLE = 421
TEMPORARY_AUTH_FAILURE = 454  # RFC 4954 6: e.g. too many failed logins

# RFC 5321 4.1.2: Mailbox = Local-part "@" Domain.  We accept the common
# Dot-string form; quoted local parts and address literals are not needed
# in a classroom and would only make the error message harder to write.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, the angle brackets included

# The server's 454 says why and how long to wait: "4.7.0 Too many failed logins for this name, try again in 42 s".
RETRY_AFTER = re.compile(r"(?:\d\.\d{1,3}\.\d{1,3} )?(?P<reason>.+?), try again in (?P<seconds>\d+) ?s\b")

# X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH (OpenSSL's x509_vfy.h).
NAME_MISMATCH = {62, 64}
# What OpenSSL reports when a "TLS" server answers in plain text (the reason changed across versions).
NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"}

# Control characters other than tab and newline could drive the terminal
# (escape sequences hidden in a message), so retrieved text shows them as "?".
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

Trace = Callable[[str], None]


class MailClient(smtplib.SMTP):
    """smtplib.SMTP plus the server's RETR and DELE verbs and a C:/S: trace.

    Pass ``trace`` (e.g. ``print``) to see every line exchanged.  Every
    line sent goes through ``send`` and every reply through ``getreply``
    (RETR's messages through ``_read_block``), so only those trace.
    ``last_reply`` keeps the latest (code, text), so callers can report what
    the server said and the trace knows what a line sent is answering.
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        *,
        trace: Trace | None = None,
        timeout: float = SOCKET_TIMEOUT,
        **options: Any,
    ) -> None:
        """Connect to host:port if host is given, as smtplib.SMTP does; options go to smtplib."""
        # Set before connecting: smtplib reads the greeting through getreply.
        self.trace = trace
        self.last_reply: tuple[int, bytes] = (0, b"")
        # socket.getfqdn(), smtplib's default EHLO name, can stall on DNS.
        super().__init__(host, port, local_hostname=socket.gethostname(), timeout=timeout, **options)

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> tuple[int, bytes]:
        """Connect and read the greeting, as smtplib does, but wait at most GREETING_TIMEOUT for it.

        Raise NoGreetingError if the server stays silent (a TLS port, when we speak plain text).
        """
        timeout, self.timeout = self.timeout, min(self.timeout, GREETING_TIMEOUT)
        try:
            reply = super().connect(host, port, source_address)
        except smtplib.SMTPServerDisconnected as error:
            if isinstance(error.__context__, TimeoutError):  # smtplib's getreply met the socket timeout
                raise NoGreetingError(f"No greeting from {host}:{port} within {self.timeout:g} s") from error
            raise
        finally:
            self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)
        return reply

    def send(self, s: str | bytes) -> None:
        """Send ``s`` to the server, tracing it first."""
        if self.trace is not None:
            wire = s.encode(self.command_encoding) if isinstance(s, str) else s
            for line in self._client_lines(wire):
                self.trace(line)
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        """Read one reply; raise SMTPServerDisconnected if the server is gone.

        RFC 5321 3.8: a 421 means the server is closing the channel,
        whatever command it answers, so it is treated as a disconnect here
        rather than in each caller.
        """
        try:
            code, text = super().getreply()
        except smtplib.SMTPServerDisconnected:
            self._trace_note(CLOSED_NOTE)
            raise
        self.last_reply = (code, text)
        if self.trace is not None:
            for line in reply_lines(code, text):
                self.trace(f"S: {line}".rstrip())
        if code == SERVICE_NOT_AVAILABLE:
            self.close()
            raise smtplib.SMTPServerDisconnected(format_reply(code, text))
        return code, text

    def retr(self) -> list[bytes]:
        """Return every message the logged-in user sent, oldest first.

        The server answers ``250 N messages follow`` and then sends N
        blocks like DATA: CRLF lines, dot-stuffed, each ended by ``.``.
        Raise SMTPResponseException if the server refuses.
        """
        count = self._count_reply("RETR")
        return [self._read_block() for _ in range(count)]

    def count(self) -> int:
        """Return how many messages RETR sends, reading past them without keeping or tracing them.

        The protocol has no command that only counts, so this is RETR; the
        trace shows a note instead of messages that are not shown anyway.
        """
        count = self._count_reply("RETR")
        for _ in range(count):
            for _line in self._block_lines():
                pass
        if count:
            self._trace_note(f"({plural(count, 'message')} counted, not shown)")
        return count

    def dele(self) -> int:
        """Delete all the logged-in user's messages; return how many went."""
        return self._count_reply("DELE")

    def _count_reply(self, verb: str) -> int:
        """Send ``verb``; return the count that starts its 250 reply."""
        code, text = self.docmd(verb)
        words = text.split()
        if code != OK or not words or not words[0].isdigit():
            raise smtplib.SMTPResponseException(code, text)
        return int(words[0])

    def _read_block(self) -> bytes:
        """Read one dot-terminated message from the socket, unstuffed."""
        wire_lines = list(self._block_lines())
        if self.trace is not None:
            shown = [decode(line.rstrip(b"\r\n")) for line in wire_lines]
            for line in shorten("S:", [*shown, "."]):
                self.trace(line)
        # RFC 5321 4.5.2: the sender doubled a leading dot; undo it.
        return b"".join(line[1:] if line.startswith(b".") else line for line in wire_lines)

    def _block_lines(self) -> Iterator[bytes]:
        """Yield the lines of one dot-terminated block as sent, up to the final "." line."""
        while (line := self._read_line()) != b".\r\n":
            yield line

    def _read_line(self) -> bytes:
        """Read one line of a RETR block; raise if the server is gone."""
        try:
            line = self.file.readline(MAX_LINE + 1)
        except OSError as error:
            raise self._gone(f"Connection unexpectedly closed: {error}") from error
        if not line:
            raise self._gone("Connection unexpectedly closed")
        if len(line) > MAX_LINE:
            self.close()
            raise smtplib.SMTPResponseException(500, b"Line too long.")
        return line

    def _client_lines(self, wire: bytes) -> list[str]:
        """Return the trace lines for bytes about to be sent."""
        code = self.last_reply[0]
        if code == START_MAIL_INPUT:
            # smtplib sends the whole dot-stuffed message in one go.
            return shorten("C:", decode(wire).removesuffix("\r\n").split("\r\n"))
        if code == AUTH_CHALLENGE:
            return [f"C: {TRACE_MASK}"]  # the answer to a 334 is a credential
        command = decode(wire).removesuffix("\r\n")
        return [f"C: {command_for_trace(command)}"]

    def _gone(self, reason: str) -> smtplib.SMTPServerDisconnected:
        """Close our end, as smtplib's getreply does; return what to raise."""
        self.close()
        self._trace_note(CLOSED_NOTE)
        return smtplib.SMTPServerDisconnected(reason)

    def _trace_note(self, note: str) -> None:
        """Trace something that is not a line on the wire, indented."""
        if self.trace is not None:
            self.trace(f"   {note}")


class MailClientTLS(MailClient, smtplib.SMTP_SSL):
    """MailClient speaking TLS from the first byte (SMTPS, RFC 8314); pass context=."""


class NoGreetingError(smtplib.SMTPServerDisconnected):
    """The server accepted the connection but sent no 220 within GREETING_TIMEOUT."""


def command_for_trace(command: str) -> str:
    """Return ``command`` with its verb in capitals and any AUTH payload masked.

    smtplib sends verbs in lower case (``mail FROM:<...>``); the seed and
    RFC 5321 write them in capitals, and SMTP verbs are case-insensitive.
    """
    verb, space, argument = command.partition(" ")
    verb = verb.upper()
    if verb == "AUTH":
        mechanism, space2, payload = argument.partition(" ")
        if payload:
            argument = f"{mechanism}{space2}{TRACE_MASK}"
    return f"{verb}{space}{argument}"


def reply_lines(code: int, text: bytes) -> list[str]:
    """Rebuild the wire lines of a reply smtplib has joined with newlines."""
    lines = decode(text).split("\n")
    last = len(lines) - 1
    return [f"{code}{'-' if i < last else ' '}{line}" for i, line in enumerate(lines)]


def shorten(direction: str, lines: list[str]) -> list[str]:
    """Return trace lines for a message: its header, TRACE_BODY_LINES of
    its body, a note of how many lines were left out, and the final "."."""
    message, final = lines[:-1], lines[-1:]
    # The header teaches the format, so all of it is kept; RFC 5322 2.1: an
    # empty line ends it.  Without one, the whole message counts as body.
    header_end = message.index("") + 1 if "" in message else 0
    keep = header_end + TRACE_BODY_LINES
    traced = [f"{direction} {line}".rstrip() for line in message[:keep]]
    if len(message) > keep:
        traced.append(f"   ({plural(len(message) - keep, 'more line')} not shown)")
    return [*traced, *(f"{direction} {line}" for line in final)]


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def format_reply(code: int, text: bytes) -> str:
    return f"{code} {decode(text)}".replace("\n", " / ")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- The terminal side: prompts, the session, the menu ---------------------

RECONNECTED = "(reconnected: the server had closed the idle connection)"

Connection = TypeVar("Connection")
Result = TypeVar("Result")


class ClientError(Exception):
    """What ends the client; its message is one line that says what to do next."""


class CannotConnectError(ClientError):
    """No usable session at HOST:PORT: nobody there, not SMTP as asked (TLS or not), or no login offered."""


class LoginFailedError(ClientError):
    """The login cannot go on (too many attempts, or refused outright)."""


class ReconnectFailedError(ClientError):
    """The server had closed the connection, and logging in again failed."""


def ask(prompt: str) -> str:
    """Return one answer; raise EOFError on Ctrl-D or end of input."""
    return input(prompt)


def ask_secret(prompt: str) -> str:
    """Return a password, without echo when a person is typing it.

    getpass would open /dev/tty even when stdin is a pipe (and warn when
    there is no terminal), so scripts get plain line reading instead.
    """
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return input(prompt)


def is_address(address: str) -> bool:
    """Return True if ``address`` is a plain name@domain SMTP mailbox."""
    local_part = address.rpartition("@")[0]
    return ADDRESS.fullmatch(address) is not None and len(local_part) <= MAX_LOCAL_PART and len(address) + 2 <= MAX_PATH


def reconnecting(
    operation: Callable[[Connection], Result],
    connection: Callable[[], Connection],
    reconnect: Callable[[], Connection],
    gone: tuple[type[Exception], ...],
) -> Result:
    """Run operation on connection(); if it finds the server gone (an error in gone), run it once more on
    reconnect(). Nothing the user typed is asked again: the operation holds it."""
    try:
        return operation(connection())
    except gone:
        pass
    return operation(reconnect())


class Account:
    """The user's account at one server: how to reach it, the connection, and how to end it politely.

    After a login the credentials stay in this object, in memory only (never
    written anywhere), so that run() can log in again when the server has
    closed an idle connection. A menu action over another connection (POP3)
    can do the same: reconnecting() with its own connect and self.credentials.
    """

    def __init__(
        self,
        host: str,
        port: int,
        trace: Trace | None,
        tls: ssl.SSLContext | None = None,
        *,
        implicit_tls: bool = False,
        cafile: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.trace = trace
        self.tls = tls  # None: plain text; else STARTTLS, or TLS from the start with implicit_tls
        self.implicit_tls = implicit_tls
        self.cafile = cafile  # named in the advice when the certificate is not trusted
        self.client: MailClient | None = None
        self.user = ""
        self.credentials: tuple[str, str] | None = None  # (user, password) once logged in
        self.failed_logins = 0
        self.server_name = host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, *, show_greeting: bool = False) -> MailClient:
        """Open a fresh connection: the greeting, STARTTLS if asked, EHLO; return the client.

        Raise CannotConnectError with one line that says what to do instead.
        """
        try:
            client = self._open(self.trace, show_greeting=show_greeting)
        except ClientError:
            raise
        except ssl.SSLCertVerificationError as error:
            raise CannotConnectError(self._untrusted(error)) from error
        except (OSError, smtplib.SMTPException) as error:  # ssl.SSLError is an OSError
            raise CannotConnectError(self._unreachable(error)) from error
        self.client = client
        return client

    def _open(self, trace: Trace | None, *, show_greeting: bool = False) -> MailClient:
        if self.implicit_tls:
            client: MailClient = MailClientTLS(self.host, self.port, trace=trace, context=self.tls)
        else:
            client = MailClient(self.host, self.port, trace=trace)
        # RFC 5321 4.3.1: the greeting starts with the server's name.
        self.server_name = decode(client.last_reply[1]).split(" ", 1)[0] or self.host
        if show_greeting:
            print(format_reply(*client.last_reply))
        try:
            client.ehlo()
            if self.tls is not None and not self.implicit_tls:
                client.starttls(context=self.tls)  # raises SMTPNotSupportedError if not offered
                client.ehlo()  # RFC 3207 4.2: what was said before TLS is forgotten
            if not client.has_extn("auth"):
                raise CannotConnectError(self._no_login(client))
        except BaseException:
            client.close()
            raise
        return client

    def _unreachable(self, error: Exception) -> str:
        """One line for a connection that could not be made, or not made as asked."""
        if isinstance(error, NoGreetingError):
            instead = "use --tls instead of --starttls" if self.tls is not None else "add --tls"
            return f"{error} — is this the TLS port? Then {instead}."
        if isinstance(error, ssl.SSLError) and error.reason in NOT_TLS:
            return f"{self.address} does not speak TLS — drop --tls, or use --starttls."
        if isinstance(error, smtplib.SMTPNotSupportedError):  # from starttls()
            return f"{self.address} does not offer STARTTLS — drop --starttls."
        if isinstance(error, socket.gaierror):
            return f"Unknown host {self.host!r}: check the name or address after --host."
        if isinstance(error, ConnectionRefusedError):
            return f"Cannot connect to {self.address} — is the server running?"
        check = f"check --host, and that no firewall blocks port {self.port}"
        if isinstance(error, TimeoutError):
            return f"No answer from {self.address} — {check}."
        if not isinstance(error, smtplib.SMTPException):  # EHOSTUNREACH (a firewall may answer so), ENETUNREACH...
            return f"Cannot connect to {self.address}: {error.strerror or error} — {check}."
        return error_message(error)

    def _no_login(self, client: MailClient) -> str:
        if client.has_extn("starttls"):
            return "The server accepts logins only over TLS: add --starttls --cafile cert.pem."
        return f"{self.address} offers no login (no AUTH in its EHLO reply): is it this course's server?"

    def _untrusted(self, error: ssl.SSLCertVerificationError) -> str:
        """One line for a certificate that failed the check: whom to trust, or which name to use."""
        if error.verify_code in NAME_MISMATCH:
            names = self._certificate_names()
            if names:
                return (
                    f"The server's certificate is for {', '.join(names)}, not {self.host}: "
                    f"use --host {names[0]}, or a certificate made for {self.host}."
                )
            return f"The server's certificate is not made for {self.host}: {error.verify_message}."
        if self.cafile:
            return (
                f"The server's certificate is not trusted by {self.cafile} ({error.verify_message}): "
                "is it the cert.pem your teacher handed out for this server?"
            )
        return "The server's certificate is not trusted: add --cafile cert.pem (the file your teacher handed out)."

    def _certificate_names(self) -> list[str]:
        """The names in the server's certificate, read over a connection that trusts it but skips the name check."""
        assert self.tls is not None
        self.tls.check_hostname = False
        try:
            client = self._open(None)
            certificate = client.sock.getpeercert() if isinstance(client.sock, ssl.SSLSocket) else None
            client.close()
        except (ClientError, OSError, smtplib.SMTPException):
            return []
        finally:
            self.tls.check_hostname = True
        alternative_names = (certificate or {}).get("subjectAltName", ())
        return [value for kind, value in alternative_names if kind in ("DNS", "IP Address")]

    def log_in(self, user: str | None) -> None:
        """Ask for credentials until the server accepts them.

        The server closes the connection after a 535, so every retry opens
        a new one.  Raise LoginFailedError after MAX_LOGIN_ATTEMPTS.
        """
        client = self.connect(show_greeting=True)
        for attempt in range(MAX_LOGIN_ATTEMPTS):
            if attempt > 0 and client.sock is None:  # hung up after the 535
                client = self.connect()
            name = user or ask("Username: ")
            password = ask_secret("Password: ")
            if self._try_login(client, name, password):
                self.user, self.credentials = name, (name, password)
                print(f"Logged in as {name}.")
                return
        raise LoginFailedError(f"Login failed {MAX_LOGIN_ATTEMPTS} times; giving up.")

    def _try_login(self, client: MailClient, name: str, password: str) -> bool:
        """Return True if the server accepts ``name`` and ``password``; count and say why not."""
        try:
            client.login(name, password)
            return True
        except UnicodeEncodeError:
            # smtplib encodes AUTH responses as ASCII before sending anything.
            reason = "smtplib can only send ASCII usernames and passwords"
        except smtplib.SMTPServerDisconnected:
            # After our 535 the server hangs up, and smtplib.login, trying the
            # next mechanism, meets a closed socket: a disconnect, not an
            # SMTPAuthenticationError.  Only the 535 tells the two apart.
            if client.last_reply[0] != AUTH_FAILED:
                raise
            reason = "wrong username or password"
        except smtplib.SMTPResponseException as error:
            if error.smtp_code != AUTH_FAILED:  # e.g. 454, too many failures
                raise LoginFailedError(login_refusal(error.smtp_code, error.smtp_error)) from error
            reason = "wrong username or password"
        self.failed_logins += 1
        print(f"Login failed: {reason}.")
        return False

    def run(self, operation: Callable[[MailClient], Result]) -> Result:
        """Carry out operation on the connection. If the server has closed it meanwhile (idle timeout,
        restart), log in again with this session's credentials and carry it out on the new one."""
        return reconnecting(operation, self.connection, self.reconnect, (smtplib.SMTPServerDisconnected,))

    def connection(self) -> MailClient:
        """The open connection; raise SMTPServerDisconnected if there is none."""
        if self.client is None or self.client.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        return self.client

    def reconnect(self) -> MailClient:
        """Open a new connection and log in as before, saying so in one line; raise ReconnectFailedError."""
        try:
            if self.credentials is None:
                raise LoginFailedError("not logged in")
            client = self.connect()
            if not self._try_login(client, *self.credentials):
                raise LoginFailedError("the server no longer accepts this session's password")
        except (ClientError, smtplib.SMTPException, OSError) as error:
            raise ReconnectFailedError(
                f"The server closed the connection, and reconnecting failed: {error_message(error)}"
            ) from error
        print(RECONNECTED)
        return client

    def close(self) -> None:
        """Send QUIT if still connected; a server already gone is fine."""
        client, self.client = self.client, None
        if client is None or client.sock is None:
            return
        try:
            client.sock.settimeout(QUIT_TIMEOUT)  # after a Ctrl-C the server may be the one not answering
            code, text = client.quit()
            print(format_reply(code, text))
        except (smtplib.SMTPException, OSError):
            client.close()


def login_refusal(code: int, text: bytes) -> str:
    """One line for a refused login that is not a wrong password: e.g. 454, wait and try again."""
    wait = RETRY_AFTER.match(decode(text))
    if code == TEMPORARY_AUTH_FAILURE and wait:
        reason = wait["reason"]
        return f"Login refused: {reason[:1].lower()}{reason[1:]}; try again in {wait['seconds']} s."
    return f"Login refused: {format_reply(code, text)}"


# --- Menu actions: each prompts, calls one MailClient method, prints. -------
# Each returns True to show the menu again, False to end the session.


def send_mail(account: Account) -> bool:
    """Menu 1: build a message from the answers and send it; Ctrl-C while writing it gives it up."""
    try:
        sender, recipients, message = compose(account)
    except KeyboardInterrupt:
        print()
        print("Message not sent.")
        return True
    # RFC 6152: 8-bit text (UTF-8 written as is) must be declared in MAIL.
    options = ["BODY=8BITMIME"] if message["Content-Transfer-Encoding"] == "8bit" else []
    try:
        refused = account.run(lambda client: client.send_message(message, sender, recipients, mail_options=options))
    except smtplib.SMTPRecipientsRefused as error:
        print("Not sent: the server refused every recipient.")
        print_refused(error.recipients)
        return True
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
        print(f"Not sent: {format_reply(error.smtp_code, error.smtp_error)}")
        return True
    except (ReconnectFailedError, smtplib.SMTPServerDisconnected, KeyboardInterrupt):
        keep_unsent(message)  # what the student typed must not be lost with the connection (or a Ctrl-C)
        raise
    print(f"Sent: {format_reply(*account.connection().last_reply)}")
    if refused:
        print("These recipients were refused:")
        print_refused(refused)
    return True


def compose(account: Account) -> tuple[str, list[str], EmailMessage]:
    """Ask for sender, recipients, subject and text; return them with the message built from them."""
    default = default_sender(account.user, account.server_name)
    sender = ask_address(f"From [{default}]: " if default else "From: ", default)
    recipients = ask_recipients()
    subject = ask("Subject: ")
    print(f"Type the message; end it with a line holding only '.' (or {end_of_input_key()}).")
    return sender, recipients, build_message(sender, recipients, subject, read_body())


def default_sender(user: str, server_name: str) -> str:
    """user@<the server's name>; user@localhost if that name is no domain (a machine called my_laptop)."""
    for domain in (server_name, "localhost"):
        if is_address(f"{user}@{domain}"):
            return f"{user}@{domain}"
    return ""


def end_of_input_key() -> str:
    """What ends input at this terminal: Ctrl-D, or on Windows Ctrl-Z and Enter."""
    return "Ctrl-Z, Enter" if sys.platform == "win32" else "Ctrl-D"


def ask_address(prompt: str, default: str) -> str:
    """Ask until the answer (or the default, for an empty one) is an address."""
    while True:
        address = ask(prompt).strip() or default
        if is_address(address):
            return address
        print(not_an_address([address]))


def ask_recipients() -> list[str]:
    """Ask until every comma-separated recipient is an address."""
    while True:
        recipients = [part.strip() for part in ask("To (comma-separated): ").split(",") if part.strip()]
        invalid = [address for address in recipients if not is_address(address)]
        if recipients and not invalid:
            return recipients
        if not recipients:
            print("At least one recipient is needed.")
        else:
            print(not_an_address(invalid))


def not_an_address(answers: list[str]) -> str:
    return f"Not an email address: {', '.join(map(repr, answers))}. Write it as name@domain, e.g. bob@example.org."


def read_body() -> str:
    """Read body lines up to a lone "." or the end of input (Ctrl-D)."""
    lines: list[str] = []
    while True:
        try:
            line = ask("")
        except EOFError:
            print()
            break
        if line == ".":
            break
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def build_message(sender: str, recipients: list[str], subject: str, body: str) -> EmailMessage:
    """Return the message, headers encoded as RFC 2047 needs for UTF-8."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=True)
    # make_msgid's default domain is socket.getfqdn(), which can stall.
    message["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(body)
    return message


def print_refused(refused: dict[str, tuple[int, bytes]]) -> None:
    for address, (code, text) in refused.items():
        print(f"  {address}: {format_reply(code, text)}")


def keep_unsent(message: EmailMessage) -> None:
    """Save a message that could not be sent as unsent-<date-time>.eml in the current folder; say where."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in itertools.count(1):
        path = Path(f"unsent-{stamp}.eml" if attempt == 1 else f"unsent-{stamp}-{attempt}.eml")
        try:
            with open(path, "xb") as file:  # x: never overwrite an earlier one
                file.write(message.as_bytes())
        except FileExistsError:
            continue
        except OSError as error:
            print(f"Message not sent, and it could not be saved ({error}); here it is:")
            print(message.as_string())
            return
        print(f"Message not sent; it is saved in {path.resolve()}")
        return


def retrieve_mail(account: Account) -> bool:
    """Menu 2: show every message this user sent, decoded."""
    messages = account.run(MailClient.retr)
    if not messages:
        print("No messages.")
        return True
    print(f"You have {plural(len(messages), 'message')}.")
    for number, raw in enumerate(messages, start=1):
        print()
        print(f"--- Message {number} ---")
        print(describe_message(raw))
    return True


def describe_message(raw: bytes) -> str:
    """Return the headers a reader wants and the decoded text body."""
    # RETR sends CRLF lines; the parser would keep the CR in the body text.
    unix_text = raw.replace(b"\r\n", b"\n")
    try:
        shown = describe_parsed(email.message_from_bytes(unix_text, policy=email.policy.default))
    except Exception:
        # The email package can trip over an odd message in many ways; a
        # message shown raw is better than a session ended by a traceback.
        shown = decode(unix_text)
    return _CONTROL.sub("?", shown)


def describe_parsed(message: EmailMessage) -> str:
    """Return the Date, From, To and Subject, the text, and the other parts' names."""
    headers = [f"{name + ':':<9}{message.get(name, '')}" for name in ("Date", "From", "To", "Subject")]
    body_part = message.get_body(preferencelist=("plain",))
    body = text_of(body_part) if body_part is not None else "(no text part)\n"
    others = [describe_part(part) for part in message.walk() if is_other_part(part, body_part)]
    return "\n".join([*headers, "", body.rstrip("\n"), *others])


def text_of(part: EmailMessage) -> str:
    """Return the decoded text (quoted-printable, base64, any charset)."""
    try:
        return part.get_content()
    except (LookupError, UnicodeError):
        # An unknown or wrong charset: show the bytes as best we can.
        return decode(part.get_payload(decode=True) or b"")


def is_other_part(part: EmailMessage, body_part: EmailMessage | None) -> bool:
    """Return True for a leaf part that is not the body shown."""
    return not part.is_multipart() and part is not body_part


def describe_part(part: EmailMessage) -> str:
    """Name a MIME part that is not shown, instead of dumping it."""
    name = part.get_filename()
    return f"[{part.get_content_type()} part{f' {name!r}' if name else ''} not shown]"


def delete_mail(account: Account) -> bool:
    """Menu 3: after a yes, delete all this user's messages."""
    count = account.run(MailClient.count)
    if count == 0:
        print("No messages.")
        return True
    if ask(f"Delete all {plural(count, 'message')}? [y/N] ").strip().lower() not in ("y", "yes"):
        print("Nothing deleted.")
        return True
    print(f"Deleted {plural(account.run(MailClient.dele), 'message')}.")
    return True


def quit_session(account: Account) -> bool:
    """Menu 4: QUIT and show the server's goodbye."""
    account.close()
    return False


MENU: dict[str, tuple[str, Callable[[Account], bool]]] = {
    "1": ("Send a message", send_mail),
    "2": ("Retrieve my messages", retrieve_mail),
    "3": ("Delete my messages", delete_mail),
    "4": ("Quit", quit_session),
}


def run_menu(account: Account) -> None:
    """Show the menu and run choices until Quit."""
    keep_going = True
    while keep_going:
        print()
        for key, (label, _) in MENU.items():
            print(f"  {key}. {label}")
        action = choose_action()
        try:
            keep_going = action(account)
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPResponseException as error:
            print(f"The server answered: {format_reply(error.smtp_code, error.smtp_error)}")
        except smtplib.SMTPException as error:
            print(f"Error: {error}")


def choose_action() -> Callable[[Account], bool]:
    """Ask until the answer is one of the MENU keys."""
    while True:
        choice = ask("Choose: ").strip()
        if choice in MENU:
            return MENU[choice][1]
        keys = list(MENU)
        print(f"Please choose {', '.join(keys[:-1])} or {keys[-1]}.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Menu client for the teaching SMTP server.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server address (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--user", help="log in as USER instead of asking")
    parser.add_argument("--trace", action="store_true", help="print every protocol line as C:/S:")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="switch to TLS with STARTTLS before logging in")
    tls.add_argument("--tls", action="store_true", help="TLS from the start (the server's --tls-port)")
    parser.add_argument("--cafile", help="trust this certificate (PEM), e.g. the server's self-signed one")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the client; return the exit status."""
    args = build_parser().parse_args(argv)
    # A terminal that cannot show a character, or input that is not UTF-8,
    # must not end the session in a traceback.
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    if not 0 < args.port < 65536:
        print(f"Port {args.port} is out of range: a port is a number from 1 to 65535.", file=sys.stderr)
        return 2
    try:
        tls = ssl.create_default_context(cafile=args.cafile) if args.starttls or args.tls else None
    except (OSError, ssl.SSLError) as error:
        print(f"Cannot use --cafile {args.cafile}: {error}", file=sys.stderr)
        return 2
    trace = print if args.trace else None
    account = Account(args.host, args.port, trace, tls, implicit_tls=args.tls, cafile=args.cafile)
    try:
        account.log_in(args.user)
        run_menu(account)
    except EOFError:  # Ctrl-D, or the end of a script
        print()
        if account.failed_logins and not account.user:  # a script whose login failed must not look like a success
            print("Not logged in: the input ended after a failed login.", file=sys.stderr)
            return 1
    except KeyboardInterrupt:  # Ctrl-C
        print()
        return 130
    except (ClientError, smtplib.SMTPException, OSError) as error:
        print(error_message(error), file=sys.stderr)
        return 1
    finally:
        account.close()  # QUIT if still connected
    return 0


def error_message(error: Exception) -> str:
    """One line that says what went wrong, for the errors that end the client."""
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return f"Connection closed by server: {error}"
    if isinstance(error, smtplib.SMTPConnectError):
        return f"The server refused the connection: {format_reply(error.smtp_code, error.smtp_error)}"
    if isinstance(error, smtplib.SMTPException):  # anything else smtplib can raise
        return f"SMTP error: {error}"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error}"
    if isinstance(error, ClientError):
        return str(error)
    return f"Connection failed: {error}"  # any other OSError


if __name__ == "__main__":
    sys.exit(main())
