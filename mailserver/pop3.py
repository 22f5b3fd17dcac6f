"""The POP3 session: the inbox, read (RFC 1939, with RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH).

One `pop3_<VERB>` method per command, as in SMTP: its docstring's first line is the
syntax (the reply to wrong arguments quotes it), the rest what the command does.

    S: +OK mail.example POP3 server ready
    C: USER bob
    S: +OK Send your password with PASS
    C: PASS ********
    S: +OK bob has 1 message (214 octets)
    C: LIST
    S: +OK 1 message (214 octets)
    S: 1 214
    S: .
    C: RETR 1
    S: +OK 214 octets
    S: Return-Path: <alice@mail.example>
    S: ...
    S: .
    C: DELE 1
    S: +OK Message 1 deleted
    C: QUIT
    S: +OK mail.example POP3 server signing off (0 messages left)

A session goes through three states (RFC 1939 3): AUTHORIZATION until the login,
TRANSACTION with a snapshot of the inbox taken at login (a Maildrop: the messages and
the deletion marks), and UPDATE while QUIT removes the marked messages. A session that
ends any other way (a dropped connection, a timeout) removes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

from .login import Login, LoginOutcome
from .logs import log, plural
from .sasl import MAX_AUTH_LINE, AuthProblem, Credentials, well_formed_name
from .session import Hangup, LineHandler, offered_when
from .storage import AlreadyDeleted, InboxMessage, Maildrop, MaildropInUse, MessageGone, NoSuchMessage, StoredMessage

MAX_COMMAND_LINE = 255  # RFC 2449 4: octets, CRLF included

OK = "+OK"
ERR = "-ERR"
AUTH_REFUSALS = {  # the -ERR for an AUTH exchange that stops before a password is checked
    AuthProblem.TOO_LONG: "Authentication line too long",
    AuthProblem.CANCELLED: "Authentication cancelled",
    AuthProblem.BAD_BASE64: "Invalid base64",
    AuthProblem.MALFORMED: "Malformed PLAIN response",
    AuthProblem.MALFORMED_NAME: "Malformed username: no spaces around it",
    AuthProblem.UNKNOWN_MECHANISM: "Unrecognized authentication type; use {mechanisms}",
}
LOGIN_REFUSALS = {  # the -ERR for a login that did not succeed; {reason} is the throttle's
    LoginOutcome.WRONG: "[AUTH] Invalid username or password",
    LoginOutcome.THROTTLED: "[SYS/TEMP] {reason}",
    LoginOutcome.TLS_FIRST: "[AUTH] Use STLS first: this server takes no password in clear text",
    LoginOutcome.REVOKED: "[AUTH] Your account was removed or its password changed; closing connection",
}


class State(enum.Enum):
    """RFC 1939 3: where a POP3 session is; each command belongs to a state."""

    AUTHORIZATION = "before login"
    TRANSACTION = "logged in"
    UPDATE = "signing off"


WRONG_STATE = {
    State.AUTHORIZATION: "Already logged in",
    State.TRANSACTION: "Not logged in: use USER and PASS, or AUTH PLAIN",
}

Command = Callable[["POP3Handler", str], None]


def in_state(state: State) -> Callable[[Command], Command]:
    """Guard: outside state, the command answers -ERR and does nothing."""

    def guard(command: Command) -> Command:
        @functools.wraps(command)
        def guarded(self: POP3Handler, argument: str) -> None:
            if self.state is not state:
                self.reply(ERR, WRONG_STATE[state])
                return
            command(self, argument)

        return guarded

    return guard


class POP3Handler(LineHandler):
    """One POP3 session. A command method gets the text after the verb, replies with
    self.reply() and returns; raising Hangup ends the session."""

    protocol = "POP3"
    command_prefix = "pop3_"
    max_command_line = MAX_COMMAND_LINE
    longer_lines: ClassVar[dict[str, int]] = {"AUTH": MAX_AUTH_LINE}  # an initial response may be long
    # PASS: RFC 1939 7 lets spaces be part of a password. USER: a name is the exact text, no space around it.
    verbatim_arguments: ClassVar[frozenset[str]] = frozenset({"PASS", "USER"})

    # -- what LineHandler asks of a protocol --------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.state = State.AUTHORIZATION
        self.user_named: str | None = None  # USER's argument, waiting for PASS
        self.user: str | None = None  # whose inbox, once logged in
        self.maildrop: Maildrop | None = None

    def finish(self) -> None:
        if self.maildrop is not None:  # no QUIT: nothing is removed (RFC 1939 6)
            self.maildrop.close()
        super().finish()

    def logged_in_as(self) -> str | None:
        return self.user

    def status(self) -> tuple[str | None, str, bool]:
        return self.user, self.state.value, self.tls_active

    def idle_timeout(self) -> float:
        return self.config.pop3_timeout  # RFC 1939 3: at least 10 minutes; SMTP's --timeout is shorter

    def greet(self) -> None:
        self.reply(OK, f"{self.config.hostname} POP3 server ready")

    def reply_line_too_long(self) -> None:
        self.reply(ERR, f"Line too long (at most {MAX_COMMAND_LINE} octets)")

    def reply_unknown_command(self) -> None:
        self.reply(ERR, "Unknown command; the commands are " + " ".join(self.offered_commands()))

    def closing(self, reason: str) -> None:
        self.reply(ERR, f"[SYS/TEMP] {self.config.hostname} {reason}, closing connection")

    def tls_started(self) -> None:
        self.user_named = None  # RFC 2595 4: forget what was said in clear text

    @classmethod
    def refusal(cls, hostname: str, reason: str) -> bytes:
        return f"{ERR} [SYS/TEMP] {hostname} {reason}, closing connection\r\n".encode()

    def reply(self, status: str, text: str, lines: Iterable[str] | None = None) -> None:
        """Send `+OK text` or `-ERR text`; with lines, a multi-line response ended by "." (RFC 1939 3).

        No line given here starts with a dot (capabilities, numbers, Maildir names), so none needs stuffing.
        """
        if status == ERR:
            self.errors += 1
        block = "" if lines is None else "".join(f"{line}\r\n" for line in lines) + ".\r\n"
        self.send_lines(f"{status} {text}\r\n{block}" if text else f"{status}\r\n{block}")

    def reply_syntax(self, verb: str) -> None:
        """-ERR with the command's syntax: the first line of its docstring."""
        self.reply(ERR, f"Syntax: {self.syntax(verb)}")

    # -- AUTHORIZATION ----------------------------------------------------------------------

    def pop3_CAPA(self, argument: str) -> None:
        """CAPA

        List what this server supports (RFC 2449); allowed in every state.
        """
        capabilities = []
        if self.state is State.AUTHORIZATION and not self.needs_tls_first():
            capabilities += ["USER", " ".join(["SASL", *self.mechanisms()])]
        capabilities += ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION and self.offers("STLS"):
            capabilities.append("STLS")
        capabilities.append("IMPLEMENTATION classroom-mail-server")
        self.reply(OK, "Capability list follows", capabilities)

    @in_state(State.AUTHORIZATION)
    @offered_when(LineHandler.offers_starttls)
    def pop3_STLS(self, argument: str) -> None:
        """STLS

        Switch this connection to TLS (RFC 2595), then log in.
        """
        if self.config.tls_context is None:
            self.reply(ERR, "TLS not available")
            return
        if self.tls_active:
            self.reply(ERR, "TLS already active")
            return
        if argument:
            self.reply_syntax("STLS")
            return
        self.reply(OK, "Begin TLS negotiation")
        self.start_tls()

    @in_state(State.AUTHORIZATION)
    def pop3_USER(self, argument: str) -> None:
        """USER <name>

        Give your username; PASS follows with the password.
        """
        if self.refused_before_tls():
            return
        if not well_formed_name(argument):
            self.reply_syntax("USER")
            return
        self.user_named = argument  # whether it is an account is told by PASS only
        self.reply(OK, "Send your password with PASS")

    @in_state(State.AUTHORIZATION)
    def pop3_PASS(self, argument: str) -> None:
        """PASS <password>

        Give your password, after USER. A wrong username or password ends the connection.
        """
        if self.refused_before_tls():
            return
        if self.user_named is None:
            self.reply(ERR, "Send USER first")
            return
        if not argument:
            self.reply_syntax("PASS")
            return
        user, self.user_named = self.user_named, None
        if self.log_in(Credentials("", user, argument.encode("utf-8"))):
            self.open_inbox(self.account or "")  # the account log_in() found for the name

    @in_state(State.AUTHORIZATION)
    def pop3_AUTH(self, argument: str) -> None:
        """AUTH {mechanisms} [<initial-response>]

        Log in with SASL (RFC 5034); without an initial response the server
        answers "+ " and waits for it. A wrong username or password ends the connection.
        """
        if not argument:  # the mechanism list, as many servers answer it (RFC 1734's habit)
            self.reply(OK, "Mechanisms follow", self.mechanisms())
            return
        if self.refused_before_tls():
            return
        credentials = self.authenticate(argument)
        if credentials is not None and self.log_in(credentials):
            self.open_inbox(self.account or "")  # the account log_in() found for the name

    def send_challenge(self, challenge: bytes) -> None:
        self.send_lines(f"+ {base64.b64encode(challenge).decode()}\r\n")  # RFC 5034 4; PLAIN's is empty: "+ "

    def refuse_auth(self, problem: AuthProblem) -> None:
        self.reply(ERR, AUTH_REFUSALS[problem].format(mechanisms=" or ".join(self.mechanisms())))

    def refuse_login(self, login: Login) -> None:
        self.reply(ERR, LOGIN_REFUSALS[login.outcome].format(reason=login.reason))

    def open_inbox(self, user: str) -> None:
        """Take the snapshot of user's inbox and enter the TRANSACTION state; -ERR if another session has it."""
        try:
            self.maildrop = self.mail.mailboxes.open_maildrop(user)
        except MaildropInUse:
            log.info("%s POP3 %s refused: the inbox is in use", self.peer, user)
            self.reply(ERR, "[IN-USE] Your inbox is open in another POP3 session; try again when it ends")
            return
        except OSError as error:
            log.error("%s POP3 could not open the inbox of %s: %s", self.peer, user, error)
            self.reply(ERR, "[SYS/TEMP] Cannot open your inbox now; try again later")
            return
        self.state, self.user = State.TRANSACTION, user
        count, size = self.maildrop.count(), self.maildrop.size()
        log.info("%s POP3 login %s (%s)", self.peer, user, plural(count, "message"))
        self.reply(OK, f"{user} has {plural(count, 'message')} ({size} octets)")

    # -- TRANSACTION (RFC 1939 5) -------------------------------------------------------------

    @in_state(State.TRANSACTION)
    def pop3_STAT(self, argument: str) -> None:
        """STAT

        Count the messages in your inbox and their size in octets.
        """
        self.reply(OK, f"{self.drop.count()} {self.drop.size()}")

    @in_state(State.TRANSACTION)
    def pop3_LIST(self, argument: str) -> None:
        """LIST [<message-number>]

        The size of each message (or of one) in octets.
        """
        self.scan_listing("LIST", argument, lambda message: str(message.size))

    @in_state(State.TRANSACTION)
    def pop3_UIDL(self, argument: str) -> None:
        """UIDL [<message-number>]

        The unique id of each message (or of one): the same in every session.
        """
        self.scan_listing("UIDL", argument, lambda message: message.unique_id)

    def scan_listing(self, verb: str, argument: str, describe: Callable[[InboxMessage], str]) -> None:
        """LIST and UIDL: one `+OK n text` line for a message, or a block of `n text` lines for all."""
        if not argument:
            lines = [f"{message.number} {describe(message)}" for message in self.drop.list()]
            self.reply(OK, f"{plural(self.drop.count(), 'message')} ({self.drop.size()} octets)", lines)
            return
        number = self.message_number(verb, argument)
        if number is not None:
            with self.message_refusals(number):
                message = self.drop.info(number)
                self.reply(OK, f"{number} {describe(message)}")

    @in_state(State.TRANSACTION)
    def pop3_RETR(self, argument: str) -> None:
        """RETR <message-number>

        Send the message, ended by a line holding a single dot.
        """
        self.send_message("RETR", argument, lambda message: f"{message.size} octets", StoredMessage.chunks)

    @in_state(State.TRANSACTION)
    def pop3_TOP(self, argument: str) -> None:
        """TOP <message-number> <lines>

        Send the message's header and the first <lines> lines of its body.
        """
        number_text, _, lines_text = argument.partition(" ")
        lines = parse_number(lines_text.strip())
        if lines is None:
            self.reply_syntax("TOP")
            return
        self.send_message("TOP", number_text, lambda _: "Top of message follows", lambda m: m.head(lines))

    @in_state(State.TRANSACTION)
    def pop3_DELE(self, argument: str) -> None:
        """DELE <message-number>

        Mark the message deleted; QUIT removes it, RSET unmarks it.
        """
        number = self.message_number("DELE", argument)
        if number is not None:
            with self.message_refusals(number):
                self.drop.mark(number)
                self.reply(OK, f"Message {number} deleted")

    @in_state(State.TRANSACTION)
    def pop3_RSET(self, argument: str) -> None:
        """RSET

        Unmark every message marked deleted in this session.
        """
        self.drop.unmark()
        self.reply(OK, f"Maildrop has {plural(self.drop.count(), 'message')} ({self.drop.size()} octets)")

    @in_state(State.TRANSACTION)
    def pop3_NOOP(self, argument: str) -> None:
        """NOOP

        Do nothing; the server answers +OK.
        """
        self.reply(OK, "")

    def pop3_QUIT(self, argument: str) -> None:
        """QUIT

        Remove the messages marked deleted, then end the session.
        """
        if self.maildrop is None:
            self.reply(OK, f"{self.config.hostname} POP3 server signing off")
            raise Hangup
        self.state = State.UPDATE  # RFC 1939 6
        try:
            removed, left = self.maildrop.commit()  # durable (directory fsync) before the +OK
        except OSError as error:
            log.error("%s POP3 could not remove deleted messages: %s", self.peer, error)
            self.reply(ERR, "[SYS/TEMP] Some deleted messages were not removed")
            raise Hangup from None
        finally:
            self.maildrop.close()  # before the reply: a client that logs in again at once is not [IN-USE]
        if removed:
            log.info("%s POP3 %s removed %s", self.peer, self.user, plural(removed, "message"))
        self.reply(OK, f"{self.config.hostname} POP3 server signing off ({plural(left, 'message')} left)")
        raise Hangup

    # -- helpers of the TRANSACTION commands --------------------------------------------

    @property
    def drop(self) -> Maildrop:
        """The maildrop of a logged-in session (the state guard saw to it)."""
        assert self.maildrop is not None
        return self.maildrop

    def message_number(self, verb: str, argument: str) -> int | None:
        """The number that argument is, or None after the -ERR quoting verb's syntax."""
        number = parse_number(argument)
        if number is None:
            self.reply_syntax(verb)
        return number

    @contextlib.contextmanager
    def message_refusals(self, number: int) -> Iterator[None]:
        """`with self.message_refusals(number):` answers -ERR if the maildrop says number is no message."""
        try:
            yield
        except AlreadyDeleted:
            self.reply(ERR, f"Message {number} already deleted")
        except NoSuchMessage as missing:
            self.reply(ERR, f"No such message; the inbox has {plural(missing.count, 'message')}")

    def send_message(
        self,
        verb: str,
        argument: str,
        status: Callable[[StoredMessage], str],
        content: Callable[[StoredMessage], Iterable[bytes]],
    ) -> None:
        """RETR and TOP: `+OK status`, then the content of the message that argument names, as a block.

        The message is opened before the +OK, so that a message another program removed gets an -ERR.
        """
        number = self.message_number(verb, argument)
        if number is None:
            return
        with self.message_refusals(number):
            try:
                message = self.drop.open(number)
            except (MessageGone, OSError) as error:
                log.warning("%s POP3 could not open message %d: %s", self.peer, number, error)
                self.reply(ERR, "[SYS/TEMP] The message cannot be read now (another program moved or removed it?)")
                return
            with message:
                self.reply(OK, status(message))
                self.send_stored(content(message))


def parse_number(text: str) -> int | None:
    """A non-negative decimal number, or None."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    return int(text)
