"""The SMTP session: one `smtp_<VERB>` method per command, its docstring its HELP text.

The commands of the seed (RFC 821's HELO, MAIL, RCPT, DATA, HELP, NOOP, QUIT, and the
extra RETR and DELE), the extensions real clients expect (EHLO, AUTH PLAIN/LOGIN,
SIZE, 8BITMIME, PIPELINING, STARTTLS), RSET and VRFY. The first line of a docstring
is the syntax, the rest what the command does; HELP shows them.

Delivery: every message goes, byte for byte, into the sender's Sent folder (what RETR
returns); a recipient that is an account here (its domain --hostname, localhost or a
--domain) also gets a copy in its inbox, read over POP3. Nothing is relayed elsewhere.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import errno
import functools
import inspect
import re
from collections.abc import Callable
from typing import ClassVar, NamedTuple

from .data import MAX_TEXT_LINE, DataReader, DataState
from .limits import LoginRefused
from .logs import log, plural, printable
from .sasl import MAX_AUTH_LINE, AuthProblem, Credentials, plain_credentials, username_text
from .session import Hangup, LineHandler
from .storage import MessageGone, StoredMessage

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: the minimum a server must accept
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, angle brackets included

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
    """One SMTP reply, for the replies that code branches on or sends from several places."""

    code: int
    text: str


OK = Reply(250, "OK")
AUTH_REFUSALS = {  # the 501 for an answer to AUTH that cannot be used
    AuthProblem.TOO_LONG: "Error: authentication line too long",
    AuthProblem.CANCELLED: "Authentication cancelled",
    AuthProblem.BAD_BASE64: "Error: invalid base64",
}
NEED_AUTH = Reply(530, "Authentication required")
NEED_MAIL = Reply(503, "Error: need MAIL command")


@dataclasses.dataclass
class Envelope:
    """One mail transaction: started by MAIL, dropped by RSET, HELO/EHLO and the end of DATA."""

    sender: str
    recipients: list[str] = dataclasses.field(default_factory=list)
    accounts: list[str] = dataclasses.field(default_factory=list)  # whose inbox gets a copy, each once
    declared_size: int = 0  # MAIL's SIZE=, if given (RFC 1870)


@dataclasses.dataclass
class Session:
    """What one connection has said so far; STARTTLS starts a fresh one."""

    greeting: str | None = None  # the HELO/EHLO argument
    user: str | None = None  # set by a successful AUTH
    envelope: Envelope | None = None


Command = Callable[["SMTPHandler", str], None]


def requires_login(command: Command) -> Command:
    """Guard: the command answers 530 until the client has logged in."""

    @functools.wraps(command)
    def guarded(self: SMTPHandler, argument: str) -> None:
        if not self.session.user:
            self.reply(*NEED_AUTH)
            return
        command(self, argument)

    return guarded


def requires_transaction(command: Command) -> Command:
    """Guard: the command answers 503 outside a transaction that MAIL started (and 530 before login)."""

    @functools.wraps(command)
    def guarded(self: SMTPHandler, argument: str) -> None:
        if self.session.envelope is None:
            self.reply(*NEED_MAIL)
            return
        command(self, argument)

    return requires_login(guarded)


class SMTPHandler(LineHandler):
    """One SMTP session. A command method gets the text after the verb, replies with
    self.reply() and returns; raising Hangup ends the session."""

    command_prefix = "smtp_"
    max_command_line = MAX_COMMAND_LINE
    longer_lines: ClassVar[dict[str, int]] = {"AUTH": MAX_AUTH_LINE}  # AUTH's initial response may be that long

    # -- what LineHandler asks of a protocol --------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.session = Session()

    def greet(self) -> None:
        self.reply(220, f"{self.config.hostname} Service ready")

    def reply_line_too_long(self) -> None:
        self.reply(500, "Error: line too long")

    def reply_unknown_command(self) -> None:
        self.reply(500, "Error: command not recognized")

    def closing(self, reason: str) -> None:
        self.reply(421, f"{self.config.hostname} {reason}, closing transmission channel")

    def tls_started(self) -> None:
        self.session = Session()  # RFC 3207 4.2: forget everything said in clear text

    @classmethod
    def refusal(cls, hostname: str, reason: str) -> bytes:
        return f"421 {hostname} {reason}, closing transmission channel\r\n".encode()

    def reply(self, code: int, *lines: str) -> None:
        """Send one reply: `code-line` for all lines but the last, then `code line`."""
        lines = lines or ("",)
        last = len(lines) - 1
        if code >= 500:
            self.errors += 1
        self.send_lines("".join(f"{code}{'-' if n < last else ' '}{line}\r\n" for n, line in enumerate(lines)))

    # -- the commands of RFC 821 and the seed ----------------------------------------

    def smtp_HELO(self, argument: str) -> None:
        """HELO <domain>

        Say who you are; the server answers 250. Clears any mail transaction.
        """
        self.hello(argument, extended=False)

    def smtp_EHLO(self, argument: str) -> None:
        """EHLO <domain>

        Like HELO, and the server lists the extensions it supports.
        """
        self.hello(argument, extended=True)

    def hello(self, domain: str, *, extended: bool) -> None:
        if not domain:
            self.reply(501, f"Syntax: {'EHLO' if extended else 'HELO'} <domain>")
            return
        self.session.greeting, self.session.envelope = domain, None
        hello = f"{self.config.hostname} Hello {printable(domain[:100])}"
        if extended:
            self.reply(250, hello, *self.extensions())
        else:
            self.reply(250, hello)

    def extensions(self) -> list[str]:
        """The EHLO keywords of this session."""
        extensions = []
        if not self.needs_tls_first():
            extensions.append("AUTH PLAIN LOGIN")  # never CRAM-MD5: bcrypt keeps no plaintext
        extensions += [f"SIZE {self.config.max_message_size}", "8BITMIME", "PIPELINING"]
        if self.offers_starttls():
            extensions.append("STARTTLS")
        extensions.append("HELP")
        return extensions

    @requires_login
    def smtp_MAIL(self, argument: str) -> None:
        """MAIL FROM:<address> [SIZE=<bytes>] [BODY=7BIT|8BITMIME]

        Start a new message from <address> (<> for none).
        """
        if self.session.envelope is not None:
            self.reply(503, "Error: nested MAIL command")
            return
        parsed = parse_path(argument, "FROM:", allow_null=True)
        if parsed is None:
            self.reply(501, "Syntax: MAIL FROM:<address> [SIZE=<bytes>] [BODY=7BIT|8BITMIME]")
            return
        address, parameters = parsed
        envelope = Envelope(sender=address)
        for parameter in parameters:
            keyword, _, value = parameter.partition("=")
            keyword = keyword.upper()
            if keyword == "SIZE" and value.isdigit() and value.isascii():
                envelope.declared_size = int(value)
                if envelope.declared_size > self.config.max_message_size:
                    self.reply(552, f"Message size exceeds the limit of {self.config.max_message_size} bytes")
                    return
            elif keyword == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                pass  # we store bytes as they come; nothing to convert
            else:
                self.reply(555, f"MAIL parameter not recognized: {printable(parameter[:40])}")
                return
        self.session.envelope = envelope
        self.reply(*OK)

    @requires_transaction
    def smtp_RCPT(self, argument: str) -> None:
        """RCPT TO:<address>

        Add a recipient to the message started by MAIL. An account here (<name@this-server>)
        gets a copy in its inbox; other addresses are kept only in your Sent folder: this
        server does not relay mail to other servers.
        """
        envelope = self.session.envelope
        assert envelope is not None  # the guard saw to it
        parsed = parse_path(argument, "TO:", allow_null=False)
        if parsed is None:
            self.reply(501, "Syntax: RCPT TO:<address>")
            return
        address, parameters = parsed
        if parameters:
            self.reply(555, f"RCPT parameter not recognized: {printable(parameters[0][:40])}")
            return
        if len(envelope.recipients) >= MAX_RECIPIENTS:
            self.reply(452, f"Too many recipients (at most {MAX_RECIPIENTS})")
            return
        try:
            account, refusal = self.destination(address, envelope.declared_size)
        except OSError as error:
            self.reply(*self.storage_error(error))
            return
        if refusal is not None:
            self.reply(*refusal)
            return
        envelope.recipients.append(address)
        if account is not None and account not in envelope.accounts:
            envelope.accounts.append(account)
        self.reply(*OK)

    def destination(self, address: str, declared_size: int) -> tuple[str | None, Reply | None]:
        """(account, None) if address is an account here, (None, None) if only the Sent copy is
        kept, (None, reply) if the recipient is refused."""
        local, _, domain = address.rpartition("@")
        if not local:  # <postmaster> without a domain: this server's
            local, domain = address, self.config.hostname
        if domain.lower() not in self.config.local_domains:
            return None, None  # not ours: kept in the sender's Sent, not relayed
        account = self.mail.users.account(local)
        if account is None:
            # RFC 5321 4.5.1: postmaster is always accepted; without such an account only Sent keeps it.
            if local.lower() == POSTMASTER:
                return None, None
            return None, Reply(550, f"5.1.1 <{address}>: no such user here")
        # Checked at RCPT, as Postfix does: a message may take an inbox a little past the quota.
        used, quota = self.mail.mailboxes.inbox_size(account), self.config.max_mailbox_size
        if used >= quota or used + declared_size > quota:
            return None, Reply(452, f"4.2.2 <{address}>: mailbox full")
        return account, None

    @requires_transaction
    def smtp_DATA(self, argument: str) -> None:
        """DATA

        Send the message itself, ended by a line holding a single dot.
        """
        envelope, user = self.session.envelope, self.session.user
        assert envelope is not None and user is not None  # the guard saw to it
        if not envelope.recipients:
            self.reply(503, "Error: need RCPT command")
            return
        if argument:
            self.reply(501, "Syntax: DATA")
            return
        self.session.envelope = None  # whatever happens now, the transaction is over
        trace = self.trace_fields(envelope.sender) if envelope.accounts else b""
        try:
            delivery = self.mail.mailboxes.start_delivery(user, envelope.accounts, trace)
        except OSError as error:
            self.reply(*self.storage_error(error))
            return
        try:
            self.reply(354, "Start mail input; end with <CRLF>.<CRLF>")
            reader = DataReader(self.rfile, delivery.write, self.config.max_message_size, self.message_tracer("C:"))
            with self.time_limit(self.config.data_timeout):
                try:
                    state = reader.read()
                except EOFError:
                    self.hang_up()  # the client went, or the server cut the data off
        except BaseException:
            delivery.abort()
            raise
        if state is not DataState.NORMAL:
            delivery.abort()
            self.reply(*self.data_refusal(reader))
            return
        try:
            key = delivery.commit()
        except OSError as error:
            self.reply(*self.storage_error(error))
            return
        log.info(
            "%s %s stored message %s from <%s> (%d bytes, %s%s)",
            self.peer,
            user,
            key,
            printable(envelope.sender),
            delivery.size,
            plural(len(envelope.recipients), "recipient"),
            f"; in the inbox of {', '.join(envelope.accounts)}" if envelope.accounts else "",
        )
        self.reply(250, f"OK: stored as {key}")

    def trace_fields(self, sender: str) -> bytes:
        """RFC 5321 4.4: the Return-Path and Received fields a delivering server puts atop the inbox copy."""
        greeting = printable((self.session.greeting or "").encode("ascii", "backslashreplace").decode()[:100])
        address = self.client_address[0]
        literal = f"IPv6:{address}" if ":" in address else address  # RFC 5321 4.1.3
        protocol = "ESMTPSA" if self.tls_active else "ESMTPA"  # RFC 3848: ESMTP, logged in, and S for TLS
        return (
            f"Return-Path: <{sender}>\n"
            f"Received: from {greeting} ([{literal}])\n"
            f"\tby {self.config.hostname} with {protocol}; {email.utils.formatdate(localtime=True)}\n"
        ).encode()

    def data_refusal(self, reader: DataReader) -> Reply:
        """The one reply for data that ended with a problem."""
        if reader.state is DataState.LINE_TOO_LONG:
            return Reply(500, f"Error: line longer than {MAX_TEXT_LINE} octets")
        if reader.state is DataState.TOO_BIG:
            return Reply(552, f"Message size exceeds the limit of {reader.max_size} bytes")
        assert reader.storage_error is not None
        return self.storage_error(reader.storage_error)

    def storage_error(self, error: OSError) -> Reply:
        """Log a disk error and return the reply that tells the client to try again later."""
        log.error("%s could not store a message: %s", self.peer, error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return Reply(452, "Insufficient system storage")
        return Reply(451, "Requested action aborted: local error in processing")

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
        self.reply(252, "Cannot VRFY user: this server does not say which users exist")

    def smtp_HELP(self, argument: str) -> None:
        """HELP [<command>]

        List the commands, or explain one.
        """
        if not argument:
            offered = [verb for verb in self.commands() if verb != "STARTTLS" or self.offers_starttls()]
            self.reply(214, "Commands: " + " ".join(offered), "HELP <command> explains one")
            return
        method = self.command(argument)
        if method is None:
            self.reply(504, f"HELP topic not recognized: {printable(argument[:40])}")
            return
        text = inspect.cleandoc(method.__doc__ or argument.upper())  # python -OO drops docstrings
        self.reply(214, *(line for line in text.splitlines() if line))

    def smtp_QUIT(self, argument: str) -> None:
        """QUIT

        End the session; the server answers 221 and closes the connection.
        """
        self.reply(221, f"{self.config.hostname} Service closing transmission channel")
        raise Hangup

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
        """Check the credentials; the throttle counts the login before bcrypt runs, so no burst outruns it."""
        accepted = self.check_login(credentials)
        if isinstance(accepted, LoginRefused):
            log.warning("%s AUTH refused for %s: %s", self.peer, self.loggable_name(credentials.user), accepted)
            self.reply(454, f"4.7.0 {accepted}")
            return
        if accepted:
            self.session.user = credentials.user
            log.info("%s login %s", self.peer, credentials.user)
            self.reply(235, "2.7.0 Authentication successful")
            return
        log.warning("%s login failed for %s", self.peer, self.loggable_name(credentials.user))
        self.reply(535, "5.7.8 Authentication credentials invalid")
        raise Hangup  # the seed: a wrong username or password ends the connection

    def auth_PLAIN(self, initial: str | None) -> Credentials | None:
        """RFC 4616: base64 of authzid NUL authcid NUL password."""
        response = self.auth_response(initial, b"")
        if response is None:
            return None
        credentials = plain_credentials(response)
        if credentials is None:
            self.reply(501, "Malformed PLAIN response")
        return credentials

    def auth_LOGIN(self, initial: str | None) -> Credentials | None:
        """The de-facto LOGIN mechanism: username and password in two base64 answers."""
        user = self.auth_response(initial, b"Username:")
        if user is None:
            return None
        password = self.auth_response(None, b"Password:")
        if password is None:
            return None
        return Credentials("", username_text(user), password)

    def send_challenge(self, challenge: bytes) -> None:
        self.reply(334, base64.b64encode(challenge).decode())

    def refuse_auth(self, problem: AuthProblem) -> None:
        self.reply(501, AUTH_REFUSALS[problem])

    # -- TLS (RFC 3207) --------------------------------------------------------------

    def smtp_STARTTLS(self, argument: str) -> None:
        """STARTTLS

        Switch this connection to TLS; then say EHLO again.
        """
        if self.config.tls_context is None:
            self.reply(454, "TLS not available")
            return
        if self.tls_active:
            self.reply(503, "Error: TLS already active")
            return
        if argument:
            self.reply(501, "Syntax: STARTTLS")
            return
        self.reply(220, "Ready to start TLS")
        self.start_tls()

    # -- the seed's extra commands ----------------------------------------------------

    @requires_login
    def smtp_RETR(self, argument: str) -> None:
        """RETR

        Send back every message you sent, oldest first: a 250 with the count, then each message ended by a "." line.
        """
        if argument:
            self.reply(504, "RETR takes no parameter")
            return
        assert self.session.user is not None
        try:
            messages = self.mail.mailboxes.sent_messages(self.session.user)
        except OSError as error:
            self.reply(*self.storage_error(error))
            return
        count = len(messages)
        self.reply(250, f"{count} {'message follows' if count == 1 else 'messages follow'}")
        for open_message in messages:
            self.send_sent_message(open_message)

    def send_sent_message(self, open_message: Callable[[], StoredMessage]) -> None:
        """Send one stored message as DATA sends it: CRLF ends, leading dots doubled, then "."."""
        try:
            message = open_message()
        except MessageGone:
            # A DELE (or a Maildir reader) took it since the count was sent: an empty block keeps the count true.
            log.warning("%s a message went during RETR", self.peer)
            self.send_stored(())
            return
        with message:
            self.send_stored(message.chunks())  # a disk error mid-way ends the session with 421

    @requires_login
    def smtp_DELE(self, argument: str) -> None:
        """DELE

        Delete every message you sent; the 250 says how many.
        """
        if argument:
            self.reply(504, "DELE takes no parameter")
            return
        assert self.session.user is not None
        try:
            deleted = self.mail.mailboxes.delete_sent(self.session.user)
        except OSError as error:
            self.reply(*self.storage_error(error))
            return
        log.info("%s %s deleted %s", self.peer, self.session.user, plural(deleted, "message"))
        self.reply(250, f"{plural(deleted, 'message')} deleted")


def parse_path(argument: str, keyword: str, *, allow_null: bool) -> tuple[str, list[str]] | None:
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
