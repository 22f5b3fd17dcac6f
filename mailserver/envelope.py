"""The envelope of a message: its addresses, where each recipient's copy goes, and the trace fields.

This is the policy SMTP's MAIL, RCPT and DATA apply, apart from the protocol (as aiosmtpd's
handler hooks are):

- `parse_path()` reads `FROM:<address>` and `TO:<address>` (RFC 5321 4.1.2, limits of 4.5.3.1);
- `route()` says where a recipient's copy goes: an account here (its domain is a local one)
  gets a copy in its inbox, unless it is over the quota; any other address is kept in the
  sender's Sent only, since this server relays nothing; postmaster is always accepted;
- `owns()` is MAIL's sender rule: an address in a local domain must be the logged-in user's own;
- `trace_fields()` writes the Return-Path and Received fields atop an inbox copy (RFC 5321 4.4).
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import re
import weakref
from typing import TYPE_CHECKING

from .logs import printable

if TYPE_CHECKING:
    from .config import ServerConfig
    from .storage import MailboxStore
    from .users import UserStore

MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: the minimum a server must accept
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, angle brackets included
TRACE_ROOM = 1024  # octets the trace fields add to an inbox copy, at most (a greeting is cut to 100)

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


@dataclasses.dataclass
class Envelope:
    """One mail transaction: started by MAIL, dropped by RSET, HELO/EHLO and the end of DATA."""

    sender: str
    recipients: list[str] = dataclasses.field(default_factory=list)
    accounts: list[str] = dataclasses.field(default_factory=list)  # whose inbox gets a copy, each once
    inbox_of: dict[str, str | None] = dataclasses.field(default_factory=dict)  # recipient: account, or None
    declared_size: int = 0  # MAIL's SIZE=, if given (RFC 1870)


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


def mail_parameters(parameters: list[str], max_size: int) -> tuple[int, str | None]:
    """MAIL's parameters, read in order up to a SIZE= over max_size or one not understood:
    the SIZE declared (RFC 1870; 0 if none), and the parameter not understood, if any."""
    declared_size = 0
    for parameter in parameters:
        keyword, _, value = parameter.partition("=")
        keyword = keyword.upper()
        if keyword == "SIZE" and value.isdigit() and value.isascii():
            declared_size = int(value)
            if declared_size > max_size:
                break
        elif keyword != "BODY" or value.upper() not in ("7BIT", "8BITMIME"):  # BODY: bytes are stored as they come
            return declared_size, parameter
    return declared_size, None


class Refusal(enum.Enum):
    """Why a recipient is refused; SMTP says it with a code of its own."""

    NO_SUCH_USER = "no such account in a local domain"
    MAILBOX_FULL = "the account's inbox is at its quota"


def route(
    address: str, envelope: Envelope, config: ServerConfig, users: UserStore, mailboxes: MailboxStore
) -> tuple[str | None, Refusal | None]:
    """(account, None) if address is an account here, (None, None) if only the Sent copy is
    kept, (None, refusal) if the recipient is refused. Raise OSError if the disk cannot say.

    An account's inbox holds room for the message for as long as the envelope lives: RSET,
    HELO, STARTTLS, the end of DATA (after its reply) or of the connection drop the envelope,
    and CPython frees it, and so the room, at once (weakref.finalize); no path can forget it.
    """
    local, _, domain = address.rpartition("@")
    if not local:  # <postmaster> without a domain: this server's
        local, domain = address, config.hostname
    if domain.lower() not in config.local_domains:
        return None, None  # not ours: kept in the sender's Sent, not relayed
    account = users.account(local)
    if account is None:
        # RFC 5321 4.5.1: postmaster is always accepted; without such an account only Sent keeps it.
        return None, (None if local.lower() == POSTMASTER else Refusal.NO_SUCH_USER)
    # Checked at RCPT, as Postfix does, with room held for the message until its DATA ends:
    # however many sessions race, one message at most takes an inbox past the quota.
    quota = config.max_mailbox_size
    if account in envelope.accounts:  # its room is held already: only look at the size again
        used = mailboxes.inbox_size(account)
        if used >= quota or used + envelope.declared_size > quota:
            return None, Refusal.MAILBOX_FULL
        return account, None
    # One look at the size, under the inbox's lock: the room left, SIZE= and the room held for others.
    release = mailboxes.reserve(account, quota, config.max_message_size + TRACE_ROOM, envelope.declared_size)
    if release is None:
        return None, Refusal.MAILBOX_FULL
    weakref.finalize(envelope, release)
    return account, None


def owns(user: str, address: str, config: ServerConfig, users: UserStore) -> bool:
    """True unless address is in a local domain and is not user's own (MAIL's sender rule).

    As Postfix's reject_sender_login_mismatch: no student sends as a classmate or the teacher
    into an inbox here. The name is the account a login or RCPT finds for it (case ignored).
    Other domains are allowed (the seed sends as mytest@mail.gr), and so is <>, which names no one.
    """
    local, _, domain = address.rpartition("@")
    return not local or domain.lower() not in config.local_domains or users.account(local) == user


def trace_fields(sender: str, user: str, greeting: str, client_address: str, hostname: str, *, tls: bool) -> bytes:
    """RFC 5321 4.4: the Return-Path and Received fields a delivering server puts atop the inbox copy.

    Received names the logged-in user, as Postfix's smtpd_sasl_authenticated_header does:
    whatever the message claims, its reader can see who sent it.
    """
    greeting = printable(greeting.encode("ascii", "backslashreplace").decode()[:100])
    literal = f"IPv6:{client_address}" if ":" in client_address else client_address  # RFC 5321 4.1.3
    protocol = "ESMTPSA" if tls else "ESMTPA"  # RFC 3848: ESMTP, logged in, and S for TLS
    return (
        f"Return-Path: <{sender}>\n"
        f"Received: from {greeting} ([{literal}])\n"
        f"\t(Authenticated sender: {user})\n"
        f"\tby {hostname} with {protocol}; {email.utils.formatdate(localtime=True)}\n"
    ).encode()
