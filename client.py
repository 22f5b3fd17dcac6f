"""A menu-driven terminal client for the teaching SMTP server.

Run it next to ``server.py``; with ``--trace`` every line on the wire is
printed as it was sent, so a class can watch what each menu choice means in SMTP::

    $ python3 client.py --trace
    S: 220 localhost Service ready
    C: ehlo laptop
    S: 250-localhost Hello laptop
    S: 250-AUTH PLAIN LOGIN
    ...
    S: 250 HELP
    Username: alice
    Password:
    C: AUTH PLAIN ********
    S: 235 2.7.0 Authentication successful
    Logged in as alice.

The standard commands come from ``smtplib``: ``MailClient`` only adds the
server's two extra verbs, RETR and DELE, and the ``C:``/``S:`` trace.  The
inbox is read with ``poplib`` (``InboxClient``, its lines traced as
``POP3 C:``/``POP3 S:``).  ``Account`` holds the connections and never
prints; the menu below it prompts, calls one method and prints the result;
it never speaks the protocol itself.

Piped input works too: when stdin is not a terminal every answer, the
password included, is read line by line::

    printf 'alice\\nwonderland\\n5\\n' | python3 client.py

``python3 client.py --raw`` (``--raw --pop3`` for POP3) is the other way
round: the student types the protocol, and each reply is explained under it
(``RawConsole`` reads the terminal, ``ConsoleSession`` the connection, and
``REPLY_MEANINGS`` holds the explanations; docs/console.md shows a session).

``python client.py --check`` grades any SMTP server against the seed, a table of
PASS/FAIL/SKIP whose FAIL lines come from those same explanations, and
``--check-all FILE`` a class's servers (``CHECKS`` is the table of checks; docs/coursework.md).

Contents (each section keeps its own constants and uses only what the sections above it define):

    1. Text: the trace's lines, masked secrets, replies as one line
    2. The protocol: smtplib and poplib, traced
    3. When it fails: the errors that end a step, and the one-line advice for each
    4. The account: the connections and the login, no printing
    5. The terminal: prompts, the login, reconnecting, goodbye
    6. The menu: each action prompts, calls the account, prints
    7. The raw console: what each reply means
    8. The raw console: the two dialects and the connection
    9. The raw console: the terminal
    10. The conformance checker (--check): the seed's rules as a table of checks
    11. The checker's report: the table, --json, --check-all, and their options
    12. The command line
"""

import argparse
import base64
import contextlib
import csv
import email
import email.policy
import email.utils
import enum
import getpass
import io
import itertools
import json
import os
import poplib
import re
import select
import signal
import smtplib
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, TextIO, TypeVar

if sys.version_info < (3, 11):  # noqa: UP036  (for whoever runs an older Python: one line, not a traceback)
    sys.exit(f"client.py needs Python 3.11 or newer; this is Python {sys.version.split()[0]} (python.org has it)")


# --- 1. Text: the trace's lines, masked secrets, replies as one line ------------------------------

# A long message in the trace shows this many lines, then how many were cut.
TRACE_BODY_LINES = 10
TRACE_MASK = "********"
# Credentials are kept off the screen by the rules of the server's own log (mailserver/logs.py);
# tests/masking_cases.py holds the cases both must pass.
# The verbs of SMTP and POP3: a line that starts with one is a command, never a credential
# typed alone. A test checks that every verb the server knows is here.
COMMAND_VERBS = frozenset({
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "HELP", "VRFY", "AUTH", "STARTTLS", "RETR",
    "DELE", "USER", "PASS", "STAT", "LIST", "UIDL", "TOP", "CAPA", "STLS",
})  # fmt: skip
# SASL mechanism names (RFC 4422 3.1): shown after AUTH, so the student sees which was asked for.
SASL_MECHANISMS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2"})
BASE64_WORD = re.compile(r"[A-Za-z0-9+/]{4,}={0,2}")  # a LOGIN answer typed alone
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")  # long enough to hold a name and a password

# Control characters other than tab and newline could drive the terminal
# (escape sequences hidden in a message), so retrieved text shows them as "?".
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """text with the control characters that could drive the terminal shown as "?"."""
    return _CONTROL.sub("?", text)


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def format_reply(code: int, text: bytes) -> str:
    return f"{code} {decode(text)}".replace("\n", " / ")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def masked(command: str) -> str:
    """Return ``command`` as typed, but with AUTH's payload or PASS's password hidden, whatever
    whitespace parts the words, and any base64 that hides a NUL (a PLAIN response, RFC 4616)."""
    words = command.split()
    if len(words) > 1 and words[0].upper() in ("AUTH", "PASS"):
        shown = 2 if words[0].upper() == "AUTH" and words[1].upper() in SASL_MECHANISMS else 1
        if len(words) > shown:
            last = words[shown - 1]  # found from the left: never further than it is
            command = command[: command.index(last) + len(last)] + " " + TRACE_MASK
    return BASE64_RUN.sub(lambda run: TRACE_MASK if b"\0" in (base64_bytes(run[0]) or b"") else run[0], command)


def base64_bytes(text: str) -> bytes | None:
    """text decoded as base64, padded or not, maybe cut short; None if it is not base64."""
    text = text.rstrip("=")
    text = text[: len(text) - (len(text) % 4 == 1)]  # a last character alone holds no whole octet
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:  # binascii.Error is one
        return None


class CredentialMask:
    """Which lines typed into --raw are credentials, so that the screen, the history and :save never hold one.

    Masked: an answer to a 334 or "+" whatever it looks like; the lines an AUTH calls for
    (LOGIN two, other mechanisms one, less an initial response) as long as they are no
    command, even before the server has asked; a single base64 word that is no command;
    and what masked() hides in a command.
    """

    def __init__(self) -> None:
        self.answers_due = 0  # lines still to come that answer the last AUTH

    def shown(self, line: str, *, answer: bool = False) -> str:
        """line as it may be shown; answer: the server asked for it (a 334, or POP3's "+")."""
        words = line.split()
        command = bool(words) and words[0].upper() in COMMAND_VERBS
        if answer or (self.answers_due and not command):
            self.answers_due = max(0, self.answers_due - 1)
            return TRACE_MASK
        self.answers_due = 0
        if command and words[0].upper() == "AUTH":
            answers = 2 if len(words) > 1 and words[1].upper() == "LOGIN" else 1
            self.answers_due = answers - (len(words) > 2)
        if not command and len(words) == 1 and BASE64_WORD.fullmatch(words[0]) and base64_bytes(words[0]):
            return TRACE_MASK
        return masked(line)


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


# --- 2. The protocol: smtplib and poplib, traced --------------------------------------------------

# Seconds to wait for the server on each socket operation, so a server that
# hangs ends the session with a message instead of freezing the terminal.
SOCKET_TIMEOUT = 60
# Seconds to wait for the 220 greeting: a server greets at once, and a TLS
# port (SMTPS) stays silent, waiting for the client to start TLS.
GREETING_TIMEOUT = 10
# The server's lines are at most 1001 octets (1000 + a stuffed dot);
# smtplib allows replies of 8192, and so do we for RETR lines.
MAX_LINE = 8192
CLOSED_NOTE = "(the server closed the connection)"  # in the trace, where the server hung up
CRLF = "\r\n"

# Reply codes the protocol classes branch on (RFC 5321 4.2.3, RFC 4954 6).
OK = 250
START_MAIL_INPUT = 354
AUTH_CHALLENGE = 334
SERVICE_NOT_AVAILABLE = 421
MECHANISM_UNKNOWN = 504  # RFC 4954 4: "Unrecognized authentication type"

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
        self.rcpt_replies: list[tuple[str, int, bytes]] = []  # (address, code, text) of the last message's RCPTs
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

    def login(self, user: str, password: str, *, initial_response_ok: bool = True) -> tuple[int, bytes]:
        """Log in as smtplib does, PLAIN first, but stop at a refusal that is not about the mechanism.

        smtplib tries the next mechanism after any refusal, so a 454 (too many failed logins)
        would come twice, and the server would count and log a second login.
        """
        self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        offered = self.esmtp_features["auth"].upper().split()
        self.user, self.password = user, password  # smtplib's auth_plain and auth_login read them here
        for mechanism in (name for name in ("PLAIN", "LOGIN") if name in offered):
            authobject = getattr(self, f"auth_{mechanism.lower()}")
            try:
                return self.auth(mechanism, authobject, initial_response_ok=initial_response_ok)
            except smtplib.SMTPAuthenticationError as error:
                if error.smtp_code != MECHANISM_UNKNOWN:
                    raise
        raise smtplib.SMTPException("No suitable authentication method found.")

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        """MAIL, which starts a new message: the RCPT replies kept are the new message's."""
        self.rcpt_replies = []
        return super().mail(sender, options)

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        """RCPT, its reply kept: a 250 may say the mail goes no further than the Sent folder."""
        reply = super().rcpt(recip, options)
        self.rcpt_replies.append((recip, *reply))
        return reply

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
        # As sent: smtplib writes its verbs in lower case (mail FROM:<...>), which RFC 5321 2.4 allows.
        return [f"C: {masked(decode(wire).removesuffix(CRLF))}"]

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


class InboxClient(poplib.POP3):
    """poplib.POP3 for the user's inbox, with its lines in the trace marked ``POP3``.

    poplib has no public hook for each line (its set_debuglevel prints the
    password), so the trace takes the two private funnels every line goes
    through, as MailClient takes smtplib's send and getreply: ``_putline``
    for each command and ``_getline`` for each line of a response.
    """

    def __init__(self, host: str, port: int, *, trace: Trace | None = None, **options: Any) -> None:
        """Connect and read the greeting, as poplib.POP3 does; options go to poplib."""
        # Set before connecting: poplib reads the greeting in __init__.
        self.trace = trace
        self.block: list[str] | None = None  # the lines of a message being retrieved, for a short trace
        options.setdefault("timeout", SOCKET_TIMEOUT)
        super().__init__(host, port, **options)

    def _putline(self, line: bytes) -> None:
        if self.trace is not None:
            self.trace(f"POP3 C: {masked(decode(line))}")
        super()._putline(line)

    def _getline(self) -> tuple[bytes, int]:
        line, octets = super()._getline()
        if self.block is not None:
            self.block.append(decode(line))
        elif self.trace is not None:
            self.trace(f"POP3 S: {decode(line)}".rstrip())
        return line, octets

    def retr(self, which: int) -> tuple[bytes, list[bytes], int]:
        """RETR, traced as a sent message is: the header, TRACE_BODY_LINES of body, a note of the rest."""
        self.block = []
        try:
            return super().retr(which)
        finally:
            traced, self.block = self.block, None
            if self.trace is not None and traced:
                self.trace(f"POP3 S: {traced[0]}".rstrip())
                for line in shorten("POP3 S:", traced[1:]):
                    self.trace(line)


class InboxClientTLS(InboxClient, poplib.POP3_SSL):
    """InboxClient speaking TLS from the first byte (POP3S, RFC 8314); pass context=."""


# --- 3. When it fails: the errors that end a step, and the one-line advice for each ---------------
# Plain functions, so that the menu and the raw console give the same advice for the same mistake.

# X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH (OpenSSL's x509_vfy.h).
NAME_MISMATCH = {62, 64}
# What OpenSSL reports when a "TLS" server answers in plain text (the reason changed across versions).
NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"}
TEMPORARY_AUTH_FAILURE = 454  # RFC 4954 6: e.g. too many failed logins
# The server's 454 says why and how long to wait: "4.7.0 Too many failed logins for this name, try again in 42 s".
RETRY_AFTER = re.compile(r"(?:\d\.\d{1,3}\.\d{1,3} )?(?P<reason>.+?), try again in (?P<seconds>\d+) ?s\b")


class ClientError(Exception):
    """What ends the client; its message is one line that says what to do next."""


class CannotConnectError(ClientError):
    """No usable session at HOST:PORT: nobody there, not SMTP as asked (TLS or not), or no login offered."""


class LoginFailedError(ClientError):
    """The login cannot go on (too many attempts, or refused outright)."""


class WrongLoginError(ClientError):
    """The server did not take this name and password (or smtplib could not send them); the message says why."""


class ReconnectFailedError(ClientError):
    """The server had closed the connection, and logging in again failed."""


class InboxUnreachableError(Exception):
    """No POP3 server answers at HOST:POP3-PORT; the message says why, in one line."""


def unreachable(error: OSError, host: str, port: int, *, tls: bool) -> str:
    """One line for a connection that could not be made, or not made as asked (tls: --starttls or --tls was given)."""
    address = f"{host}:{port}"
    if isinstance(error, NoGreetingError):
        instead = "use --tls instead of --starttls" if tls else "add --tls"
        return f"{error} — is this the TLS port? Then {instead}."
    if isinstance(error, ssl.SSLError) and error.reason in NOT_TLS:
        return f"{address} does not speak TLS — drop --tls, or use --starttls."
    if isinstance(error, smtplib.SMTPNotSupportedError):  # from starttls()
        return f"{address} does not offer STARTTLS — drop --starttls."
    if isinstance(error, socket.gaierror):
        return f"Unknown host {host!r}: check the name or address after --host."
    if isinstance(error, ConnectionRefusedError):
        return f"Cannot connect to {address} — is the server running?"
    check = f"check --host, and that no firewall blocks port {port}"
    if isinstance(error, TimeoutError):
        return f"No answer from {address} — {check}."
    if not isinstance(error, smtplib.SMTPException):  # EHOSTUNREACH (a firewall may answer so), ENETUNREACH...
        return f"Cannot connect to {address}: {error.strerror or error} — {check}."
    return error_message(error)


