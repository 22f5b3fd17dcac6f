"""The DATA phase on the wire, both ways, over any binary stream: no socket needed.

`DataReader` reads what follows a 354 up to <CRLF>.<CRLF> and hands the message on in its
stored form (LF line ends, as Maildir readers expect; the rule lives in `maildir.py`). It is
a small state machine: the first problem (a line too long, a message too big, a disk that
refuses) sets its state, the rest of the data is read and dropped, and the caller decides
the one reply after the loop.

`dot_stuffed()` turns a stored message back into the wire form: CRLF ends, leading dots
doubled, then the final "." line. RETR and POP3 send messages this way.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from .maildir import stored_form, whole_line_ends, wire_form, wire_size

MAX_TEXT_LINE = 1000  # RFC 5321 4.5.3.1.6, CRLF included, after dot-unstuffing
LINE_LIMIT = MAX_TEXT_LINE + 1  # on the wire, a doubled leading dot may add one octet
TRACE_MESSAGE_LINES = 20  # --verbose logs this much of a message: a classroom example, not a 10 MB file
# A leading "." that the sender doubled (RFC 5321 4.5.2): on a line with more after it.
LEADING_DOT = re.compile(rb"^\.(?!\r?\n)", re.MULTILINE)
# Octets before a line's LF that cannot make it too long, whatever its CR or doubled dot.
LONGEST_SAFE = MAX_TEXT_LINE - 2
NOT_LOGGED = "... (the rest of the message is not logged)"


class DataState(enum.Enum):
    """How the data went; anything but NORMAL means the message is refused once it has ended."""

    NORMAL = "normal"
    LINE_TOO_LONG = "a line over the limit"
    TOO_BIG = "over the size limit"
    STORAGE_FAILED = "the disk refused"


class DataReader:
    """Read one message after the 354, passing its bytes (LF line ends) to `store`.

    RFC 5321 4.1.1.4: only <CRLF>.<CRLF> ends the data. A "." line ended by a bare LF
    does not (that would open the door to SMTP smuggling), but elsewhere a bare LF is
    taken as a line end, as Postfix does.

    Whole lines already in the stream's buffer go through in one piece, with bytes
    operations in C (see `take_plain_lines`); the special ones (the final ".", a
    partial line, a line that might be over the limit) one at a time.
    """

    def __init__(
        self,
        stream: BinaryIO,
        store: Callable[[bytes], object],
        max_size: int,
        trace: MessageTrace | Callable[[str], None] | None = None,
        before_read: Callable[[], None] = lambda: None,
    ) -> None:
        self.stream = stream  # needs readline(), read() and peek(), as io.BufferedReader has
        self.store = store
        self.max_size = max_size
        self.trace = MessageTrace(trace) if trace is not None and not isinstance(trace, MessageTrace) else trace
        self.state = DataState.NORMAL
        self.storage_error: OSError | None = None  # why, when the state is STORAGE_FAILED
        self.size = 0  # counted with CRLF line ends, as SIZE is
        self.lines = 0  # of the message kept so far, counted only when traced
        self.after_crlf = True  # the DATA command's CRLF counts as the one before a first "."
        self.at_line_start = True  # False in the rest of a line that was over the limit
        self.cut_after_cr = False  # a piece of an over-long line ended in CR: an LF alone next makes a CRLF
        self.before_read = before_read  # called before each wait for more data (the idle deadline restarts)

    def read(self) -> DataState:
        """Read up to the final "." and return the state; raise EOFError if the stream ends first."""
        while True:
            self.before_read()
            tracing = self.trace is not None and self.trace.lines_left > 0  # then each line goes alone
            block = self.take_plain_lines() if self.at_line_start and not tracing else b""
            if block:
                self.after_crlf = block.endswith(b"\r\n")
                if block.startswith(b".") or b"\n." in block:  # the regex costs more than this look
                    block = LEADING_DOT.sub(b"", block)  # RFC 5321 4.5.2; a lone "." stays
                self.keep(stored_form(block))
                continue
            line = self.stream.readline(LINE_LIMIT + 1)
            if tracing:
                self.trace.lines(line)  # type: ignore[union-attr]
            if line == b".\r\n" and self.after_crlf and self.at_line_start:
                if self.trace:
                    self.trace.end(self.lines, self.size)
                return self.state
            text = self.line_text(line)
            if text is not None:
                self.keep(stored_form(text + b"\r\n"))

    def line_text(self, line: bytes) -> bytes | None:
        """Return a whole line's text, unstuffed; None for the pieces of a line over the limit."""
        if not line.endswith(b"\n"):
            if len(line) <= LINE_LIMIT:
                raise EOFError("the client closed the connection in the middle of the data")
            self.refuse(DataState.LINE_TOO_LONG)
            self.at_line_start = self.after_crlf = False
            self.cut_after_cr = line.endswith(b"\r")
            return None
        was_line_start, self.at_line_start = self.at_line_start, True
        self.after_crlf = line.endswith(b"\r\n") or (line == b"\n" and not was_line_start and self.cut_after_cr)
        if not was_line_start:
            return None  # the end of an over-long line
        text = line[: -2 if self.after_crlf else -1]
        if text.startswith(b".") and len(text) > 1:
            text = text[1:]  # RFC 5321 4.5.2: the sender doubled a leading dot
        if len(text) + 2 > MAX_TEXT_LINE:
            self.refuse(DataState.LINE_TOO_LONG)
        return text

    def keep(self, stored: bytes) -> None:
        """Count stored and pass it on, unless the message is refused already."""
        if self.state is not DataState.NORMAL:
            return  # read on to the end of the data, keep nothing
        self.size += wire_size(stored)
        if self.trace is not None:
            self.lines += stored.count(b"\n")
        if self.size > self.max_size:
            self.refuse(DataState.TOO_BIG)
            return
        try:
            self.store(stored)
        except OSError as error:  # disk full, say: refuse the message once it has ended
            self.storage_error = error
            self.refuse(DataState.STORAGE_FAILED)

    def refuse(self, state: DataState) -> None:
        """Record the first problem; later ones do not change the reply."""
        if self.state is DataState.NORMAL:
            self.state = state

    def take_plain_lines(self) -> bytes:
        """Take the whole lines waiting in the buffer, up to the end of the data, if none is special.

        A line that might be over the limit cuts the block short: it goes the careful
        way alone, and the short lines around it still go in blocks, so no sender can
        make the server rescan a buffer for every line.
        """
        buffered = self.stream.peek(1)  # type: ignore[attr-defined]  # what is buffered, or one read's worth
        block = buffered[: buffered.rfind(b"\n") + 1]
        end = block.find(b"\r\n.\r\n")
        if end >= 0:
            block = block[: end + 2]  # up to the CRLF before the final "."
        if self.after_crlf and block.startswith(b".\r\n"):
            return b""
        if len(block) > LONGEST_SAFE:
            parts = block.split(b"\n")
            if max(map(len, parts)) > LONGEST_SAFE:  # cut before the first such line
                first_long = next(number for number, part in enumerate(parts) if len(part) > LONGEST_SAFE)
                block = block[: sum(map(len, parts[:first_long])) + first_long]
        return self.stream.read(len(block)) if block else b""


