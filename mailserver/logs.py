"""What reaches the log: one place that escapes client text and masks credentials.

Every line of the --verbose dialogue goes through a session's `WireLog`, so a terminal
escape sequence or a password cannot slip into the log by another path. What is masked,
each in its place, is listed on `WireLog`. The web view (--web) gets its lines from the
same place, masked by the same code: `WireLog.write` hands each to the session's watch.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import select
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .events import SessionWatch

log = logging.getLogger("mailserver")

PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # the longest write a pipe takes whole; POSIX: 512 at least
MASK = "********"
# SASL mechanism names (RFC 4422 3.1) a client may name: shown, so a student sees which was asked for.
MECHANISMS = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2"})
# A run of base64 long enough to hold a name and a password; shorter ones are left alone.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")
BASE64_WORD = re.compile(r"\s*[A-Za-z0-9+/]{4,}={0,2}\s*")


def printable(text: str) -> str:
    """Escape control characters, so that client text cannot play tricks on a terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def base64_decoded(text: str, *, cut_off: bool = False) -> bytes | None:
    """text decoded as base64, padded or not; None if it is not base64.

    cut_off: text may be the start of longer base64 (a reply shows 40 characters of it).
    """
    text = text.strip().rstrip("=")
    if cut_off:
        text = text[: len(text) - (len(text) % 4 == 1)]  # a last character alone holds no whole octet
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def hides_nul(run: str) -> bool:
    """True if run is base64 of something holding a NUL, as an AUTH PLAIN response does (RFC 4616)."""
    decoded = base64_decoded(run, cut_off=True)
    return decoded is not None and b"\0" in decoded


def mask_plain_responses(line: str) -> str:
    """Mask every run of base64 in line that hides a NUL: a PLAIN response, wherever it turns up."""
    return BASE64_RUN.sub(lambda run: MASK if hides_nul(run[0]) else run[0], line)


def mask_payload(line: str) -> str:
    """Mask what follows the verb of an AUTH line (the mechanism stays if it is one) or a PASS line.

    Words may be separated by any whitespace: `AUTH\\tPLAIN <blob>` hides the blob too.
    """
    words = line.split()
    if len(words) < 2 or words[0].upper() not in ("AUTH", "PASS"):
        return line
    shown = 2 if words[0].upper() == "AUTH" and words[1].upper() in MECHANISMS else 1
    if len(words) == shown:
        return line
    last_shown = words[shown - 1]
    # The line up to the last word shown (found from the left: never further than it is), then the mask.
    return line[: line.index(last_shown) + len(last_shown)] + " " + MASK


def credential_lines_after(line: str) -> int:
    """How many lines after this one may carry credentials: the answers an AUTH line calls for.

    LOGIN asks a username and a password, other mechanisms one response; an initial
    response on the AUTH line itself is one of them (RFC 4954 4, RFC 5034 4).
    """
    words = line.split()
    if not words or words[0].upper() != "AUTH":
        return 0
    answers = 2 if len(words) > 1 and words[1].upper() == "LOGIN" else 1
    return answers - (len(words) > 2)