def untrusted(
    error: ssl.SSLCertVerificationError, host: str, cafile: str | None, certificate_names: Callable[[], list[str]]
) -> str:
    """One line for a certificate that failed the check: whom to trust, or which name to use.

    certificate_names() reads the names the certificate holds; it is called only if the name was wrong.
    """
    if error.verify_code in NAME_MISMATCH:
        names = certificate_names()
        if names:
            return (
                f"The server's certificate is for {', '.join(names)}, not {host}: "
                f"use --host {names[0]}, or a certificate made for {host}."
            )
        return f"The server's certificate is not made for {host}: {error.verify_message}."
    if cafile:
        return (
            f"The server's certificate is not trusted by {cafile} ({error.verify_message}): "
            "is it the cert.pem your teacher handed out for this server?"
        )
    return "The server's certificate is not trusted: add --cafile cert.pem (the file your teacher handed out)."


def no_login(host: str, port: int, *, offers_starttls: bool) -> str:
    """One line for a server whose EHLO offers no AUTH."""
    if offers_starttls:
        return "The server accepts logins only over TLS: add --starttls --cafile cert.pem."
    return f"{host}:{port} offers no login (no AUTH in its EHLO reply): is it this course's server?"


def login_refusal(code: int, text: bytes) -> str:
    """One line for a refused login that is not a wrong password: e.g. 454, wait and try again."""
    wait = RETRY_AFTER.match(decode(text))
    if code == TEMPORARY_AUTH_FAILURE and wait:
        reason = wait["reason"]
        return f"Login refused: {reason[:1].lower()}{reason[1:]}; try again in {wait['seconds']} s."
    return f"Login refused: {format_reply(code, text)}"


def tls_failure(error: Exception) -> str:
    """Say why a TLS handshake failed, and what to do about an untrusted certificate."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted ({error.verify_message}): add --cafile cert.pem"
    return str(error)


def pop3_error(error: Exception) -> str:
    """The text of a POP3 error: poplib's error_proto holds the server's -ERR line (bytes) or its own words."""
    if isinstance(error, poplib.error_proto) and error.args:
        text = error.args[0]
        text = decode(text) if isinstance(text, bytes) else str(text)
        return "(the connection was closed)" if text == "-ERR EOF" else text
    return str(error)


def inbox_unreachable(error: Exception, host: str, port: int) -> str:
    """One line: the inbox cannot be reached, and why."""
    if isinstance(error, ConnectionRefusedError):
        why = "nothing answers there; is POP3 on another port? (--pop3-port)"
    elif isinstance(error, TimeoutError):
        why = "no answer in time"
    elif isinstance(error, ssl.SSLError):
        why = f"TLS failed: {tls_failure(error)}"
    elif isinstance(error, OSError):
        why = error.strerror or str(error)
    elif pop3_error(error).startswith("-ERR"):
        why = f"the server refused: {pop3_error(error)}"
    else:
        why = f"not a POP3 server, it said: {pop3_error(error)}"
    return f"Cannot reach the inbox at {host}:{port} — {why}"


def login_failed(error: WrongLoginError) -> str:
    """One line for a name and password the server did not take; the user may try again."""
    return f"Login failed: {error}."


def inbox_without_tls(host: str, port: int) -> str:
    """One line for --tls when the POP3 port speaks neither TLS from the first byte nor STLS."""
    return (
        f"Cannot reach the inbox at {host}:{port} — it offers no TLS (neither POP3S nor STLS): "
        "give the server's --pop3s-port as --pop3-port, or leave out --tls."
    )


def reconnect_failed(error: Exception) -> str:
    """One line for a connection the server closed that could not be made again."""
    return f"The server closed the connection, and reconnecting failed: {error_message(error)}"


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


# --- 4. The account: the connections and the login, no printing -----------------------------------

DEFAULT_POP3_PORT = 1100  # the server's: 110 needs root, and mpopd uses 1100 too
# Seconds to wait for the answer to QUIT when leaving.
QUIT_TIMEOUT = 2
AUTH_FAILED = 535  # RFC 4954 6


class Account:
    """The user's account at one server: how to reach it, its SMTP and POP3 connections, and how to end them.

    It talks to the server and returns results or raises; it never prints nor asks. After a
    login the credentials stay in this object, in memory only (never written anywhere), so
    that log_in_again() and open_inbox() can log in again without asking.
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
        pop3_port: int = DEFAULT_POP3_PORT,
        pop3s: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.pop3_port = pop3_port
        self.pop3s = pop3s  # the POP3 port was named with --tls: it may be the POP3S port (TLS from the first byte)
        self.trace = trace
        self.tls = tls  # None: plain text; else STARTTLS, or TLS from the start with implicit_tls
        self.implicit_tls = implicit_tls
        self.cafile = cafile  # named in the advice when the certificate is not trusted
        self.client: MailClient | None = None
        self.inbox: InboxClient | None = None
        self.user = ""
        self.credentials: tuple[str, str] | None = None  # (user, password) once logged in
        self.failed_logins = 0
        self.server_name = host

    def connect(self, *, greeted: Callable[[tuple[int, bytes]], None] | None = None) -> MailClient:
        """Open a fresh connection: the greeting (passed to greeted), STARTTLS if asked, EHLO; return the client.

        Raise CannotConnectError with one line that says what to do instead.
        """
        try:
            client = self._open(self.trace, self.tls, greeted)
        except ClientError:
            raise
        except ssl.SSLCertVerificationError as error:
            raise CannotConnectError(untrusted(error, self.host, self.cafile, self.certificate_names)) from error
        except (OSError, smtplib.SMTPException) as error:  # ssl.SSLError is an OSError
            raise CannotConnectError(unreachable(error, self.host, self.port, tls=self.tls is not None)) from error
        self.client = client
        return client

    def _open(
        self,
        trace: Trace | None,
        tls: ssl.SSLContext | None,
        greeted: Callable[[tuple[int, bytes]], None] | None = None,
    ) -> MailClient:
        if self.implicit_tls:
            client: MailClient = MailClientTLS(self.host, self.port, trace=trace, context=tls)
        else:
            client = MailClient(self.host, self.port, trace=trace)
        # RFC 5321 4.3.1: the greeting starts with the server's name.
        self.server_name = decode(client.last_reply[1]).split(" ", 1)[0] or self.host
        if greeted is not None:
            greeted(client.last_reply)
        with closed_on_failure(client):
            client.ehlo()
            if tls is not None and not self.implicit_tls:
                client.starttls(context=tls)  # raises SMTPNotSupportedError if not offered
                client.ehlo()  # RFC 3207 4.2: what was said before TLS is forgotten
            if not client.has_extn("auth"):
                raise CannotConnectError(no_login(self.host, self.port, offers_starttls=client.has_extn("starttls")))
        return client

    def certificate_names(self) -> list[str]:
        """The names in the server's certificate, read over a connection that trusts it but skips the name check."""
        assert self.tls is not None
        try:
            client = self._open(None, names_unchecked(self.tls))
            certificate = client.sock.getpeercert() if isinstance(client.sock, ssl.SSLSocket) else None
            client.close()
        except (ClientError, OSError, smtplib.SMTPException):
            return []
        alternative_names = (certificate or {}).get("subjectAltName", ())
        return [value for kind, value in alternative_names if kind in ("DNS", "IP Address")]

    def log_in(self, name: str, password: str) -> None:
        """Log in as name on the open connection, or on a new one if the server hung up after a wrong password.

        Raise WrongLoginError if the server does not take name and password (it hangs up then),
        LoginFailedError if it takes no login now (e.g. 454, too many failures).
        """
        client = self.client if self.client is not None and self.client.sock is not None else self.connect()
        self._log_in(client, name, password)
        self.user, self.credentials = name, (name, password)

    def _log_in(self, client: MailClient, name: str, password: str) -> None:
        """Log in on client; count and raise WrongLoginError if the name or password is not taken."""
        try:
            client.login(name, password)
            return
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
            client.close()  # the seed: the server hangs up after a wrong login, so the next try connects anew
            reason = "wrong username or password"
        self.failed_logins += 1
        raise WrongLoginError(reason)

    def connection(self) -> MailClient:
        """The open SMTP connection; raise SMTPServerDisconnected if there is none."""
        if self.client is None or self.client.sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        return self.client

    def log_in_again(self) -> MailClient:
        """Open a new SMTP connection and log in with this session's credentials; return it.

        Raise what connect() and log_in() raise (WrongLoginError if the password changed meanwhile).
        """
        if self.credentials is None:
            raise LoginFailedError("not logged in")
        client = self.connect()
        self._log_in(client, *self.credentials)
        return client

    def open_inbox(self) -> InboxClient:
        """Connect to the POP3 port and log in as this session's user; the inbox session open before is closed.

        Raise InboxUnreachableError if no POP3 server answers there (or TLS fails),
        poplib.error_proto if it refuses.
        """
        self.close_inbox()
        try:
            inbox, needs_stls = self._reach_inbox()
        except (OSError, poplib.error_proto) as error:
            raise InboxUnreachableError(inbox_unreachable(error, self.host, self.pop3_port)) from error
        with closed_on_failure(inbox):
            try:
                if needs_stls:
                    self._stls(inbox)
                assert self.credentials is not None  # the menu comes after the login
                user, password = self.credentials
                inbox.user(user)
                inbox.pass_(password)
            except ssl.SSLError as error:
                raise InboxUnreachableError(inbox_unreachable(error, self.host, self.pop3_port)) from error
        self.inbox = inbox
        return inbox

    def _reach_inbox(self) -> tuple[InboxClient, bool]:
        """Connect to the POP3 port; return the session and whether it still needs STLS for the TLS asked.

        --tls (the server's SMTPS port) with the usual POP3 port: STLS there (RFC 2595), the same
        protection without a second port option. With --pop3-port too, that port is taken for the
        server's POP3S port (TLS from the first byte); if it answers in plain text, STLS there.
        """
        if not self.pop3s:
            return InboxClient(self.host, self.pop3_port, trace=self.trace), self.tls is not None
        try:
            return InboxClientTLS(self.host, self.pop3_port, trace=self.trace, context=self.tls), False
        except ssl.SSLError as error:
            if error.reason not in NOT_TLS:
                raise
        return InboxClient(self.host, self.pop3_port, trace=self.trace), True

    def _stls(self, inbox: InboxClient) -> None:
        """STLS (RFC 2595); raise InboxUnreachableError naming the options if the port offers no TLS."""
        try:
            inbox.stls(context=self.tls)
        except poplib.error_proto as error:
            if not self.implicit_tls:
                raise
            raise InboxUnreachableError(inbox_without_tls(self.host, self.pop3_port)) from error

    def inbox_connection(self) -> InboxClient:
        """The open inbox session; raise poplib.error_proto if there is none."""
        if self.inbox is None or self.inbox.sock is None:
            raise poplib.error_proto("-ERR EOF")
        return self.inbox

    def close_inbox(self) -> None:
        """Close the inbox session without QUIT: nothing marked is deleted (RFC 1939 6)."""
        inbox, self.inbox = self.inbox, None
        if inbox is not None:
            inbox.close()

    def close(self) -> tuple[int, bytes] | None:
        """Send QUIT if still connected and return the server's goodbye; None if it was gone already."""
        self.close_inbox()
        client, self.client = self.client, None
        if client is None or client.sock is None:
            return None
        try:
            client.sock.settimeout(QUIT_TIMEOUT)  # after a Ctrl-C the server may be the one not answering
            return client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()
            return None


def names_unchecked(trusted: ssl.SSLContext) -> ssl.SSLContext:
    """A context of its own that trusts what trusted trusts but skips the name check: to read a certificate's names.

    The system's CAs and the ones trusted holds: at least what trusted verified, and nothing is sent over it.
    """
    context = ssl.create_default_context()
    for certificate in trusted.get_ca_certs(binary_form=True):
        context.load_verify_locations(cadata=certificate)
    context.check_hostname = False
    return context


@contextlib.contextmanager
def closed_on_failure(connection: smtplib.SMTP | poplib.POP3) -> Iterator[None]:
    """Close connection if the block raises: a connection half set up (no TLS, no login) is of no use."""
    try:
        yield
    except BaseException:
        connection.close()
        raise


# --- 5. The terminal: prompts, the login, reconnecting, goodbye -----------------------------------

MAX_LOGIN_ATTEMPTS = 3
RECONNECTED = "(reconnected: the server had closed the idle connection)"

# What a closed connection looks like in each protocol: smtplib raises SMTPServerDisconnected; poplib
# reads EOF as error_proto("-ERR EOF"), and a reset or timeout comes as an OSError.
SMTP_GONE: tuple[type[Exception], ...] = (smtplib.SMTPServerDisconnected,)
POP3_GONE: tuple[type[Exception], ...] = (poplib.error_proto, OSError)

Connection = TypeVar("Connection")
Result = TypeVar("Result")


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


def print_reply(reply: tuple[int, bytes]) -> None:
    """Print a reply (the greeting, the goodbye) as the server wrote it, on one line."""
    print(format_reply(*reply))


def log_in(account: Account, user: str | None) -> None:
    """Connect, showing the greeting, then ask for credentials until the server accepts them.

    The server closes the connection after a 535, so every retry opens
    a new one.  Raise LoginFailedError after MAX_LOGIN_ATTEMPTS.
    """
    account.connect(greeted=None if account.trace else print_reply)  # the trace shows it already, as S:
    for _ in range(MAX_LOGIN_ATTEMPTS):
        name = user or ask("Username: ")
        password = ask_secret("Password: ")
        try:
            account.log_in(name, password)
        except WrongLoginError as error:
            print(login_failed(error))
            continue
        print(f"Logged in as {name}.")
        return
    raise LoginFailedError(f"Login failed {MAX_LOGIN_ATTEMPTS} times; giving up.")


def logged_in_again(account: Account) -> MailClient:
    """A new SMTP connection, logged in as before (the server had closed the last); raise ReconnectFailedError."""
    try:
        return account.log_in_again()
    except WrongLoginError as error:
        print(login_failed(error))  # as at the first login; the line that ends the client says what it means
        failure: Exception = LoginFailedError("the server no longer accepts this session's password")
    except (ClientError, smtplib.SMTPException, OSError) as error:
        failure = error
    raise ReconnectFailedError(reconnect_failed(failure)) from failure


