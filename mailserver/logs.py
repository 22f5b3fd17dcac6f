"""What reaches the log: one place that escapes client text and masks credentials.

Every line a session logs about the wire goes through `wire_line()`, so a terminal
escape sequence or a password cannot slip into the log by another path.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mailserver")

MASK = "********"


def printable(text: str) -> str:
    """Escape control characters, so that client text cannot play tricks on a terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def mask_auth(line: str) -> str:
    """Hide the credentials in an AUTH command line."""
    verb, _, rest = line.partition(" ")
    if verb.upper() != "AUTH":
        return line
    mechanism, _, payload = rest.partition(" ")
    return f"{verb} {mechanism} {MASK}" if payload else line


def wire_line(peer: str, direction: str, line: str) -> None:
    """Log one line of a session as `peer C: line` or `peer S: line`, cleaned."""
    log.info("%s %s %s", peer, direction, printable(mask_auth(line) if direction == "C:" else line))