class MessageTrace:
    """What --verbose shows of a message: its first lines, a note for the rest, and the final "."."""

    def __init__(self, log_line: Callable[[str], None], finished: Callable[[int, int], None] | None = None) -> None:
        self.log_line = log_line
        self.finished = finished  # told the whole message's lines and octets at its end (the web view)
        self.lines_left = TRACE_MESSAGE_LINES

    def lines(self, text: bytes) -> None:
        """Log the lines of text (CRLF or LF ends) while the budget lasts."""
        for line in text.splitlines()[: self.lines_left]:
            self.log_line(line.decode("utf-8", "replace"))
            self.lines_left -= 1
            if not self.lines_left:
                self.log_line(NOT_LOGGED)

    def end(self, lines: int = 0, octets: int = 0) -> None:
        """Log the final "." if the budget ran out before it; the message had lines and octets."""
        if not self.lines_left:
            self.log_line(".")
        if self.finished is not None:
            self.finished(lines, octets)


def dot_stuffed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the wire form of a stored message (LF ends): CRLF ends, leading dots doubled, then "."."""
    at_line_start = True
    for chunk in whole_line_ends(chunks):  # a CRLF the file holds is one line end, however it was read
        stuffed = chunk.replace(b"\n.", b"\n..")
        if at_line_start and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        yield wire_form(stuffed)
        at_line_start = chunk.endswith(b"\n")
    yield b".\r\n" if at_line_start else b"\r\n.\r\n"