def reconnecting(
    operation: Callable[[Connection], Result],
    connection: Callable[[], Connection],
    reconnect: Callable[[], Connection],
    gone: tuple[type[Exception], ...],
) -> Result:
    """Run operation on connection(); if it finds the server gone (an error in gone), say so and run it once
    more on reconnect(). Nothing the user typed is asked again: the operation holds it."""
    try:
        return operation(connection())
    except gone:
        pass
    again = reconnect()
    print(RECONNECTED)
    return operation(again)


def over_smtp(account: Account, operation: Callable[[MailClient], Result]) -> Result:
    """Carry out operation on the SMTP connection; if the server has closed it meanwhile (idle timeout,
    restart), log in again with this session's credentials and carry it out on the new one."""
    return reconnecting(operation, account.connection, lambda: logged_in_again(account), SMTP_GONE)


def over_pop3(account: Account, operation: Callable[[InboxClient], Result]) -> Result:
    """Carry out operation on the inbox session; if the server has ended it meanwhile, on a new one."""
    return reconnecting(operation, account.inbox_connection, account.open_inbox, POP3_GONE)


def say_goodbye(account: Account) -> None:
    """QUIT, and show the server's goodbye if it answered (with --trace, its S: line shows it already)."""
    goodbye = account.close()
    if goodbye is not None and account.trace is None:
        print_reply(goodbye)


# --- 6. The menu: each action prompts, calls the account, prints ----------------------------------
# Each returns True to show the menu again, False to end the session.

# RFC 5321 4.1.2: Mailbox = Local-part "@" Domain.  We accept the common
# Dot-string form; quoted local parts and address literals are not needed
# in a classroom and would only make the error message harder to write.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, the angle brackets included
NONE_SENT = "You have sent no messages (your Sent folder is empty)."
SHOWN_HEADERS = ("Date", "From", "To", "Subject")
NOT_IN_MESSAGE = "(not in the message)"
# What this server's 250 to RCPT says when the mail will be in the sender's Sent folder only (another domain).
SENT_ONLY = "kept in your Sent folder only"


def is_address(address: str) -> bool:
    """Return True if ``address`` is a plain name@domain SMTP mailbox."""
    local_part = address.rpartition("@")[0]
    return ADDRESS.fullmatch(address) is not None and len(local_part) <= MAX_LOCAL_PART and len(address) + 2 <= MAX_PATH


def send_mail(account: Account) -> bool:
    """Menu 1: build a message from the answers and send it. Ctrl-C while writing it gives it up,
    and keeps what was typed of the text in unsent-<date-time>.eml."""
    try:
        composed = compose(account)
    except KeyboardInterrupt:
        print()
        print("Message not sent.")
        return True
    if composed is None:
        return True
    sender, recipients, message = composed
    # RFC 6152: 8-bit text (UTF-8 written as is) must be declared in MAIL.
    options = ["BODY=8BITMIME"] if message["Content-Transfer-Encoding"] == "8bit" else []
    try:
        refused = over_smtp(
            account, lambda client: client.send_message(message, sender, recipients, mail_options=options)
        )
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
    for address, code, text in account.connection().rcpt_replies:
        if code == OK and SENT_ONLY in decode(text):  # taken, but not for any inbox here: say so
            print(f"Not delivered to {address}: not a user of this server (kept in your Sent folder).")
    if refused:
        print("These recipients were refused:")
        print_refused(refused)
    return True


def compose(account: Account) -> tuple[str, list[str], EmailMessage] | None:
    """Ask for sender, recipients, subject and text; return them with the message built from them.

    Ctrl-C while the text is typed: save the message as it stands (saying where) and return None.
    """
    default = default_sender(account.user, account.server_name)
    sender = ask_address(f"From [{default}]: " if default else "From: ", default)
    recipients = ask_recipients(account.server_name)
    subject = ask("Subject: ")
    print(f"Type the message; end it with a line holding only '.' (or {end_of_input_key()}).")
    lines: list[str] = []
    try:
        read_body(lines)
    except KeyboardInterrupt:
        print()
        keep_unsent(build_message(sender, recipients, subject, body_text(lines)))
        return None
    return sender, recipients, build_message(sender, recipients, subject, body_text(lines))


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


def ask_recipients(server_name: str) -> list[str]:
    """Ask until every comma-separated recipient is an address; a bare name is that user at the server."""
    while True:
        answers = [part.strip() for part in ask("To (comma-separated): ").split(",") if part.strip()]
        recipients = [answer if "@" in answer else f"{answer}@{server_name}" for answer in answers]
        invalid = [answer for answer, address in zip(answers, recipients, strict=True) if not is_address(address)]
        if recipients and not invalid:
            return recipients
        if not recipients:
            print("At least one recipient is needed.")
        else:
            print(not_an_address(invalid))


def not_an_address(answers: list[str]) -> str:
    return f"Not an email address: {', '.join(map(repr, answers))}. Write it as name@domain, e.g. bob@example.org."


def read_body(lines: list[str]) -> None:
    """Read body lines into lines, up to a lone "." or the end of input (Ctrl-D); on Ctrl-C, lines holds
    what was typed so far."""
    while True:
        try:
            line = ask("")
        except EOFError:
            print()
            return
        if line == ".":
            return
        lines.append(line)


def body_text(lines: list[str]) -> str:
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
    """Menu 3: show every message this user sent, decoded."""
    messages = over_smtp(account, MailClient.retr)
    if not messages:
        print(NONE_SENT)
        return True
    print(f"You sent {plural(len(messages), 'message')}.")
    # RETR gives the messages as sent, without the envelope: a message typed without From: is still yours.
    otherwise = {"From": f"{account.user} (you sent it)"}
    for number, raw in enumerate(messages, start=1):
        print()
        print(f"--- Message {number} ---")
        print(describe_message(raw, otherwise))
    return True


def describe_message(raw: bytes, otherwise: Mapping[str, str]) -> str:
    """Return the headers a reader wants and the decoded text body; otherwise: what to show for a header
    that neither the message nor its trace fields hold."""
    # RETR sends CRLF lines; the parser would keep the CR in the body text.
    unix_text = raw.replace(b"\r\n", b"\n")
    try:
        shown = describe_parsed(email.message_from_bytes(unix_text, policy=email.policy.default), otherwise)
    except Exception:
        # The email package can trip over an odd message in many ways; a
        # message shown raw is better than a session ended by a traceback.
        shown = decode(unix_text)
    return printable(shown)


def header_or_envelope(message: EmailMessage, name: str, otherwise: Mapping[str, str]) -> str:
    """The header name as the message gives it; if it has none, what the trace fields that the server put on
    top of an inbox copy tell (RFC 5321 4.4), marked as such; else otherwise's text, or NOT_IN_MESSAGE."""
    if message.get(name):
        return str(message[name])
    if name == "From" and message.get("Return-Path", "").strip("<> "):
        return f"{message['Return-Path'].strip('<> ')} (envelope)"
    if name == "Date" and ";" in message.get("Received", ""):
        return f"{' '.join(message['Received'].rpartition(';')[2].split())} (received)"
    return otherwise.get(name, NOT_IN_MESSAGE)


def describe_parsed(message: EmailMessage, otherwise: Mapping[str, str]) -> str:
    """Return the Date, From, To and Subject, the text, and the other parts' names."""
    headers = [f"{name + ':':<9}{header_or_envelope(message, name, otherwise)}" for name in SHOWN_HEADERS]
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


def read_inbox(account: Account) -> bool:
    """Menu 2: show the messages in this user's inbox (POP3), then delete them after a yes."""
    try:
        inbox = account.open_inbox()
    except InboxUnreachableError as error:
        print(error)
        return True
    except poplib.error_proto as error:
        print(f"The inbox refused the login: {pop3_error(error)}")
        return True
    try:
        shown = show_inbox(inbox, account.user)
        if shown and ask_yes(f"Delete {'it' if len(shown) == 1 else 'them'} from your inbox? [y/N] "):
            # As the menu's SMTP actions do after an idle timeout: once more, on a new session.
            deleted = over_pop3(account, lambda session: delete_from_inbox(session, shown))
            print(f"Deleted {plural(deleted, 'message')} from your inbox.")
            return True
        if shown:
            print("Nothing deleted.")
        with contextlib.suppress(poplib.error_proto, OSError):  # nothing to remove: a lost QUIT loses nothing
            inbox.quit()
    except InboxUnreachableError as error:  # from a new session
        print(error)
    except (poplib.error_proto, OSError) as error:
        print(f"The inbox answered: {pop3_error(error)}")
    finally:
        account.close_inbox()  # without QUIT (Ctrl-D at the question, say) nothing is deleted
    return True


def show_inbox(inbox: InboxClient, user: str) -> list[bytes]:
    """Print every message of user's inbox; return their unique ids (none for an empty inbox)."""
    listing = unique_ids(inbox)
    if not listing:
        print("Your inbox is empty.")
        return []
    print(f"You have {plural(len(listing), 'message')} in your inbox.")
    for number in listing.values():
        _, lines, _ = inbox.retr(number)
        print()
        print(f"--- Message {number} ---")
        print(describe_message(b"\n".join(lines) + b"\n", {"To": f"{user} (your inbox)"}))
    print()
    return list(listing)


def delete_from_inbox(inbox: InboxClient, shown: list[bytes]) -> int:
    """Delete the messages shown, found by their unique ids; return how many went.

    By id, not by number: in another session (after a reconnect) the numbers
    may differ, the ids do not (RFC 1939 7).
    """
    listing = unique_ids(inbox)
    numbers = [listing[unique_id] for unique_id in shown if unique_id in listing]
    for number in numbers:
        inbox.dele(number)
    inbox.quit()  # RFC 1939 6: only QUIT removes the messages marked with DELE
    return len(numbers)


def unique_ids(inbox: InboxClient) -> dict[bytes, int]:
    """UIDL: each message's unique id and its number in this session, in order."""
    _, lines, _ = inbox.uidl()
    numbers_and_ids = (line.split(b" ", 1) for line in lines)
    return {unique_id: int(number) for number, unique_id in numbers_and_ids}


def delete_mail(account: Account) -> bool:
    """Menu 4: after a yes, delete all the messages this user sent."""
    count = over_smtp(account, MailClient.count)
    if count == 0:
        print(NONE_SENT)
        return True
    them = "the message" if count == 1 else f"all {plural(count, 'message')}"
    if not ask_yes(f"Delete {them} you sent? [y/N] "):
        print("Nothing deleted.")
        return True
    deleted = over_smtp(account, MailClient.dele)
    print(f"Deleted {'the message' if deleted == 1 else plural(deleted, 'message')} you sent.")
    return True


def ask_yes(question: str) -> bool:
    """Ask a y/N question; True for y or yes. Ctrl-C answers no (the menu goes on); Ctrl-D still ends input."""
    try:
        return ask(question).strip().lower() in ("y", "yes")
    except KeyboardInterrupt:
        print()
        return False


def quit_session(account: Account) -> bool:
    """Menu 5 (or q): QUIT and show the server's goodbye."""
    say_goodbye(account)
    return False


MENU: dict[str, tuple[str, Callable[[Account], bool]]] = {
    "1": ("Send a message", send_mail),
    "2": ("Read my inbox", read_inbox),
    "3": ("Retrieve the messages I sent", retrieve_mail),
    "4": ("Delete the messages I sent", delete_mail),
    "5": ("Quit", quit_session),
}
QUIT_KEY = "q"  # quits too, as in many terminal programs


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
        if choice.lower() == QUIT_KEY:
            return quit_session
        if choice in MENU:
            return MENU[choice][1]
        keys = list(MENU)
        print(f"Please choose {', '.join(keys[:-1])} or {keys[-1]} ({QUIT_KEY} quits too).")


# --- 7. The raw console: what each reply means ----------------------------------------------------


class Meaning(NamedTuple):
    """What a reply means in general, and, in `after`, what it means as the answer to one command.

    The keys of `after` are verbs, "CONNECT" for the greeting and "." for the end of a message.
    """

    text: str
    after: Mapping[str, str] = MappingProxyType({})


