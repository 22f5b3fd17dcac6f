"""DATA's byte stream against a model of the rules, whatever the lines and however the bytes arrive.

The server reads DATA two ways: whole buffered lines in one piece, and line by line
for the special ones (the final ".", partial and long lines). This checks both
against `model`, a plain restatement of the contract (issue 2) written without the
server's code: only CRLF "." CRLF ends the data, a bare LF ends a line, a doubled
leading dot is undone, lines are stored with LF ends, a text line over 1000 octets
is refused with 500 and a message over the size limit with 552.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import RunningServer, Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import server as server_module

MAX_SIZE = 60_000  # small, so that some examples go over it
TERMINATOR = b"\r\n.\r\n"


def model(stream: bytes) -> tuple[bytes | None, int, int]:
    """Return (what is stored or None, the reply code, where the data ended) for the bytes after 354."""
    stored, size, code, position, after_crlf = [], 0, 250, 0, True
    while True:
        end = stream.index(b"\n", position) + 1
        line = stream[position:end]
        position = end
        if line == b".\r\n" and after_crlf:
            return (b"".join(stored) if code == 250 else None), code, position
        after_crlf = line.endswith(b"\r\n")
        text = line[:-2] if after_crlf else line[:-1]
        if text.startswith(b".") and text != b".":
            text = text[1:]
        if code != 250:
            continue
        if len(text) + 2 > 1000:
            code = 500
        elif size + len(text) + 2 > MAX_SIZE:
            code = 552
        size += len(text) + 2
        stored.append(text + b"\n")


LINE_BYTES = st.sampled_from([b"a", b".", b"\r", b" ", b"\xc3\xa9", b"\t", b"z"])
LINE_ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    """One line: mostly short, sometimes near or over the 1000-octet limit, often starting with dots."""
    if draw(st.integers(0, 5)) == 0:  # the lines that smuggling and dot-stuffing are about
        return draw(st.sampled_from([b".\n", b"..\r\n", b"..\n", b"\n", b"\r\n", b".\r\r\n"]))
    length = draw(st.one_of(st.integers(0, 80), st.integers(990, 1010), st.just(0)))
    fill = draw(LINE_BYTES)
    head = draw(st.lists(LINE_BYTES, max_size=4))
    body = b"".join(head) + fill * max(0, length - len(head))
    return body + draw(LINE_ENDS)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A message body whose only end of data is the TERMINATOR appended to it."""
    body = b"".join(draw(st.lists(lines(), max_size=120)))
    repeat = draw(st.sampled_from([1, 1, 1, 40]))  # sometimes bigger than one read buffer
    stream = body * repeat + TERMINATOR
    _, _, ended_at = model(stream)
    if ended_at != len(stream):  # the body ended the data itself: the rest would be commands
        stream = stream[:ended_at]
    return stream


@pytest.fixture
def data_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(max_message_size=MAX_SIZE)


# One server serves every example (the fixture is made once per test), and each example ends with DELE.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=messages(), pieces=st.lists(st.integers(1, 70_000), max_size=6))
def test_data_is_stored_as_the_rules_say(data_server: RunningServer, stream: bytes, pieces: list[int]) -> None:
    expected, code, _ = model(stream)
    session = Session(data_server.host, data_server.port)
    try:
        session.read_reply()
        session.login()
        session.start_data()
        position = 0
        for size in pieces:  # the same bytes, cut at different places
            session.send(stream[position : position + size])
            position += size
        session.send(stream[position:])
        assert session.read_reply()[0] == code
        stored = data_server.stored("alice")
        assert stored == ([expected] if expected is not None else [])
        assert session.command("DELE")[0] == 250
    finally:
        session.close()


def test_a_long_line_sends_only_itself_the_careful_way(
    start_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines near the limit are read one by one, but the short lines around them still go in blocks.

    Were a whole buffer refused for one such line, every line of it would be read alone and
    the buffer scanned again for each: a sender could make the server do quadratic work.
    """
    careful = []
    take_plain_lines = server_module.SMTPHandler.take_plain_lines

    def counting(handler: server_module.SMTPHandler, after_crlf: bool) -> bytes:
        block = take_plain_lines(handler, after_crlf)
        careful.append(not block)
        return block

    monkeypatch.setattr(server_module.SMTPHandler, "take_plain_lines", counting)
    server = start_server()
    message = (b"short line\r\n" * 50 + b"L" * 998 + b"\r\n") * 40  # 998 + CRLF: at the limit, allowed
    session = Session(server.host, server.port)
    try:
        session.read_reply()
        session.login()
        session.start_data()
        session.send(message + b".\r\n")
        assert session.read_reply()[0] == 250
    finally:
        session.close()
    assert server.stored("alice") == [message.replace(b"\r\n", b"\n")]
    # 40 long lines, the final ".", and lines cut at the end of a read buffer: far fewer than 2040 lines.
    assert sum(careful) < 200, f"{sum(careful)} of {len(careful)} reads went line by line"
