"""SMTP's replies by name: those that code branches on, sends from several places, or picks from a table.

Each number stays beside its text, since those numbers are what students learn; a reply
sent from one place only is written where it is sent, in `smtp.py`. The two guards that send
NEED_AUTH and NEED_MAIL, `requires_login` and `requires_transaction`, are here beside them.
"""

from __future__ import annotations

import errno
import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from .data import MAX_TEXT_LINE, DataState
from .envelope import MAX_LOCAL_PART, Refusal, owns
from .login import LoginOutcome
from .logs import printable
from .sasl import AuthProblem

if TYPE_CHECKING:
    from .config import ServerConfig
    from .smtp import SMTPHandler
    from .users import UserStore


class Reply(NamedTuple):
    """One SMTP reply, for the replies that code branches on or sends from several places."""

    code: int
    text: str


OK = Reply(250, "OK")
AUTH_REFUSALS = {  # the reply to an AUTH exchange that stops before a password is checked
    AuthProblem.TOO_LONG: Reply(501, "Error: authentication line too long"),
    AuthProblem.CANCELLED: Reply(501, "Authentication cancelled"),
    AuthProblem.BAD_BASE64: Reply(501, "Error: invalid base64"),
    AuthProblem.MALFORMED: Reply(501, "Malformed PLAIN response"),
    AuthProblem.MALFORMED_NAME: Reply(501, "Malformed username: no spaces around it"),
    AuthProblem.UNKNOWN_MECHANISM: Reply(504, "Unrecognized authentication type; use {mechanisms}"),
}
LOGIN_REFUSALS = {  # the reply to a login that did not succeed; {reason} is the throttle's
    LoginOutcome.WRONG: Reply(535, "5.7.8 Authentication credentials invalid"),
    LoginOutcome.THROTTLED: Reply(454, "4.7.0 {reason}"),
    LoginOutcome.TLS_FIRST: Reply(530, "Must issue a STARTTLS command first"),
    LoginOutcome.REVOKED: Reply(421, "4.7.0 Your account was removed or its password changed, closing connection"),
}
RCPT_REFUSALS = {  # the reply to a recipient envelope.route() refuses
    Refusal.NO_SUCH_USER: Reply(550, "5.1.1 <{address}>: no such user here"),
    Refusal.MAILBOX_FULL: Reply(452, "4.2.2 <{address}>: mailbox full"),
}
# The 250 to a recipient only the sender's Sent folder keeps (RFC 3463 2.1.5: the destination is valid).
SENT_ONLY_ELSEWHERE = Reply(
    250, "2.1.5 <{address}>: not a domain of this server, kept in your Sent folder only (no relay)"
)
SENT_ONLY_NO_POSTMASTER = Reply(250, "2.1.5 <{address}>: no postmaster account here, kept in your Sent folder only")
NEED_AUTH = Reply(530, "Authentication required")
NEED_MAIL = Reply(503, "Error: need MAIL command")


def data_refusal(state: DataState, max_size: int) -> Reply:
    """The one reply for data that ended over a limit (a line too long, a message too big)."""
    if state is DataState.LINE_TOO_LONG:
        return Reply(500, f"Error: line longer than {MAX_TEXT_LINE} octets")
    return Reply(552, f"Message size exceeds the limit of {max_size} bytes")


def storage_refusal(error: OSError) -> Reply:
    """The reply for a disk that refused: try again later (RFC 5321 4.2.2: 452 when it is full)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return Reply(452, "Insufficient system storage")
    return Reply(451, "Requested action aborted: local error in processing")


def sent_only(address: str, local_domains: frozenset[str]) -> Reply:
    """The 250 for a recipient whose mail stays in the sender's Sent folder: another domain, or a postmaster
    of this server without an account (envelope.route() found no account for it)."""
    _, at, domain = address.rpartition("@")  # <postmaster> alone has no domain: it is this server's
    reply = SENT_ONLY_ELSEWHERE if at and domain.lower() not in local_domains else SENT_ONLY_NO_POSTMASTER
    return Reply(reply.code, reply.text.format(address=address))


def mail_refusal(
    address: str, unknown: str | None, declared_size: int, user: str, config: ServerConfig, users: UserStore
) -> Reply | None:
    """MAIL's refusal, if any: a parameter not understood (555), a SIZE over the limit (552), or
    an address not the user's own (553, see envelope.owns()); None if the transaction may start."""
    if unknown is not None:
        return Reply(555, f"MAIL parameter not recognized: {printable(unknown[:40])}")
    if declared_size > config.max_message_size:
        return Reply(552, f"Message size exceeds the limit of {config.max_message_size} bytes")
    if not owns(user, address, config, users):
        return Reply(553, f"5.7.1 <{address}>: not owned by user {user}")
    return None


def bare_name_refusal(argument: str, hostname: str) -> Reply | None:
    """For RCPT TO:<name> without a domain, the 501 that names the address it needs (RFC 5321 4.1.2); else None."""
    bare = re.fullmatch(r"TO:\s*<([^<>@\s]+)>", argument, re.IGNORECASE)
    if bare is None:
        return None
    name = printable(bare[1][:MAX_LOCAL_PART])
    return Reply(501, f"5.1.3 <{name}> has no domain: a user of this server is <{name}@{hostname}>")


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
