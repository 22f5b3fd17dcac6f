"""SASL as both protocols speak it: SMTP's AUTH (RFC 4954) and POP3's AUTH (RFC 5034).

The wire differs (SMTP asks with `334 <challenge>`, POP3 with `+ <challenge>`); what a
client answers, and what a PLAIN answer holds, is the same, and lives here.
"""

from __future__ import annotations

import base64
import binascii
import enum
from typing import NamedTuple

MAX_AUTH_LINE = 12288  # RFC 4954 4: an AUTH line or answer may be this long; POP3 (RFC 5034) takes the same


class AuthProblem(enum.Enum):
    """Why an AUTH exchange stops before a password is checked; each protocol says it in its own words."""

    TOO_LONG = "the answer is longer than 12288 octets"
    CANCELLED = "the client cancelled"
    BAD_BASE64 = "the answer is not base64"
    MALFORMED = "the answer is not what the mechanism holds"
    MALFORMED_NAME = "the username has whitespace around it, or is empty (see well_formed_name)"
    UNKNOWN_MECHANISM = "no such mechanism here"


class Credentials(NamedTuple):
    authorization_id: str
    user: str
    password: bytes


class Cancelled(Exception):
    """The client answered "*": it gives up the authentication exchange."""


def decode_response(answer: str) -> bytes:
    """Decode one client answer: "*" cancels, "=" is an empty response, anything else base64.

    Raise Cancelled for "*" and ValueError for text that is not base64.
    """
    if answer == "*":
        raise Cancelled
    if answer == "=":  # RFC 4954 4, RFC 5034 4: an empty initial response
        return b""
    try:
        return base64.b64decode(answer, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None


def plain_credentials(response: bytes) -> Credentials | None:
    """RFC 4616: authzid NUL authcid NUL password; None if the response is not of that shape."""
    parts = response.split(b"\0")
    if len(parts) != 3:
        return None
    return Credentials(username_text(parts[0]), username_text(parts[1]), parts[2])


def well_formed_name(name: str) -> bool:
    """The one rule for a name a client logs in with (SMTP AUTH, POP3 USER and AUTH): the exact
    text after the single separating space, not empty, with no whitespace around it.

    A name that breaks it is refused as malformed, before the throttle or the password check:
    `USER  bob` and `bob<TAB>` must not be a second spelling of bob.
    """
    return bool(name) and name == name.strip()


def username_text(raw: bytes) -> str:
    """Decode a username from AUTH; undecodable bytes can match no account."""
    return raw.decode("utf-8", "replace")