class WireLog:
    """The --verbose log of one session's dialogue: `peer C: line` and `peer S: line`, escaped.

    Masked, the part that may be a credential replaced by MASK:
    - the payload of an AUTH line (the mechanism stays) or a POP3 PASS line, whatever the
      whitespace between the words;
    - the lines that answer an AUTH: the answers to the server's challenges, and, when the
      AUTH was refused, the lines a client may send anyway (its username and password) as
      long as they are no command;
    - a line that is no command and a single word of base64: a LOGIN answer out of place;
    - the name of a POP3 USER line that is no account: it may be a password typed into
      the wrong field (an account's name is shown, so a class sees who logs in);
    - any run of base64 that hides a NUL (an AUTH PLAIN response), in any line either way,
      for a reply may echo what the client sent (HELP, EHLO, MAIL parameters).
    """

    def __init__(
        self,
        peer: str,
        commands: Iterable[str],
        is_account: Callable[[str], bool],
        *,
        logged: bool = True,
        watch: SessionWatch | None = None,
    ) -> None:
        self.peer = peer
        self.logged = logged  # --verbose: the lines go to the log
        self.watch = watch  # --web: and to the web view
        self.commands = frozenset(verb.upper() for verb in commands)
        self.is_account = is_account
        self.credential_lines = 0  # lines from the client still to mask, after an AUTH

    def client(self, line: str, *, credential: bool = False) -> None:
        """Log a line from the client; credential: the session knows it is an answer to a challenge."""
        command = self.is_command(line)
        if credential or (self.credential_lines and not command):
            self.credential_lines = max(0, self.credential_lines - 1)
            self.write("C:", MASK)
            return
        self.credential_lines = credential_lines_after(line)
        if not command and BASE64_WORD.fullmatch(line) and base64_decoded(line) is not None:
            self.write("C:", MASK)
        elif self.names_no_account(line):
            self.write("C:", f"{line.split()[0]} {MASK}")
        else:
            self.write("C:", mask_plain_responses(mask_payload(line)))

    def server(self, line: str) -> None:
        """Log a reply line, which may echo what the client sent."""
        self.write("S:", mask_plain_responses(line))

    def message(self, direction: str, line: str) -> None:
        """Log a line of a message (DATA, RETR): no command, but it may hold a PLAIN response.

        Tabs show as spaces: a folded header's next line (RFC 5322 2.2.3), such as the
        Received field's `\tby host`, then reads as an indented line rather than `\\t`.
        """
        self.write(direction, mask_plain_responses(line).expandtabs(4), in_message=True)

    def message_end(self, direction: str, lines: int, octets: int) -> None:
        """A message going direction has ended (the log has its first lines): the web view folds it."""
        if self.watch is not None:
            self.watch.message_end(direction, lines, octets)

    def names_no_account(self, line: str) -> bool:
        """True for a USER line whose name is no account."""
        words = line.split(maxsplit=1)
        return len(words) == 2 and words[0].upper() == "USER" and not self.is_account(words[1].strip())

    def is_command(self, line: str) -> bool:
        words = line.split(maxsplit=1)
        return bool(words) and words[0].upper() in self.commands

    def write(self, direction: str, text: str, *, in_message: bool = False) -> None:
        """The one way out of a line: escaped, to the log and to the web view's watch."""
        text = printable(text)
        if self.logged:
            log.info("%s %s %s", self.peer, direction, text)
        if self.watch is None:
            return
        if in_message:
            self.watch.message_line(text)
        else:
            self.watch.line(direction, text)


def plural(count: int, noun: str) -> str:
    """`1 message`, `2 messages`: counts in log lines and replies."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class OneWriteHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes each line with one write() to the stream's descriptor, holding no lock.

    logging's StreamHandler holds its lock while it writes and flushes, so with a thread per
    session every line waited for another's system call: the "stored message" line of each
    delivery made two contended lock acquisitions, futex calls and context switches. A
    write() of one line needs no lock: Linux appends it whole to a file, and a pipe takes up
    to PIPE_BUF octets whole (POSIX). A longer line (a traceback), or a stream with no
    descriptor (a test's StringIO), goes through the lock as before.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        try:
            self.descriptor: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.StringIO and the like
            self.descriptor = None
        self.encoding = getattr(self.stream, "encoding", None) or "utf-8"

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        if not self.filter(record):
            return False
        if self.descriptor is None:
            return bool(super().handle(record))
        try:
            line = (self.format(record) + self.terminator).encode(self.encoding, "backslashreplace")
            if len(line) > PIPE_BUF:
                with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
                    self._write_all(line)
            else:
                self._write_all(line)
        except Exception:  # as logging does: a log line must never take the server down
            self.handleError(record)
        return True

    def _write_all(self, data: bytes) -> None:
        assert self.descriptor is not None
        while data:
            data = data[os.write(self.descriptor, data) :]