# Every reply the server can send, and the rest of RFC 5321 4.2, RFC 4954 and RFC 3207 for
# other servers; then POP3's statuses (RFC 1939) and its response codes (RFC 2449, RFC 3206).
# A test reads the server's code and fails if a reply it can send is missing here.
REPLY_MEANINGS: dict[str, Meaning] = {
    "211": Meaning("system status — an answer for a human reader"),
    "214": Meaning(
        "help — information for a human reader",
        {"HELP": "help — the commands this server knows; HELP <command> explains one"},
    ),
    "220": Meaning(
        "service ready",
        {
            "CONNECT": "service ready — the server greets you; introduce yourself with EHLO <your name>",
            "STARTTLS": "go ahead with TLS — the console does the TLS handshake now (RFC 3207)",
        },
    ),
    "221": Meaning("goodbye — the server closes the connection"),
    "235": Meaning("logged in (RFC 4954) — now MAIL FROM:<your address> starts a message"),
    "250": Meaning(
        "OK — done",
        {
            "EHLO": "hello — the lines after the first name the extensions this server supports",
            "HELO": "hello — now log in (:auth plain NAME), then MAIL FROM:<your address>",
            "MAIL": "sender accepted — now RCPT TO:<address>, once for each recipient",
            "RCPT": "recipient accepted — another RCPT adds one more, DATA starts the message",
            ".": "message accepted — the server has stored it safely; MAIL starts another",
            "RSET": "the message being prepared is dropped; you are still logged in",
            "NOOP": "nothing done — the server is still there",
            "RETR": 'the messages you sent follow, each ended by a line holding only "."',
            "DELE": "deleted — every message you sent is gone",
        },
    ),
    "251": Meaning("user not local — the server will forward the message"),
    "252": Meaning("cannot check that user, but the server will accept a message and try to deliver it"),
    "334": Meaning(
        "go on — the server waits for your answer, in base64 (its question is base64 too)",
        {"AUTH": "go on — send the next answer of the login, in base64"},
    ),
    "354": Meaning('go ahead — type the message, end it with a line holding only "."'),
    "421": Meaning(
        "the server is closing the connection (shutting down, idle too long, too many errors"
        " or connections) — connect again later",
        {"CONNECT": "the server is too busy to take you now — try again in a moment"},
    ),
    "432": Meaning("a password transition is needed (RFC 4954)"),
    "450": Meaning("mailbox busy — not done; try again later"),
    "451": Meaning("the server had a local error — not done; try again later"),
    "452": Meaning(
        "the server is out of storage — not done; try again later",
        {"RCPT": "not added: that mailbox is full, or the message has too many recipients; the others stay"},
    ),
    "454": Meaning(
        "temporary failure — not done; try again later",
        {
            "STARTTLS": "TLS is not available: the server has no certificate",
            "AUTH": "too many failed logins (for this name, or from your address) — wait as the text says",
        },
    ),
    "455": Meaning("the server cannot take these parameters now"),
    "500": Meaning(
        "syntax error — the command is not recognized, or the line is too long",
        {".": "a line of the message was longer than 1000 octets (RFC 5321 4.5.3.1.6): not stored"},
    ),
    "501": Meaning(
        "syntax error in the parameters — HELP <command> shows how to write it",
        {"AUTH": "the login was cancelled, or its answer was not valid base64"},
    ),
    "502": Meaning("command not implemented by this server"),
    "503": Meaning(
        "bad sequence of commands — this command cannot come now",
        {
            "MAIL": "bad sequence — a message is already started (RSET drops it)",
            "RCPT": "bad sequence — MAIL must come first",
            "DATA": "bad sequence — MAIL and at least one accepted RCPT must come first",
            "AUTH": "bad sequence — say EHLO first; or you are logged in already",
            "STARTTLS": "bad sequence — TLS is already on",
        },
    ),
    "504": Meaning(
        "command parameter not implemented",
        {
            "AUTH": "unknown login mechanism — use PLAIN or LOGIN",
            "HELP": "no help on that — HELP alone lists the commands",
            "RETR": "RETR takes no parameter here",
            "DELE": "DELE takes no parameter here",
        },
    ),
    "530": Meaning(
        "log in first — :auth plain NAME",
        {"AUTH": "this server takes logins only over TLS — :starttls first"},
    ),
    "534": Meaning("that login mechanism is too weak for this server (RFC 4954)"),
    "535": Meaning("wrong username or password — the server will now close the connection"),
    "538": Meaning("that login mechanism needs an encrypted connection — :starttls first (RFC 4954)"),
    "550": Meaning(
        "mailbox unavailable — not done (no such user, or refused by policy)",
        {"RCPT": "no such user here — the name before the @ has no account on this server"},
    ),
    "551": Meaning("user not local — try the address the server gives"),
    "552": Meaning(
        "too big — over the size the server takes (EHLO's SIZE line says how much)",
        {
            "MAIL": "the SIZE you declared is over the server's limit",
            ".": "the message was over the size limit: not stored",
        },
    ),
    "553": Meaning(
        "that mailbox name is not allowed",
        {"MAIL": "that sender address is not yours — send from your own address here, or one at another domain"},
    ),
    "554": Meaning(
        "transaction failed",
        {"CONNECT": "no SMTP service here"},
    ),
    "555": Meaning("a MAIL FROM or RCPT TO parameter was not recognized (RFC 5321 4.2.3)"),
    # RFC 5321 4.2.1: the first digit alone says how it went, for codes not listed above.
    "2xx": Meaning("success — done"),
    "3xx": Meaning("go on — the server needs more from you"),
    "4xx": Meaning("temporary failure — not done; the same command may work later"),
    "5xx": Meaning("permanent failure — not done; repeating the command will not help"),
    # POP3 (RFC 1939): a status, not a number.
    "+OK": Meaning(
        "OK — done",
        {
            "CONNECT": "the server greets you — log in with USER <name> then PASS <password>, or :auth plain NAME",
            "USER": "name noted — now PASS <password>",
            "PASS": "logged in — your inbox is yours alone until QUIT; STAT or LIST shows what is in it",
            "AUTH": "logged in — your inbox is yours alone until QUIT (AUTH alone: the mechanisms follow)",
            "STAT": "the numbers are: how many messages, and their total size in octets",
            "LIST": 'message number and size in octets (with no number: one line per message, "." ends the list)',
            "UIDL": 'message number and its unique id (with no number: one line per message, "." ends the list)',
            "RETR": 'the message follows as stored, ended by a line holding only "." (leading dots doubled)',
            "TOP": 'the header and the first lines of the body follow, ended by a line holding only "."',
            "DELE": "marked for deletion — it goes at QUIT; RSET unmarks every message",
            "RSET": "every deletion mark is removed",
            "NOOP": "nothing done — the server is still there",
            "CAPA": 'what this server supports follows, one per line, ended by "."',
            "STLS": "go ahead with TLS — the console does the TLS handshake now (RFC 2595)",
            "QUIT": "goodbye — the messages marked with DELE are deleted now",
        },
    ),
    "-ERR": Meaning("error — not done; the text says why"),
    "+": Meaning("go on — the server waits for your answer, in base64 (RFC 5034)"),
    "[AUTH]": Meaning(
        "the login was refused (RFC 3206) — the text says why; after a wrong username or password"
        " the server closes the connection"
    ),
    "[IN-USE]": Meaning("your inbox is open in another POP3 session (RFC 2449) — QUIT that one first"),
    "[SYS/TEMP]": Meaning("a temporary problem on the server (RFC 3206) — try again later"),
    "[SYS/PERM]": Meaning("a permanent problem on the server (RFC 3206) — tell whoever runs it"),
    "[LOGIN-DELAY]": Meaning("you logged in too recently (RFC 2449) — wait before logging in again"),
}

# RFC 2449 8: a response code, in brackets, first on an -ERR line.
RESPONSE_CODE = re.compile(r"\[([A-Z0-9/-]+)\]")


def explain(status: str, text: str, command: str | None) -> str:
    """Return `status: meaning` for one reply, as an answer to command (a verb, or None)."""
    meaning, label = REPLY_MEANINGS.get(status), status
    code = RESPONSE_CODE.match(text) if status == "-ERR" else None
    if code and f"[{code[1]}]" in REPLY_MEANINGS:
        meaning, label = REPLY_MEANINGS[f"[{code[1]}]"], f"{status} [{code[1]}]"
    if meaning is None:
        meaning = REPLY_MEANINGS.get(f"{status[0]}xx", Meaning("not a reply this console knows"))
    said = f"{label}: {meaning.after.get(command or '', meaning.text)}"
    question = decoded_challenge(text) if status in ("334", "+") else None
    return f'{said} (decoded, it asks "{question}")' if question else said


