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
from collections.abc import Callable
from typing import ClassVar

from .data import DataReader, DataState
from .envelope import MAX_RECIPIENTS, Envelope, mail_parameters, parse_path, route, trace_fields
from .login import Login
from .logs import log, plural, printable
from .sasl import MAX_AUTH_LINE, AuthProblem, Credentials, username_text
from .session import Hangup, LineHandler, offered_when
from .smtp_replies import (
    AUTH_REFUSALS,
    LOGIN_REFUSALS,
    OK,
    RCPT_REFUSALS,
    Reply,
    bare_name_refusal,
    data_refusal,
    mail_refusal,
    requires_login,
    requires_transaction,
    sent_only,
    storage_refusal,
)
from .storage import MessageGone, StoredMessage

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included


@dataclasses.dataclass
class Session:
    """What one connection has said so far; STARTTLS starts a fresh one."""

    greeting: str | None = None  # the HELO/EHLO argument
    user: str | None = None  # set by a successful AUTH
    envelope: Envelope | None = None


class SMTPHandler(LineHandler):
    """One SMTP session. A command method gets the text after the verb, replies with
    self.reply() and returns; raising Hangup ends the session."""

    protocol = "SMTP"
    command_prefix = "smtp_"
    max_command_line = MAX_COMMAND_LINE
    longer_lines: ClassVar[dict[str, int]] = {"AUTH": MAX_AUTH_LINE}  # AUTH's initial response may be that long

    # -- what LineHandler asks of a protocol --------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.session = Session()
        self.in_data = False  # between the 354 and the end of the message

    def status(self) -> tuple[str | None, str, bool]:
        session = self.session  # the first step reached, from the last (RFC 5321 3.3: MAIL starts a transaction)
        steps = ((self.in_data, "DATA"), (session.envelope, "in a transaction"), (session.user, "logged in"))
        step = next((name for reached, name in steps if reached), "greeted" if session.greeting else "connected")
        return session.user, step, self.tls_active

    def logged_in_as(self) -> str | None:
        return self.session.user

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
        if code >= 500:
            self.errors += 1
        last = len(lines) - 1  # 0 (or -1) for nearly every reply: one f-string, no generator and join
        text = "".join(f"{code}{'-' if n < last else ' '}{x}\r\n" for n, x in enumerate(lines)) if last > 0 else ""
        self.send_lines(text or f"{code} {lines[0] if lines else ''}\r\n")

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
            self.reply_syntax("EHLO" if extended else "HELO")
            return
        self.session.greeting, self.session.envelope = domain, None
        hello = f"{self.config.hostname} Hello {printable(domain[:100])}"
        self.reply(250, hello, *(self.extensions() if extended else ()))

    def extensions(self) -> list[str]:
        """The EHLO keywords of this session."""
        extensions = []
        if not self.needs_tls_first():
            extensions.append(" ".join(["AUTH", *self.mechanisms()]))  # never CRAM-MD5: bcrypt keeps no plaintext
        extensions += [f"SIZE {self.config.max_message_size}", "8BITMIME", "PIPELINING"]
        if self.offers("STARTTLS"):
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
            self.reply_syntax("MAIL")
            return
        address, parameters = parsed
        declared_size, unknown = mail_parameters(parameters, self.config.max_message_size)
        refusal = mail_refusal(address, unknown, declared_size, self.session.user or "", self.config, self.mail.users)
        if refusal is not None:
            self.reply(*refusal)
        else:
            self.session.envelope = Envelope(sender=address, declared_size=declared_size)
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
            refusal = bare_name_refusal(argument, self.config.hostname)  # <dora>: say what it lacks
            if refusal is None:
                self.reply_syntax("RCPT")
            else:
                self.reply(*refusal)
            return
        address, parameters = parsed
        if parameters:
            self.reply(555, f"RCPT parameter not recognized: {printable(parameters[0][:40])}")
            return
        if len(envelope.recipients) >= MAX_RECIPIENTS:
            self.reply(452, f"Too many recipients (at most {MAX_RECIPIENTS})")
            return
        try:
            account, refusal = route(address, envelope, self.config, self.mail.users, self.mail.mailboxes)
        except OSError as error:
            self.reply(*self.storage_error(error))
            return
        if refusal is not None:
            code, text = RCPT_REFUSALS[refusal]
            self.reply(code, text.format(address=address))
            return
        envelope.recipients.append(address)
        envelope.inbox_of[address] = account
        if account is None:  # kept in the sender's Sent folder only: the 250 says so, all a student's screen shows
            self.reply(*sent_only(address, self.config.local_domains))
            return
        if account not in envelope.accounts:
            envelope.accounts.append(account)
        self.reply(*OK)

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
            self.reply_syntax("DATA")
            return
        self.session.envelope = None  # whatever happens now, the transaction is over (kept here to its reply)
        trace = b""  # only inbox copies carry trace fields
        if envelope.accounts:
            greeting, address = self.session.greeting or "", self.client_address[0]
            trace = trace_fields(envelope.sender, user, greeting, address, self.config.hostname, tls=self.tls_active)
        try:
            delivery = self.mail.mailboxes.start_delivery(user, envelope.accounts, trace)
        except OSError as error:
            self.reply(*self.storage_error(error))
            return
        try:
            self.in_data = True
            self.reply(354, "Start mail input; end with <CRLF>.<CRLF>")
            with self.time_limit(self.config.data_timeout, idle=self.idle_timeout()) as limit:  # each wait: --timeout
                tracer = self.message_tracer("C:")
                reader = DataReader(self.rfile, delivery.write, self.config.max_message_size, tracer, limit.refresh)
                try:
                    state = reader.read()
                except EOFError:
                    self.hang_up()  # the client went, or the server cut the data off
            self.in_data = False
            if state is DataState.NORMAL and self.drilled("data", dropping=delivery):  # --chaos: stored nowhere
                return
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
        inboxes = f"; in the inbox of {', '.join(envelope.accounts)}" if envelope.accounts else ""
        recipients = plural(len(envelope.recipients), "recipient")
        sender = printable(envelope.sender)
        log.info("%s %s stored message %s from <%s> (%d bytes, %s%s)", self.peer, user, key, sender, delivery.size,
                 recipients, inboxes)  # fmt: skip
        if self.watch is not None:
            self.watch.delivered(envelope.sender, envelope.inbox_of.items(), delivery.size)
        self.reply(250, f"OK: stored as {key}")

    def data_refusal(self, reader: DataReader) -> Reply:
        """The one reply for data that ended with a problem."""
        if reader.state is DataState.STORAGE_FAILED:
            assert reader.storage_error is not None
            return self.storage_error(reader.storage_error)
        return data_refusal(reader.state, reader.max_size)

    def storage_error(self, error: OSError) -> Reply:
        """Log a disk error and return the reply that tells the client to try again later."""
        log.error("%s could not store a message: %s", self.peer, error)
        return storage_refusal(error)

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
            self.reply_syntax("VRFY")
            return
        self.reply(252, "Cannot VRFY user: this server does not say which users exist")

    def smtp_HELP(self, argument: str) -> None:
        """HELP [<command>]

        List the commands, or explain one.
        """
        if not argument:
            self.reply(214, "Commands: " + " ".join(self.offered_commands()), "HELP <command> explains one")
            return
        if self.command(argument) is None:
            self.reply(504, f"HELP topic not recognized: {printable(argument[:40])}")
            return
        self.reply(214, *self.help_text(argument.upper()))

    def smtp_QUIT(self, argument: str) -> None:
        """QUIT

        End the session; the server answers 221 and closes the connection.
        """
        self.reply(221, f"{self.config.hostname} Service closing transmission channel")
        raise Hangup

    # -- login (RFC 4954) -----------------------------------------------------------

    def smtp_AUTH(self, argument: str) -> None:
        """AUTH {mechanisms} [<initial-response>]

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
        if self.refused_before_tls():
            return
        if not argument:
            self.reply_syntax("AUTH")
            return
        credentials = self.authenticate(argument)
        if credentials is not None and self.log_in(credentials):
            self.session.user = self.account
            log.info("%s login %s", self.peer, self.account)
            self.reply(235, "2.7.0 Authentication successful")

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
        code, text = AUTH_REFUSALS[problem]
        self.reply(code, text.format(mechanisms=" or ".join(self.mechanisms())))

    def refuse_login(self, login: Login) -> None:
        code, text = LOGIN_REFUSALS[login.outcome]
        self.reply(code, text.format(reason=login.reason))

    def reply_syntax(self, verb: str) -> None:
        """501 with the command's syntax: the first line of its docstring."""
        self.reply(501, f"Syntax: {self.syntax(verb)}")

    # -- TLS (RFC 3207) --------------------------------------------------------------

    @offered_when(LineHandler.offers_starttls)
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
            self.reply_syntax("STARTTLS")
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
