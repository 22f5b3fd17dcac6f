"""The server's log handler: one write() a line, and no lock held across it (issue 22)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailserver.logs import PIPE_BUF, OneWriteHandler


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for end in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(end)


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("mailserver", logging.INFO, __file__, 1, message, None, None)


def test_each_line_is_one_write_to_the_descriptor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def counting_write(descriptor: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(descriptor, data)

    with open(tmp_path / "log", "w", encoding="utf-8") as stream:
        handler = OneWriteHandler(stream)
        monkeypatch.setattr(os, "write", counting_write)
        handler.handle(record("stored message 1"))
        handler.handle(record("stored message 2"))
    assert writes == [b"stored message 1\n", b"stored message 2\n"]
    assert (tmp_path / "log").read_text() == "stored message 1\nstored message 2\n"


def test_a_line_is_written_while_another_thread_holds_the_handlers_lock(pipe: tuple[int, int]) -> None:
    """With logging's StreamHandler, the second thread would wait for the first one's write and flush."""
    read_end, write_end = pipe
    with open(write_end, "w", encoding="utf-8", closefd=False) as stream:
        handler = OneWriteHandler(stream)
        assert handler.lock is not None
        with handler.lock:  # as a thread in the middle of a long (traceback) line holds it
            other = threading.Thread(target=handler.handle, args=(record("from another session"),))
            other.start()
            other.join(10)
            assert not other.is_alive(), "the line waited for the lock"
    assert os.read(read_end, 100) == b"from another session\n"


def test_a_line_longer_than_a_pipe_takes_whole_still_arrives_whole(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    long_text = "x" * (PIPE_BUF * 2)
    with open(write_end, "w", encoding="utf-8", closefd=False) as stream:
        handler = OneWriteHandler(stream)
        reader = threading.Thread(target=lambda: received.append(read_all(read_end, len(long_text) + 1)))
        received: list[bytes] = []
        reader.start()
        handler.handle(record(long_text))
        reader.join(10)
    assert received == [long_text.encode() + b"\n"]


def read_all(descriptor: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(descriptor, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_a_stream_without_a_descriptor_is_written_as_logging_does() -> None:
    stream = io.StringIO()
    handler = OneWriteHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.handle(record("login alice"))
    assert stream.getvalue() == "INFO login alice\n"


def test_text_the_stream_cannot_encode_is_escaped_not_lost(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w", encoding="ascii") as stream:
        OneWriteHandler(stream).handle(record("from <caf\u00e9@example.org>"))
    assert (tmp_path / "log").read_text() == "from <caf\\xe9@example.org>\n"