def decoded_challenge(text: str) -> str | None:
    """Return a base64 challenge (RFC 4954 4: a 334's text) as text, or None if it is not readable."""
    try:
        question = base64.b64decode(text.strip(), validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    return question if question.isprintable() and question else None


# --- 8. The raw console: the two dialects and the connection --------------------------------------

CLOSE_WAIT = 1  # seconds the raw console lets a server close the connection it said it would close


class ParsedReply(NamedTuple):
    """A line from the server read as a reply: its status (`250`, `+OK`), its text, and whether it ends the reply."""

    status: str
    text: str
    final: bool


class Sent(NamedTuple):
    """A command waiting for its reply: its verb ("CONNECT" for the greeting, "." for a message's end) and argument."""

    verb: str
    argument: str = ""


def plain_credentials(name: str, password: str) -> str:
    """RFC 4616: base64 of authzid NUL authcid NUL password, the authzid left empty."""
    return base64.b64encode(f"\0{name}\0{password}".encode()).decode()


def base64_text(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class AuthRecipe(NamedTuple):
    """How `:auth MECHANISM NAME` logs in: the lines to send, each after a go-on reply to the one before."""

    lines: Callable[[str, str], list[str]]
    how: str  # what the console does, said to the student


class Dialect:
    """What the raw console must know of one protocol: how a reply looks and what follows it."""

    name: ClassVar[str]
    tls_verb: ClassVar[str]  # the command that starts TLS
    tls_go_ahead: ClassVar[str]  # its positive reply: the handshake starts after it
    go_on: ClassVar[frozenset[str]]  # replies after which a login goes on to its next line
    challenge: ClassVar[str]  # the reply whose answer is a credential
    message_go_ahead: ClassVar[str | None] = None  # the reply to DATA after which lines are a message
    help_command: ClassVar[str | None] = None  # the server's own list of commands
    commands_help: ClassVar[str] = ""  # else, the commands as a note
    auth: ClassVar[dict[str, AuthRecipe]]

    @staticmethod
    def parse(line: str) -> ParsedReply | None:
        """Read a line as a reply; None for a line that is none."""
        raise NotImplementedError

    @staticmethod
    def blocks_after(sent: Sent, reply: ParsedReply) -> int:
        """How many dot-terminated blocks follow this reply to sent."""
        raise NotImplementedError

    @staticmethod
    def closes(reply: ParsedReply) -> bool:
        """True if the server closes the connection after this reply (besides the answer to QUIT)."""
        return False

    @staticmethod
    def block_note(number: int, count: int) -> str | None:
        """A note after the number-th of count blocks, or None."""
        return None


class SMTPDialect(Dialect):
    name = "SMTP"
    tls_verb = "STARTTLS"
    tls_go_ahead = "220"
    go_on = frozenset({"334"})
    challenge = "334"
    message_go_ahead = "354"
    help_command = "HELP"
    auth: ClassVar[dict[str, AuthRecipe]] = {
        "plain": AuthRecipe(
            lambda name, password: [f"AUTH PLAIN {plain_credentials(name, password)}"],
            "AUTH PLAIN and base64 of NUL, name, NUL, password (RFC 4616), in one line",
        ),
        "login": AuthRecipe(
            lambda name, password: ["AUTH LOGIN", base64_text(name), base64_text(password)],
            "AUTH LOGIN, then the name and the password in base64, each after a 334",
        ),
    }
    REPLY = re.compile(r"(\d{3})(?:([ -])(.*))?")

    @staticmethod
    def parse(line: str) -> ParsedReply | None:
        match = SMTPDialect.REPLY.fullmatch(line)
        return ParsedReply(match[1], match[3] or "", match[2] != "-") if match else None

    @staticmethod
    def blocks_after(sent: Sent, reply: ParsedReply) -> int:
        # The seed's RETR: "250 N messages follow", then N messages, each ended by a "." line.
        count = reply.text.split(" ", 1)[0]
        return int(count) if sent.verb == "RETR" and reply.status == "250" and count.isdigit() else 0

    @staticmethod
    def block_note(number: int, count: int) -> str | None:
        return f"(end of message {number} of {count})"

    @staticmethod
    def closes(reply: ParsedReply) -> bool:
        # RFC 5321 3.8: 421 closes; the seed: so does a failed login.
        return reply.status in ("421", "535")


class POP3Dialect(Dialect):
    name = "POP3"
    tls_verb = "STLS"
    tls_go_ahead = "+OK"
    go_on = frozenset({"+", "+OK"})
    challenge = "+"
    commands_help = (
        "POP3 commands (RFC 1939): USER name, PASS password, AUTH PLAIN, STAT, LIST [n], UIDL [n], RETR n,"
        " TOP n lines, DELE n, RSET, NOOP, CAPA, STLS, QUIT"
    )
    auth: ClassVar[dict[str, AuthRecipe]] = {
        "plain": AuthRecipe(
            lambda name, password: ["AUTH PLAIN", plain_credentials(name, password)],
            'AUTH PLAIN, then after the server\'s "+" base64 of NUL, name, NUL, password (RFC 5034)',
        ),
        "user": AuthRecipe(
            lambda name, password: [f"USER {name}", f"PASS {password}"],
            "USER NAME, then PASS and the password (RFC 1939)",
        ),
    }
    # RFC 1939: these answer +OK with a block of lines ended by "."; LIST and UIDL only without
    # a number, and AUTH without a mechanism lists the mechanisms (a common habit, RFC 1734's).
    MULTI_LINE = frozenset({"CAPA", "RETR", "TOP"})
    LISTS = frozenset({"LIST", "UIDL", "AUTH"})

    @staticmethod
    def parse(line: str) -> ParsedReply | None:
        for status in ("+OK", "-ERR", "+"):  # "+" is RFC 5034's go-on, after the longer ones
            if line == status or line.startswith(status + " "):
                return ParsedReply(status, line[len(status) + 1 :], True)
        return None

    @staticmethod
    def blocks_after(sent: Sent, reply: ParsedReply) -> int:
        multi_line = sent.verb in POP3Dialect.MULTI_LINE or (sent.verb in POP3Dialect.LISTS and not sent.argument)
        return 1 if reply.status == "+OK" and multi_line else 0

    @staticmethod
    def closes(reply: ParsedReply) -> bool:
        # After a failed login, or a trouble of the server's, it may hang up: the seed's rule, here.
        return reply.status == "-ERR" and reply.text.startswith(("[AUTH]", "[SYS/"))


class Shown(NamedTuple):
    """One line for the console to show: kind "C", "S", "why" (an explanation) or "note".

    typed is, for a C: line the student typed, the line as typed (a terminal shows it already).
    """

    kind: str
    text: str
    typed: str | None = None


class ConsoleSession:
    """One connection of the raw console: what is typed goes out as it is, each line ended by CRLF.

    A reader thread shows every line from the server the moment it arrives and pairs each
    reply with the command it answers, oldest first, so that its explanation fits. It knows
    just enough of the protocol for that: it reads RETR's and POP3's blocks whole, does the
    TLS handshake after STARTTLS/STLS, doubles a leading dot in a message and hides
    credentials. It shows everything through show(); it never reads the terminal.

    Methods for the console: start(), send(), wait(), close().
    """

    def __init__(
        self,
        dialect: type[Dialect],
        sock: socket.socket,
        show: Callable[[Shown], None],
        tls: ssl.SSLContext,
        host: str,
    ) -> None:
        self.dialect = dialect
        self.sock = sock
        self.received = b""  # bytes read but not yet a whole line
        self.show = show
        self.tls = tls
        self.host = host
        self.on_close: Callable[[], None] = lambda: None
        self.state = threading.Condition()  # guards what follows; never held while showing
        self.pending: deque[Sent] = deque([Sent("CONNECT")])  # the greeting answers the connection
        self.blocks = (0, 0)  # of the blocks following a reply: (read, expected)
        self.message_lines: int | None = None  # lines of the message typed after a 354; None outside
        self.answering = False  # the next line answers a challenge: a credential
        self.mask = CredentialMask()
        self.last_status = ""
        self.quit_answered = False
        self.closing = False  # a reply said the server closes the connection now
        self.closed = False
        self.leaving = False
        # OpenSSL allows no two threads in one connection at once (not even one reading and one
        # writing), so every use of the socket holds this lock; the reader waits for bytes in a
        # select() outside it. The TLS handshake replaces the socket under it too.
        self.io_lock = threading.Lock()
        self.reader = threading.Thread(target=self.read_replies, name="raw-reader", daemon=True)

    @property
    def in_message(self) -> bool:
        return self.message_lines is not None

    def start(self) -> None:
        self.reader.start()

    def send(self, line: str, *, typed: bool = False) -> None:
        """Send one line (a command, or a line of a message) and show it as C:, credentials masked."""
        with self.state:
            if self.closed:
                shown, notes, wire = [], ["(not sent: the connection is closed)"], None
            elif self.message_lines is not None:
                wire, notes = self.message_line(line)
                shown = [wire]
            else:
                shown, notes, wire = [self.mask.shown(line, answer=self.answering)], [], line
                verb, _, argument = line.partition(" ")
                # An answer to a challenge belongs to the AUTH it continues; its text is a secret.
                sent = Sent("AUTH", TRACE_MASK) if self.answering else Sent(verb.upper(), argument.strip())
                self.pending.append(sent)
                self.answering = False
        for text in shown:
            self.show(Shown("C", text, line if typed else None))
        for note in notes:
            self.show(Shown("note", note))
        if wire is not None:
            try:
                with self.io_lock:
                    self.sock.settimeout(SOCKET_TIMEOUT)
                    self.sock.sendall(wire.encode("utf-8") + b"\r\n")
            except OSError as error:
                self.show(Shown("note", f"(not sent: {error})"))

    def message_line(self, line: str) -> tuple[str, list[str]]:
        """Return a message line as it goes on the wire, and notes; "." ends the message."""
        assert self.message_lines is not None
        if line == ".":
            count, self.message_lines = self.message_lines, None
            self.pending.append(Sent("."))
            return line, [f'(end of the message: {plural(count, "line")} sent, then the ".")']
        self.message_lines += 1
        if line.startswith("."):
            # RFC 5321 4.5.2: only a "." alone ends the data, so a line's leading "." is doubled
            # on the wire, and the server takes the extra one away again.
            return "." + line, [f'(the line starts with ".": SMTP sends it as ".{line}", RFC 5321 4.5.2)']
        return line, []

    def wait(self, timeout: float) -> None:
        """Wait until every command sent has its reply (and blocks), or the connection is gone."""
        with self.state:
            self.state.wait_for(lambda: self.closed or not (self.pending or self.blocks[1]), timeout)
            if self.closing:  # the server said it would close: let it, before anything more is sent
                self.state.wait_for(lambda: self.closed, CLOSE_WAIT)

    def close(self) -> None:
        """Close the connection, without a word to the server."""
        self.leaving = True
        with self.io_lock, contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # ends the reader's select()
        self.sock.close()
        if self.reader.is_alive() and self.reader is not threading.current_thread():
            self.reader.join(SOCKET_TIMEOUT)

    # -- the reader thread ------------------------------------------------------------

    def read_replies(self) -> None:
        if hasattr(signal, "pthread_sigmask"):
            # Ctrl-C must reach the main thread, the one waiting for the student: a SIGINT
            # taken by this thread would leave it waiting.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            while (received := self.receive()) != b"":
                self.received += received or b""
                while (line := self.next_line()) is not None:
                    self.take(line)
        except (OSError, ValueError):  # ValueError: the socket was closed under us, leaving
            pass
        finally:
            with self.state:
                self.closed = True
                self.state.notify_all()
            if not self.leaving:
                self.show(Shown("note", CLOSED_NOTE))
            self.on_close()

    def receive(self) -> bytes | None:
        """Wait for bytes from the server; return them, b"" at the end, or None if a TLS record held none."""
        with self.io_lock:
            sock = self.sock
            buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0  # decrypted, not yet taken
        if not buffered:
            select.select([sock], [], [])
        with self.io_lock:
            self.sock.setblocking(False)
            try:
                return self.sock.recv(MAX_LINE)
            except (ssl.SSLWantReadError, BlockingIOError):
                return None

    def next_line(self) -> str | None:
        """Take the next whole line received (a line over MAX_LINE comes in pieces); None if there is none yet."""
        end = self.received.find(b"\n")
        if end < 0:
            if len(self.received) < MAX_LINE:
                return None
            end = MAX_LINE - 1
        line, self.received = self.received[: end + 1], self.received[end + 1 :]
        return decode(line).removesuffix("\n").removesuffix("\r")

    def take(self, line: str) -> None:
        """Show one line from the server; explain it if it ends a reply, and act on what it means."""
        self.show(Shown("S", line))
        with self.state:
            in_block = self.blocks[1] > 0
            block_note = self.block_line(line) if in_block else None
            sent = self.pending[0] if self.pending else None
        if in_block:
            if block_note:
                self.show(Shown("note", block_note))
            return
        reply = self.dialect.parse(line)
        if reply is None or not reply.final:
            return
        self.show(Shown("why", explain(reply.status, reply.text, sent.verb if sent else None)))
        if sent and sent.verb == self.dialect.tls_verb and reply.status == self.dialect.tls_go_ahead:
            self.start_tls()
        with self.state:
            if self.pending:
                self.pending.popleft()
            self.last_status = reply.status
            self.answering = reply.status == self.dialect.challenge
            self.quit_answered = sent is not None and sent.verb == "QUIT"
            self.closing = self.quit_answered or self.dialect.closes(reply)
            self.blocks = (0, self.dialect.blocks_after(sent, reply) if sent else 0)
            message_starts = sent is not None and sent.verb == "DATA" and reply.status == self.dialect.message_go_ahead
            if message_starts:
                self.message_lines = 0
            self.state.notify_all()
        if message_starts:
            self.show(
                Shown("note", '(message mode: each line is sent as you type it; a line holding only "." ends it)')
            )

    def block_line(self, line: str) -> str | None:
        """Count one line of a block (the state held); after a block's ".", return the note to show, if any."""
        if line != ".":
            return None
        read, expected = self.blocks
        self.blocks = (read + 1, expected) if read + 1 < expected else (0, 0)
        self.state.notify_all()
        return self.dialect.block_note(read + 1, expected)

    def start_tls(self) -> None:
        """The TLS handshake, after the server said go ahead (RFC 3207, RFC 2595)."""
        with self.io_lock:
            try:
                self.sock.settimeout(SOCKET_TIMEOUT)
                tls_sock = self.tls.wrap_socket(self.sock, server_hostname=self.host)
            except (OSError, ValueError) as error:
                self.show(Shown("note", f"(TLS failed: {tls_failure(error)})"))
                raise
            # Whatever the server sent in clear after its go-ahead is dropped (RFC 3207 5).
            self.sock, self.received = tls_sock, b""
        self.show(Shown("note", f"(TLS is on: {tls_sock.version()}; the server has forgotten all said before it)"))


# --- 9. The raw console: the terminal -------------------------------------------------------------

PROMPT = "C: "  # what the student types reads as the C: line of the transcript
REPLY_WAIT = 10  # seconds a person at the terminal waits for a reply before the prompt comes back anyway
DIM, NORMAL = "\x1b[2m", "\x1b[22m"  # ECMA-48 SGR: faint, then normal intensity
ERASE_LINE = "\r\x1b[K"  # back to the line's start, and clear it
LINE_UP = "\x1b[A"


def understands_ansi(stream: TextIO) -> bool:
    """True if stream is a terminal that understands ANSI (ECMA-48) sequences."""
    if not stream.isatty() or os.environ.get("TERM") == "dumb":
        return False
    # Windows consoles understand them in Windows Terminal; the old console shows them raw.
    return os.name != "nt" or "WT_SESSION" in os.environ


def wants_colour(stream: TextIO) -> bool:
    """True if stream can show colour and the user has not asked for none (https://no-color.org)."""
    return understands_ansi(stream) and not os.environ.get("NO_COLOR")


class RawConsole:
    """The terminal side of --raw: reads what the student types, runs the ':' helpers, prints what ConsoleSession shows.

    On a terminal the prompt is "C: ", so a typed line reads as the C: line of the
    transcript; server lines that arrive meanwhile are printed above the prompt. From a pipe
    each line read is echoed as C: and the console waits for its reply before the next.
    """

    def __init__(self, dialect: type[Dialect], *, explain: bool, interactive: bool) -> None:
        self.dialect = dialect
        self.explain = explain
        self.interactive = interactive  # a person at a terminal; else lines come from a pipe
        self.ansi = understands_ansi(sys.stdout)  # the cursor can be moved
        self.colour = wants_colour(sys.stdout)
        self.transcript: list[str] = []  # what was shown, credentials masked, for :save
        self.print_lock = threading.Lock()
        self.prompt: str | None = None  # on the screen, waiting for input
        self.prompt_gone = False  # the connection closed while the prompt waited, and it was not drawn again
        self.left = False  # the student left (Ctrl-D, :quit): not the server's doing
        self.session: ConsoleSession | None = None
        self.line_editor = None
        if interactive:
            with contextlib.suppress(ImportError):  # Windows has no readline: input() works without
                import readline

                self.line_editor = readline

    # -- showing --------------------------------------------------------------------

    def show(self, shown: Shown) -> None:
        """Print one line (from any thread) and keep it for the transcript."""
        if shown.kind == "why" and not self.explain:
            return
        text = printable(shown.text)
        line = f"{shown.kind}: {text}".rstrip() if shown.kind in ("C", "S") else f"   {text}"
        with self.print_lock:
            self.transcript.append(line)
            if shown.typed is not None and self.interactive:
                self.replace_typed_line(shown, line)
            else:
                self.print_above_prompt(line, dim=shown.kind in ("why", "note"))

    def replace_typed_line(self, shown: Shown, line: str) -> None:
        """A typed line is on the screen already; where it goes out otherwise (masked, a dot doubled), overwrite it."""
        if shown.text == shown.typed:
            return
        masked_here = TRACE_MASK in shown.text and TRACE_MASK not in (shown.typed or "")
        editor = self.line_editor
        last = editor.get_current_history_length() if editor is not None else 0
        if masked_here and editor is not None and last and editor.get_history_item(last) == shown.typed:
            editor.remove_history_item(last - 1)  # keep the password out of the history, too
        if self.ansi:
            sys.stdout.write(f"{LINE_UP}{ERASE_LINE}{line}\n")
            sys.stdout.flush()

    def print_above_prompt(self, line: str, *, dim: bool) -> None:
        """Print line; if the prompt is on the screen, print above it and show it again with what was typed,
        unless the connection has closed: then no prompt is left waiting for a line nobody will read."""
        prompt = self.prompt if self.interactive and not self.prompt_gone else None
        if prompt is not None:
            sys.stdout.write(ERASE_LINE if self.ansi else "\n")
        sys.stdout.write(f"{DIM}{line}{NORMAL}\n" if dim and self.colour else f"{line}\n")
        typed = self.line_editor.get_line_buffer() if prompt is not None and self.line_editor else ""
        if prompt is not None and self.session is not None and self.session.closed:
            self.prompt_gone = True
            if typed:
                sys.stdout.write(f"   (not sent: {printable(typed)})\n")
        elif prompt is not None:
            sys.stdout.write(prompt + typed)
        sys.stdout.flush()

    def note(self, text: str) -> None:
        self.show(Shown("note", text))

    # -- reading ----------------------------------------------------------------------

    def read(self, prompt: str, *, secret: bool = False) -> str:
        """Return one line typed (or piped); raise EOFError at its end, KeyboardInterrupt on Ctrl-C."""
        with self.print_lock:
            self.prompt = prompt
        try:
            if not self.interactive:
                return input()
            return getpass.getpass(prompt) if secret else input(prompt)
        finally:
            with self.print_lock:
                self.prompt = None

    def interrupt_reading(self) -> None:
        """Called by the reader thread when the connection ends: stop waiting for the student to type."""
        with self.print_lock:
            # A signal is the one thing that ends a blocking input() (where the platform can aim it).
            if self.prompt is not None and hasattr(signal, "pthread_kill"):
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    # -- the session ------------------------------------------------------------------

    def run(self, session: ConsoleSession, *, starttls: bool) -> int:
        """Run the session until one side ends it; return the exit status."""
        self.session = session
        session.on_close = self.interrupt_reading
        session.start()
        session.wait(SOCKET_TIMEOUT)  # the greeting
        if starttls and not session.closed:
            self.helper_starttls("")
        while not session.closed:
            try:
                # An answer the server asked for is read without echo, as a password is.
                line = self.read(PROMPT, secret=session.answering and not session.in_message)
                if line.startswith(":") and not session.in_message:
                    if not self.interactive:  # shown as a terminal would, but kept out of the transcript
                        with self.print_lock:
                            self.print_above_prompt(f"{PROMPT}{line}", dim=False)
                    self.run_helper(line)
                else:
                    session.send(line, typed=True)
                session.wait(REPLY_WAIT if self.interactive else SOCKET_TIMEOUT)
            except KeyboardInterrupt:  # Ctrl-C, or the reader saying the connection is gone
                if session.closed:
                    if self.interactive and not self.prompt_gone:
                        sys.stdout.write("\n")  # below the prompt, and whatever was typed but not sent
                    break
                if not self.interactive:
                    self.leave()
                    return 130
                sys.stdout.write("\n")  # Ctrl-C at a terminal only clears the line
            except EOFError:  # Ctrl-D, or the end of the piped input
                if self.interactive:
                    sys.stdout.write("\n")
                self.leave()
        session.close()
        return 0 if self.left or session.quit_answered else 1

    def leave(self) -> None:
        """Send QUIT, wait for the goodbye, close. In a message, QUIT would be a line of it: just close."""
        session = self.session
        assert session is not None
        self.left = True
        if session.closed:
            return
        if session.in_message:
            self.note('(the message was not ended with a "." line, so the server drops it)')
        else:
            session.send("QUIT")
            session.wait(REPLY_WAIT)
        session.close()

    # -- the helpers: lines starting with ':', never sent -----------------------------

    def run_helper(self, line: str) -> None:
        name, _, argument = line[1:].partition(" ")
        helper = getattr(self, f"helper_{name.lower()}", None) if name.isalpha() else None
        if helper is None:
            self.note(f"(:{name} is no helper; :help lists them)")
            return
        helper(argument.strip())

    def helper_auth(self, argument: str) -> None:
        """:auth MECHANISM NAME — log in as NAME; the password is asked without echo, and masked in the transcript"""
        assert self.session is not None
        mechanism, _, name = argument.partition(" ")
        recipe = self.dialect.auth.get(mechanism.lower())
        if recipe is None or not name.strip():
            usage = " or ".join(f":auth {known} NAME" for known in self.dialect.auth)
            self.note(f"(write {usage})")
            return
        password = self.read("Password: ", secret=True)
        first, *answers = recipe.lines(name.strip(), password)
        self.note(f"(:auth {mechanism.lower()} sends {recipe.how})")
        self.session.send(first)
        for answer in answers:
            self.session.wait(SOCKET_TIMEOUT)
            if self.session.closed or self.session.last_status not in self.dialect.go_on:
                return
            self.session.send(answer)

    def helper_starttls(self, argument: str) -> None:
        """:starttls — switch to TLS: STARTTLS (POP3: STLS), then the handshake"""
        assert self.session is not None
        self.session.send(self.dialect.tls_verb)
        self.session.wait(SOCKET_TIMEOUT)

    def helper_help(self, argument: str) -> None:
        """:help — this list, and the server's commands"""
        helpers = sorted(name for name in dir(self) if name.startswith("helper_"))
        mechanisms = "|".join(self.dialect.auth)
        for name in helpers:
            self.note((getattr(self, name).__doc__ or f":{name[7:]}").splitlines()[0].replace("MECHANISM", mechanisms))
        self.note("(Ctrl-C clears the line; Ctrl-D sends QUIT and leaves)")
        if self.dialect.help_command is not None:
            assert self.session is not None
            self.session.send(self.dialect.help_command)
        else:
            self.note(self.dialect.commands_help)

    def helper_save(self, argument: str) -> None:
        """:save FILE — write the transcript so far into FILE, passwords masked"""
        if not argument:
            self.note("(write :save FILE)")
            return
        try:
            with open(argument, "w", encoding="utf-8") as file:
                file.writelines(line + "\n" for line in self.transcript)
        except OSError as error:
            self.note(f"(cannot save: {error})")
            return
        self.note(f"(saved {plural(len(self.transcript), 'line')} to {argument})")

    def helper_quit(self, argument: str) -> None:
        """:quit — send QUIT and leave"""
        self.leave()


def run_raw(args: argparse.Namespace, tls: ssl.SSLContext) -> int:
    """Connect, and type the protocol by hand (--raw); return the exit status."""
    dialect = POP3Dialect if args.pop3 else SMTPDialect
    port = args.pop3_port if args.pop3 else args.port
    try:
        sock = socket.create_connection((args.host, port), timeout=SOCKET_TIMEOUT)
        if args.tls:
            sock = tls.wrap_socket(sock, server_hostname=args.host)
    except ssl.SSLCertVerificationError as error:
        # The menu's one-line advice for the same mistakes: nobody there, TLS or not, an untrusted certificate.
        account = Account(args.host, port, None, tls, implicit_tls=args.tls, cafile=args.cafile)
        print(untrusted(error, args.host, args.cafile, account.certificate_names), file=sys.stderr)
        return 1
    except OSError as error:
        print(unreachable(error, args.host, port, tls=True), file=sys.stderr)
        return 1
    console = RawConsole(dialect, explain=not args.no_explain, interactive=sys.stdin.isatty())
    console.note(f"(connected to {args.host}:{port}, {dialect.name}; :help lists the helpers, Ctrl-D leaves)")
    session = ConsoleSession(dialect, sock, console.show, tls, args.host)
    return console.run(session, starttls=args.starttls)


# --- 10. The conformance checker (--check): the seed's rules as a table of checks -----------------
#
# Each check is data: its name, where its rule is written, what it sends and which replies pass.
# One loop (Checker.run_check) runs any of them on a connection of its own, so a server that
# closes or crashes mid-run meets a fresh connection at the next check.  No reply is waited for
# longer than CHECK_WAIT: a silent server fails its checks and the run goes on.  The table, the
# JSON and --check-all's rows are all made from the same results.

CHECK_WAIT = 5  # seconds for any one reply, or for the close after QUIT: then FAIL, never a hang
SEGMENT_PAUSE = 0.2  # seconds between the TCP segments of a split line, so that they arrive apart
MAX_REPLY_LINE = 64 * 1024  # a longer "reply line" is garbage, not a reply
MAX_RETRIEVED = 10 * 1024 * 1024  # octets RETR may send back before the checker stops reading
CHECK_DOMAIN = "checker.example"  # RFC 2606: a name that is nobody's
LONG_LINE = 10_000  # octets of the very long command line: far over RFC 5321 4.5.3.1.4's 512
NO_REPLY = f"no reply in {CHECK_WAIT} s"
SILENT_CHECKS = 3  # checks in a row without a reply, after which the server is taken for hung
GATED_VERBS = frozenset({"MAIL", "RCPT", "DATA", "RETR", "DELE"})  # what a server may keep for logged-in users


class Stage(enum.IntEnum):
    """How far a check's connection gets before the check sends anything."""

    CONNECTED = 0  # nothing read: the check reads the greeting itself
    GREETED = 1  # the 220 read (and TLS started, with --starttls)
    HELLO = 2  # HELO answered 250; with --user, EHLO and AUTH PLAIN instead
    MAIL = 3  # then MAIL FROM answered 250
    RCPT = 4  # then RCPT TO answered 250
    DATA = 5  # then DATA answered 354: the check sends the message


class Step(NamedTuple):
    """One thing a check sends, and the replies that pass.

    send: a line in pieces; two or more go out SEGMENT_PAUSE apart, as separate TCP segments. Fields
    in braces are filled in per run: {sender}, {recipient}, {domain}, {login}, {wrong_login}.
    allowed: the reply codes that pass; none means the server must close the connection instead.
    """

    send: tuple[str, ...]
    allowed: tuple[str, ...]
    verb: str  # what the reply answers, for explain(): a verb, "CONNECT", or "." for a message's end
    text: str = ""  # a regular expression the reply's text must start with, and what it stands for:
    text_means: str = ""
    retrieves: bool = False  # RETR's blocks follow a 250: this run's messages, checked byte for byte


class Check(NamedTuple):
    """One row of the report."""

    name: str
    source: str  # the seed's section, or "RFC 5321 x.y (seed silent)"
    stage: Stage
    sent: str  # what the check sends, as a person reads it
    steps: tuple[Step, ...]
    required: bool = True
    needs: str = ""  # "auth": the server offers AUTH or --user is given; "login": --user is given
    stored: str = ""  # the message this check has stored, as RETR must give it back


def command(line: str, *allowed: str, verb: str = "", **options: str | bool) -> Step:
    """A step that sends one command line (CRLF added)."""
    return Step((line + "\r\n",), allowed, verb or line.split(" ", 1)[0].upper(), **options)  # type: ignore[arg-type]


STILL_ANSWERS = command("NOOP", "250")
CLOSES = Step((), (), "QUIT")  # nothing sent: the server must close the connection
HEADER = "From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: client.py --check: {check}\r\n\r\n"


def mail_check(
    name: str,
    source: str,
    sent: str,
    body: str,
    *,
    stored: str | None = None,
    split: bool = False,
    then: tuple[Step, ...] = (),
    required: bool = True,
    stage: Stage = Stage.DATA,
) -> Check:
    """A check that sends one message after the 354 (the final "." split into TCP segments if split);
    RETR must give back stored (by default body) under the same header. From Stage.RCPT it sends DATA first."""
    header = HEADER.replace("{check}", name)
    wire = header + body
    pieces = (wire[:-1], "\n.", "\r", "\n") if split else (wire + ".\r\n",)
    end = Step(pieces, ("250",), ".")
    if stage == Stage.RCPT:
        then, end = (end, *then), command("DATA", "354")
    return Check(
        name, source, stage, sent, (end, *then), required, stored=header + (body if stored is None else stored)
    )


CHECKS: tuple[Check, ...] = (
    Check("greeting", "seed 4.2", Stage.CONNECTED, "(connect)",
          (Step((), ("220",), "CONNECT", r"\[?[A-Za-z0-9][A-Za-z0-9.:-]*\]?( |$)", "220 <domain>"),)),
    Check("HELO", "seed 3, 4.2", Stage.GREETED, "HELO checker.example", (command("HELO {domain}", "250"),)),
    Check("MAIL", "seed 2, 4.2", Stage.HELLO, "MAIL FROM:<...>", (command("MAIL FROM:<{sender}>", "250"),)),
    Check("RCPT", "seed 2, 4.2", Stage.MAIL, "RCPT TO:<...>", (command("RCPT TO:<{recipient}>", "250"),)),
    mail_check("DATA", "seed 4.2, 8", "DATA, a message, .", "Blah blah blah(MAIL CONTENT) ...\r\n",
               stage=Stage.RCPT),
    Check("RCPT before MAIL", "seed 2; RFC 5321 4.1.4", Stage.HELLO, "RCPT TO:<...>",
          (command("RCPT TO:<{recipient}>", "503", "500"),)),
    Check("DATA before RCPT", "seed 2; RFC 5321 3.3", Stage.MAIL, "DATA", (command("DATA", "503", "554", "500"),)),
    mail_check("bare LF.LF is not the end", "RFC 5321 4.1.1.4 (seed silent)", "text, LF . LF, text, then NOOP",
               "A bare LF.LF comes next; it is text, not the end\n.\nXYZZY this line is text too\r\n",
               then=(STILL_ANSWERS,)),
    mail_check("a .. line", "RFC 5321 4.5.2 (seed silent)", "..text and a .. line",
               "..a line that starts with a dot\r\n..\r\nthe line above holds a dot only\r\n",
               stored=".a line that starts with a dot\r\n.\r\nthe line above holds a dot only\r\n"),
    mail_check("end of data split", "RFC 5321 2.3.8 (seed silent)", "text\\r | \\n. | \\r | \\n",
               "The end of the data comes in four TCP segments\r\n", split=True),
    mail_check("8-bit text", "RFC 6152 (seed silent)", "UTF-8 text",
               "Grüße aus Köln, 8-bit text: ½ € 日本\r\n", required=False),
    mail_check("1000-octet line", "RFC 5321 4.5.3.1.6 (seed silent)", "a line of 998 octets + CRLF",
               "x" * 998 + "\r\n"),
    Check("HELP", "seed 3, 4.2", Stage.GREETED, "HELP", (command("HELP", "214", "211"),)),
    Check("HELP <command>", "seed 3, 4.2", Stage.GREETED, "HELP MAIL", (command("HELP MAIL", "214", "211"),)),
    Check("NOOP", "seed 3, 4.2", Stage.GREETED, "NOOP", (STILL_ANSWERS,)),
    Check("command split", "RFC 5321 2.3.8 (seed silent)", Stage.GREETED, "NO | OP",
          (Step(("NO", "OP\r\n"), ("250",), "NOOP"),)),
    Check("lower-case verb", "RFC 5321 2.4 (seed silent)", Stage.GREETED, "noop", (command("noop", "250"),)),
    Check("unknown command", "seed 4.1", Stage.GREETED, "XYZZY", (command("XYZZY", "500"),)),
    Check("parameter not implemented", "seed 4.1, 4.2", Stage.GREETED, "HELP XYZZY", (command("HELP XYZZY", "504"),)),
    Check("garbage line", "seed 4", Stage.GREETED, "NUL 0xFF 0x80 ..., then NOOP",
          (command("\x00\udcff\udc80 garbage \x01\x7f", "500", verb="XYZZY"), STILL_ANSWERS)),
    Check("very long line", "RFC 5321 4.3.2 (seed silent)", Stage.GREETED, f"{LONG_LINE:,} octets, then NOOP",
          (command("X" * LONG_LINE, "500", verb="XYZZY"), STILL_ANSWERS)),
    Check("QUIT", "seed 3, 4.2", Stage.GREETED, "QUIT", (command("QUIT", "221"), CLOSES)),
    Check("wrong password", "seed 7", Stage.GREETED, "EHLO, AUTH PLAIN ******** (wrong)",
          (command("EHLO {domain}", "250"), command("AUTH PLAIN {wrong_login}", "535"), CLOSES), needs="auth"),
    Check("login", "seed 7 (AUTH PLAIN: RFC 4954)", Stage.GREETED, "EHLO, AUTH PLAIN ********",
          (command("EHLO {domain}", "250"), command("AUTH PLAIN {login}", "235")), needs="login"),
    Check("RETR", "seed 5", Stage.HELLO, "RETR",
          (command("RETR", "250", text=r"\d+(?!\S)", text_means="250 <count>", retrieves=True),), needs="login"),
    Check("DELE, then RETR", "seed 6", Stage.HELLO, "DELE, RETR",
          (command("DELE", "250"), command("RETR", "250", text=r"0(?!\S)", text_means="250 0 (none left)")),
          needs="login"),
)  # fmt: skip


class CheckResult(NamedTuple):
    """How one check went: PASS, FAIL or SKIP, what came back, and what a FAIL means (a SKIP: why)."""

    check: Check
    verdict: str
    received: str
    meaning: str = ""

    def as_dict(self) -> dict[str, object]:
        """The result as --json prints it."""
        check = self.check
        allowed = ", then ".join("/".join(step.allowed) or "close" for step in check.steps)
        return {
            "check": check.name,
            "source": check.source,
            "sent": check.sent,
            "allowed": allowed,
            "received": self.received,
            "result": self.verdict,
            "required": check.required,
            "meaning": self.meaning,
        }


class CheckFailed(Exception):
    """A check cannot go on: its message is what was received, meaning what that means."""

    def __init__(self, received: str, meaning: str = "", *, skip: bool = False) -> None:
        super().__init__(received)
        self.received = received
        self.meaning = meaning or received
        self.skip = skip


class Reply(NamedTuple):
    """One reply as the checker read it."""

    code: str
    text: str  # of its last line
    crlf: bool  # every line ended in CRLF (RFC 5321 4.2)


class Target(NamedTuple):
    """One server to check, and how: --host, --port, --user, TLS."""

    host: str
    port: int
    user: str | None = None
    tls: ssl.SSLContext | None = None  # None: plain text; else STARTTLS, or TLS at once if implicit_tls
    implicit_tls: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Probe:
    """One raw connection of the checker: bytes as a check wants them, every read bounded by CHECK_WAIT."""

    def __init__(self, target: Target) -> None:
        try:
            sock = socket.create_connection((target.host, target.port), timeout=CHECK_WAIT)
        except TimeoutError:
            raise CheckFailed(f"no connection in {CHECK_WAIT} s") from None
        except OSError as error:
            raise CheckFailed(f"cannot connect: {error.strerror or error}") from None
        # Each send is its own segment: the split checks depend on it (and replies come no later).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = sock
        self.target = target
        self.pending = b""  # received, not yet read
        if target.tls is not None and target.implicit_tls:
            self.start_tls()

    def start_tls(self) -> None:
        assert self.target.tls is not None
        try:
            self.sock = self.target.tls.wrap_socket(self.sock, server_hostname=self.target.host)
        except (OSError, ValueError) as error:
            raise CheckFailed(
                f"TLS failed: {tls_failure(error) if isinstance(error, ssl.SSLError) else error}"
            ) from None

    def send(self, pieces: tuple[bytes, ...]) -> None:
        """Send each piece; between two, pause so that they go as separate TCP segments."""
        try:
            self.sock.settimeout(CHECK_WAIT)  # a server that stops reading must not stop the checker either
            for number, piece in enumerate(pieces):
                if number:
                    time.sleep(SEGMENT_PAUSE)
                self.sock.sendall(piece)
        except TimeoutError:
            raise CheckFailed(f"the server took nothing in {CHECK_WAIT} s") from None
        except OSError as error:
            raise CheckFailed(f"the server closed the connection ({error.strerror or error})") from None

    def read_line(self, deadline: float) -> bytes:
        """One line, its line end included; raise CheckFailed on silence past deadline, a close, or garbage."""
        while b"\n" not in self.pending:
            if len(self.pending) > MAX_REPLY_LINE:
                raise CheckFailed(f"a line of over {MAX_REPLY_LINE} octets", "not an SMTP reply")
            self.pending += self.receive(deadline)
        end = self.pending.index(b"\n") + 1
        found, self.pending = self.pending[:end], self.pending[end:]
        return found

    def receive(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CheckFailed(NO_REPLY)
        try:
            self.sock.settimeout(remaining)
            received = self.sock.recv(65536)
        except TimeoutError:
            raise CheckFailed(NO_REPLY) from None
        except OSError as error:
            raise CheckFailed(f"the connection broke ({error.strerror or error})") from None
        if not received:
            raise CheckFailed("the server closed the connection")
        return received

    def reply(self) -> Reply:
        """Read one reply, all its lines within CHECK_WAIT."""
        deadline, crlf = time.monotonic() + CHECK_WAIT, True
        while True:
            raw = self.read_line(deadline)
            crlf = crlf and raw.endswith(b"\r\n")
            text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            parsed = SMTPDialect.parse(text)
            if parsed is None:
                # masked: a server that echoes AUTH PLAIN's line would put the password in the report
                received = f"not a reply: {masked(text)[:60]!r}"
                raise CheckFailed(received, "RFC 5321 4.2: a reply is a 3-digit code and text")
            if parsed.final:
                return Reply(parsed.status, parsed.text, crlf)

    def closes(self) -> bool:
        """True if the server closes the connection within CHECK_WAIT (whatever it sends first)."""
        deadline = time.monotonic() + CHECK_WAIT
        try:
            while True:
                self.receive(deadline)
        except CheckFailed as outcome:
            return outcome.received.startswith(("the server closed", "the connection broke"))

    def block(self, deadline: float, budget: int) -> bytes:
        """One dot-terminated block (RETR's), dot-unstuffed (RFC 5321 4.5.2), of at most budget octets."""
        lines = []
        while (raw := self.read_line(deadline)) != b".\r\n":
            budget -= len(raw)
            if budget < 0:
                raise CheckFailed(f"RETR sent over {MAX_RETRIEVED:,} octets", "more than this run sent")
            lines.append(raw[1:] if raw.startswith(b".") else raw)
        return b"".join(lines)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Checker:
    """One run of CHECKS against one server.

    Methods for the caller: run() returns a CheckResult per check, in CHECKS' order.
    """

    def __init__(self, target: Target, password: str | None = None) -> None:
        self.target = target
        self.fields = {  # what a step's {braces} stand for
            "domain": CHECK_DOMAIN,
            "sender": f"{target.user or 'checker'}@{CHECK_DOMAIN}",
            "recipient": "postmaster@example.org",  # RFC 5321 4.5.1; the server's own domain, once greeted
            "login": plain_credentials(target.user or "", password or ""),
            # Random, and nothing like the password: a server may log what a failed login sent.
            "wrong_login": plain_credentials(target.user or "checker", f"wrong-{os.urandom(6).hex()}"),
        }
        self.offers: set[str] | None = None  # EHLO's keywords, once discover() has asked
        self.silent: str | None = None  # why the server is taken for dead: later checks fail at once
        self.unanswered = 0  # checks in a row that got no reply in time
        self.stored: list[tuple[str, bytes]] = []  # (check, message) that this run had stored, oldest first
        self.altered: dict[str, str] = {}  # check -> how RETR gave its message back altered

    def run(self) -> list[CheckResult]:
        results = []
        for check in CHECKS:
            if check.stage >= Stage.GREETED and self.offers is None:
                self.offers = self.discover()
            results.append(self.run_check(check))
        return [self.blamed(result) for result in results]

    def discover(self) -> set[str]:
        """Return what the server offers (EHLO's keywords); with --user, empty the user's sent messages
        (DELE), so that RETR's check knows what must come back."""
        offers: set[str] = set()
        if self.silent:
            return offers
        with contextlib.suppress(CheckFailed):
            probe = self.open(Stage.GREETED)
            try:
                offers = self.extensions(probe)
                if self.target.user:
                    self.step(probe, command("AUTH PLAIN {login}", "235"))
                    self.step(probe, command("DELE", "250"))
            finally:
                probe.close()
        return offers

    def extensions(self, probe: Probe) -> set[str]:
        """Send EHLO; return the keywords it lists, and each AUTH mechanism as "AUTH PLAIN"."""
        self.send(probe, command("EHLO {domain}", "250"))
        deadline, offers = time.monotonic() + CHECK_WAIT, set()
        while True:
            parsed = SMTPDialect.parse(probe.read_line(deadline).rstrip(b"\r\n").decode("utf-8", "replace"))
            if parsed is None or parsed.status != "250":
                return offers
            keyword, *parameters = parsed.text.upper().split() or [""]
            offers.add(keyword)
            if keyword == "AUTH":
                offers.update(f"AUTH {mechanism}" for mechanism in parameters)
            if parsed.final:
                return offers

    def skipped(self, check: Check) -> str | None:
        """Why check cannot run against this server, or None."""
        offers = self.offers or set()
        if check.needs == "auth" and "AUTH" not in offers and not self.target.user:
            return "the server offers no AUTH (EHLO), and no --user was given"
        if check.needs == "login" and not self.target.user:
            return "needs --user NAME" + (" (the server offers AUTH)" if "AUTH" in offers else "")
        if check.needs and "AUTH" in offers and "AUTH PLAIN" not in offers:
            return "the server's AUTH has no PLAIN, the one mechanism the checker uses"
        return None

    def run_check(self, check: Check) -> CheckResult:
        """Run one check on a connection of its own: PASS, FAIL with what came back, or SKIP with why."""
        if reason := self.skipped(check):
            return CheckResult(check, "SKIP", "", reason)
        if self.silent:
            return CheckResult(check, "FAIL", "not checked", self.silent)
        received: list[str] = []
        probe = None
        try:
            probe = self.open(check.stage)
            for step in check.steps:
                received.append(self.step(probe, step))
                if step.verb == "." and check.stored:  # the server said it has the message
                    self.stored.append((check.name, self.filled(check.stored)))
        except CheckFailed as failure:
            self.note_silence(failure)
            verdict = "SKIP" if failure.skip else "FAIL"
            return CheckResult(check, verdict, ", ".join([*received, failure.received]), failure.meaning)
        finally:
            if probe is not None:
                probe.close()
        self.unanswered = 0
        return CheckResult(check, "PASS", ", ".join(received))

    def note_silence(self, failure: CheckFailed) -> None:
        """After SILENT_CHECKS checks in a row without a reply, take the server for dead (the run stays short)."""
        self.unanswered = self.unanswered + 1 if failure.received.endswith(NO_REPLY) else 0
        if self.unanswered >= SILENT_CHECKS:
            self.silent = f"no reply to {SILENT_CHECKS} checks in a row: the server seems to hang"

    def open(self, stage: Stage) -> Probe:
        """A new connection, brought to stage; a step on the way that fails makes the check fail."""
        probe = Probe(self.target)
        try:
            if stage >= Stage.GREETED:
                self.greeted(probe)
            preparation = {
                Stage.HELLO: self.hello_steps(),
                Stage.MAIL: [command("MAIL FROM:<{sender}>", "250")],
                Stage.RCPT: [command("RCPT TO:<{recipient}>", "250")],
                Stage.DATA: [command("DATA", "354")],
            }
            steps = [step for reached, steps in preparation.items() if reached <= stage for step in steps]
            for step in steps:
                try:
                    self.step(probe, step)
                except CheckFailed as failure:
                    failure.received = f"before it, {step.verb} got {failure.received}"
                    raise
        except BaseException:
            probe.close()
            raise
        return probe

    def hello_steps(self) -> list[Step]:
        """HELO; with --user, EHLO and AUTH PLAIN instead (RFC 4954: AUTH follows EHLO)."""
        if self.target.user:
            return [command("EHLO {domain}", "250"), command("AUTH PLAIN {login}", "235")]
        return [command("HELO {domain}", "250")]

    def greeted(self, probe: Probe) -> None:
        """Read the greeting, then with --starttls start TLS."""
        # Any 2xx will do here: a wrong greeting code is the greeting check's to report, not every check's.
        self.step(probe, Step((), tuple(str(code) for code in range(200, 300)), "CONNECT"))
        if self.target.tls is not None and not self.target.implicit_tls:
            self.extensions(probe)
            self.step(probe, command("STARTTLS", "220"))
            probe.start_tls()

    def filled(self, template: str) -> bytes:
        """template with this run's fields, as bytes on the wire (lone surrogates: the raw octets)."""
        return template.format_map(self.fields).encode("utf-8", "surrogateescape")

    def send(self, probe: Probe, step: Step) -> None:
        probe.send(tuple(self.filled(piece) for piece in step.send))

    def step(self, probe: Probe, step: Step) -> str:
        """Send step, read its reply and judge it; return the reply as the table shows it, or raise CheckFailed."""
        self.send(probe, step)
        if not step.allowed:
            if probe.closes():
                return "closed"
            raise CheckFailed(f"still open after {CHECK_WAIT} s", explain("221", "", "QUIT"))
        try:
            reply = probe.reply()
        except CheckFailed as failure:
            if step.verb == "CONNECT" and failure.received.endswith(NO_REPLY):
                self.silent = f"no greeting in {CHECK_WAIT} s"
            raise
        self.judge(step, reply)
        if step.verb == "CONNECT" and (domain := reply.text.split(" ", 1)[0]):
            self.fields["recipient"] = f"postmaster@{domain}"  # RFC 5321 4.5.1: always accepted
        if step.retrieves:
            return self.retrieved(probe, reply.code, int(reply.text.split()[0]))
        return reply.code

    def judge(self, step: Step, reply: Reply) -> None:
        """Raise CheckFailed unless reply is one step allows, in the form RFC 5321 4.2 gives replies."""
        if reply.code not in step.allowed:
            # RFC 4954 6: 530, authentication required; the server offers AUTH, and we were given no login.
            if (
                step.verb in GATED_VERBS
                and reply.code == "530"
                and "AUTH" in (self.offers or ())
                and not self.target.user
            ):
                raise CheckFailed(reply.code, "the server wants a login first: give --user NAME", skip=True)
            others = f" (or {'/'.join(step.allowed[1:])})" if len(step.allowed) > 1 else ""
            wanted = f"wanted {explain(step.allowed[0], '', step.verb)}{others}"
            raise CheckFailed(reply.code, f"{explain(reply.code, reply.text, step.verb)}; {wanted}")
        if not reply.crlf:
            raise CheckFailed(f"{reply.code} ended by LF", "RFC 5321 4.2: every reply line ends in CRLF, not LF alone")
        if step.text and not re.match(step.text, reply.text):
            shown = printable(reply.text[:40])  # the server's text, drawn on the teacher's terminal
            raise CheckFailed(f"{reply.code} {shown}", f"the seed's reply here is {step.text_means}")

    def retrieved(self, probe: Probe, code: str, count: int) -> str:
        """Read RETR's count blocks: they must be this run's messages, byte for byte after dot-unstuffing."""
        received = f"{code} {plural(count, 'message')}"
        if count != len(self.stored):
            raise CheckFailed(received, f"RETR gave {count} back; this run stored {len(self.stored)}")
        deadline = time.monotonic() + CHECK_WAIT
        for name, stored in self.stored:
            got = probe.block(deadline, MAX_RETRIEVED)
            if got not in (stored, re.sub(rb"(?<!\r)\n", b"\r\n", stored)):  # a bare LF may become CRLF (2.3.8)
                self.altered[name] = difference(stored, got)
        if self.altered:
            raise CheckFailed(received, f"not as they were sent: {', '.join(self.altered)} (see each one's row)")
        return f"{received}, as sent"

    def blamed(self, result: CheckResult) -> CheckResult:
        """result, failed if RETR gave its check's message back altered (its row says how)."""
        how = self.altered.get(result.check.name)
        if how is None:
            return result
        altered = f"the message was not stored as sent: RETR gave {how}"
        if result.verdict == "FAIL":
            return result._replace(meaning=f"{result.meaning}; and {altered}")
        return result._replace(verdict="FAIL", received=f"{result.received}, then RETR: altered", meaning=altered)


def difference(stored: bytes, got: bytes) -> str:
    """Where got first differs from stored: the line, and a few octets either side."""
    same = next((at for at, (one, other) in enumerate(zip(stored, got, strict=False)) if one != other), None)
    if same is None:
        same = min(len(stored), len(got))
    start = max(0, same - 12)
    line = stored[:same].count(b"\r\n") + 1
    return f"line {line} back as {got[start : same + 24]!r}, sent as {stored[start : same + 24]!r}"


# --- 11. The checker's report: the table, --json, --check-all, and their options ------------------


def tally(results: list[CheckResult]) -> tuple[int, int, int]:
    """(required checks passed, required checks run, checks skipped)."""
    required = [result for result in results if result.check.required and result.verdict != "SKIP"]
    passed = sum(result.verdict == "PASS" for result in required)
    return passed, len(required), sum(result.verdict == "SKIP" for result in results)


def passed_all(results: list[CheckResult]) -> bool:
    """True if every required check that ran passed: the exit status is 0."""
    passed, required, _ = tally(results)
    return passed == required


def summary_line(results: list[CheckResult]) -> str:
    passed, required, skipped = tally(results)
    return f"{passed} of {required} required checks passed" + (f" ({skipped} skipped)" if skipped else "")


def first_failure(results: list[CheckResult]) -> str:
    """The first required check that failed, and what came back, or ""."""
    failed = [result for result in results if result.verdict == "FAIL" and result.check.required]
    return f"{failed[0].check.name}: {failed[0].received}" if failed else ""


REPORT_COLUMNS = ("check", "source", "sent", "allowed", "received", "result")
MAX_PARALLEL = 8  # servers --check-all checks at once
COLUMN_WIDTH = 34  # a longer cell is cut: the whole of it is in --json


def print_report(target: Target, results: list[CheckResult]) -> None:
    """The table: one row per check, and under a FAIL or SKIP what it means."""
    rows = [[str(row[column]) for column in REPORT_COLUMNS] for row in (result.as_dict() for result in results)]
    rows = [[cell if len(cell) <= COLUMN_WIDTH else cell[: COLUMN_WIDTH - 1] + "…" for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(REPORT_COLUMNS, *rows, strict=True)]
    print(f"client.py --check {target.address}" + (f" as {target.user}" if target.user else ""))
    for row, result in zip([list(REPORT_COLUMNS), *rows], [None, *results], strict=True):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if result is not None and result.verdict != "PASS" and result.meaning:
            print(f"    {'means' if result.verdict == 'FAIL' else 'why'}: {result.meaning}")
    print(summary_line(results))


def json_report(target: Target, results: list[CheckResult]) -> dict[str, object]:
    """The report as --json prints it."""
    passed, required, skipped = tally(results)
    return {
        "server": target.address,
        "user": target.user,
        "checks": [result.as_dict() for result in results],
        "required_passed": passed,
        "required_run": required,
        "skipped": skipped,
        "passed": passed == required,
    }


def read_password(prompt: str) -> str | None:
    """The password: asked without echo at a terminal, else the next line of stdin (None at its end).

    Nothing is printed on stdout, where --json goes.
    """
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    answer = sys.stdin.readline()
    return answer.rstrip("\r\n") if answer else None


def run_check(args: argparse.Namespace, tls: ssl.SSLContext | None) -> int:
    """--check: check one server, print the table (or JSON); return 0 only if every required check passed."""
    password = None
    if args.user and (password := read_password(f"Password for {args.user}: ")) is None:
        print("--user needs a password: type it, or give it as the first line of stdin.", file=sys.stderr)
        return 2
    target = Target(args.host, args.port, args.user, tls, args.tls)
    results = Checker(target, password).run()
    if args.json:
        print(json.dumps(json_report(target, results), indent=2, ensure_ascii=False))
    else:
        print_report(target, results)
    return 0 if passed_all(results) else 1


# A line of --check-all's file: host:port and an optional user; [::1]:2525 for IPv6.
CLASS_LINE = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})(?:\s+(?P<user>\S+))?")


def read_class_file(path: str) -> tuple[list[tuple[int, str, int, str | None]], list[str]]:
    """The servers of a --check-all file as (line number, host, port, user), and an error per bad line."""
    servers, errors = [], []
    for number, text in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        entry = text.split("#", 1)[0].strip()
        if not entry:
            continue
        match = CLASS_LINE.fullmatch(entry)
        if match is None or not 0 < int(match["port"]) < 65536:
            errors.append(
                f"{path}:{number}: cannot read {text.strip()!r}: write host:port [user], e.g. 10.0.0.7:2525 alice"
            )
            continue
        servers.append((number, match["host"].strip("[]"), int(match["port"]), match["user"]))
    return servers, errors


def run_check_all(args: argparse.Namespace, tls: ssl.SSLContext | None) -> int:
    """--check-all FILE: check a class's servers, MAX_PARALLEL at once; one row per server, CSV with --csv."""
    try:
        servers, errors = read_class_file(args.check_all)
    except OSError as error:
        print(f"Cannot read {args.check_all}: {error.strerror or error}", file=sys.stderr)
        return 2
    for error in errors:
        print(error, file=sys.stderr)
    password = None
    if any(user for *_, user in servers) and (password := read_password("Password of the users in the file: ")) is None:
        print("The file names users: type their password, or give it as the first line of stdin.", file=sys.stderr)
        return 2
    targets = [Target(host, port, user, tls, args.tls) for _, host, port, user in servers]
    graded = list(zip(targets, check_in_parallel(targets, password), strict=True))
    if args.json:
        print(json.dumps([json_report(target, results) for target, results in graded], indent=2, ensure_ascii=False))
    else:
        print_class(graded)
    if args.csv:
        write_csv(args.csv, graded)
    return 0 if not errors and all(passed_all(results) for _, results in graded) else 1


def check_in_parallel(targets: list[Target], password: str | None) -> list[list[CheckResult]]:
    """Check every target, MAX_PARALLEL at once; the results in the targets' order.

    The threads are daemons: after Ctrl-C the client ends at once, not when the checks under way do.
    """
    results: list[list[CheckResult]] = [[] for _ in targets]
    queue = iter(enumerate(targets))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            number, target = item
            results[number] = Checker(target, password).run()

    workers = [threading.Thread(target=work, daemon=True) for _ in range(min(MAX_PARALLEL, len(targets)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def print_class(graded: list[tuple[Target, list[CheckResult]]]) -> None:
    """One row per server: passes, fails, the first failure."""
    width = max([len("server"), *(len(target.address) for target, _ in graded)])
    print(f"{'server'.ljust(width)}  {'user':<10}  passed   failed  first failure")
    for target, results in graded:
        passed, required, _ = tally(results)
        failed = sum(result.verdict == "FAIL" for result in results)
        row = f"{target.address.ljust(width)}  {(target.user or '-'):<10}  {f'{passed}/{required}':<7}  {failed:<6}"
        print(f"{row}  {first_failure(results)}".rstrip())
    print(f"{sum(passed_all(results) for _, results in graded)} of {len(graded)} servers passed every required check")


def write_csv(path: str, graded: list[tuple[Target, list[CheckResult]]]) -> None:
    """A row per server: the counts, the first failure, then each check's PASS/FAIL/SKIP."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["server", "user", "required_passed", "required_run", "skipped", "first_failure",
                         *(check.name for check in CHECKS)])  # fmt: skip
        for target, results in graded:
            writer.writerow([target.address, target.user or "", *tally(results),
                             first_failure(results), *(result.verdict for result in results)])  # fmt: skip


def add_check_options(parser: argparse.ArgumentParser) -> None:
    """The checker's options (the connection's are the client's own: --host, --port, --user, TLS)."""
    group = parser.add_argument_group("the conformance checker")
    group.add_argument("--check", action="store_true", help="check the server against the seed: a table of PASS/FAIL")
    group.add_argument("--check-all", metavar="FILE", help="check a class's servers: one host:port [user] a line")
    group.add_argument("--json", action="store_true", help="with --check or --check-all: the report as JSON")
    group.add_argument("--csv", metavar="FILE", help="with --check-all: also write a row per server to FILE")


def check_option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the checker's options, or None."""
    checking = args.check or args.check_all
    if args.check and args.check_all:
        return "--check checks --host and --port; --check-all the servers in its file: choose one"
    if (args.json and not checking) or (args.csv and not args.check_all):
        return "--json goes with --check or --check-all, --csv with --check-all"
    if checking and (args.raw or args.trace):
        return "--check and --check-all print their own report: drop --raw and --trace"
    if args.check_all and args.user:
        return "with --check-all the users are in the file (host:port user)"
    return None


def run_checks(args: argparse.Namespace, tls: ssl.SSLContext | None) -> int:
    """--check or --check-all; return the exit status."""
    try:
        return run_check_all(args, tls) if args.check_all else run_check(args, tls)
    except KeyboardInterrupt:  # Ctrl-C
        print("\n(interrupted: no report)", file=sys.stderr)
        return 130
    except OSError as error:  # --csv's file, say
        print(f"client.py: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2


# --- 12. The command line -------------------------------------------------------------------------

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2525


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Menu client for the teaching mail server: SMTP to send, POP3 to read the inbox."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server address (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--user", help="log in as USER instead of asking")
    parser.add_argument("--trace", action="store_true", help="print every protocol line as C:/S:")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--starttls", action="store_true", help="switch to TLS before logging in (STARTTLS; STLS for the inbox)"
    )
    tls.add_argument(
        "--tls",
        action="store_true",
        help="TLS from the start (the --tls-port); the inbox with STLS, or from the start on --pop3-port",
    )
    parser.add_argument("--cafile", help="trust this certificate (PEM), e.g. the server's self-signed one")
    parser.add_argument(
        "--pop3-port",
        type=int,
        help=f"the server's POP3 port (default {DEFAULT_POP3_PORT}); with --tls, its POP3S port",
    )
    raw = parser.add_argument_group("the raw console")
    raw.add_argument("--raw", action="store_true", help="type SMTP yourself; each reply is explained")
    raw.add_argument("--pop3", action="store_true", help="with --raw: type POP3 (on --pop3-port) instead")
    raw.add_argument("--no-explain", action="store_true", help="with --raw: no explanation under each reply")
    add_check_options(parser)
    return parser


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error for options that do not go together."""
    if (args.pop3 or args.no_explain) and not args.raw:
        parser.error("--pop3 and --no-explain go with --raw")
    if args.raw and (args.user or args.trace):
        parser.error("--raw shows every line and logs in with :auth; drop --user and --trace")
    if problem := check_option_problem(args):
        parser.error(problem)


def main(argv: list[str] | None = None) -> int:
    """Run the client; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_options(parser, args)
    pop3_port_given = args.pop3_port is not None
    args.pop3_port = args.pop3_port if pop3_port_given else DEFAULT_POP3_PORT
    # A terminal that cannot show a character, or input that is not UTF-8,
    # must not end the session in a traceback.
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    if not 0 < args.port < 65536:
        print(f"Port {args.port} is out of range: a port is a number from 1 to 65535.", file=sys.stderr)
        return 2
    try:
        tls = ssl.create_default_context(cafile=args.cafile) if args.starttls or args.tls or args.raw else None
    except (OSError, ssl.SSLError) as error:
        print(f"Cannot use --cafile {args.cafile}: {error}", file=sys.stderr)
        return 2
    if args.raw:
        assert tls is not None
        return run_raw(args, tls)
    if args.check or args.check_all:
        return run_checks(args, tls)
    trace = print if args.trace else None
    account = Account(
        args.host,
        args.port,
        trace,
        tls,
        implicit_tls=args.tls,
        cafile=args.cafile,
        pop3_port=args.pop3_port,
        pop3s=args.tls and pop3_port_given,
    )
    try:
        log_in(account, args.user)
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
        say_goodbye(account)  # QUIT if still connected
    return 0


if __name__ == "__main__":
    sys.exit(main())
