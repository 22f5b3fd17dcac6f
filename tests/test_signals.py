"""SIGTERM at any moment of start-up or shutdown: exit 0 within 2 s (issue 18, item 9).

MailServer.serve_forever used to record a listener as serving before its loop started,
so a SIGTERM in between left shutdown() waiting for a loop that never ran. Each run here
sends SIGTERM at another point: a few milliseconds after the server's handler is in place
(start-up), just after the first "serving on" line, and a second SIGTERM in the middle of
the stop the first one began. Linux tells when the handler is in place (/proc: SigCgt).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, ServerProcess, wait_for

from mailserver.config import ServerConfig
from mailserver.listener import MailServer
from mailserver.smtp import SMTPHandler
from mailserver.storage import MailboxStore
from mailserver.users import UserStore

STOP_WITHIN = 2.0  # seconds: the server's shutdown grace, with no session open


def handles_sigterm(pid: int) -> bool:
    """True once the process has a handler for SIGTERM (its bit in /proc/<pid>/status's SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True  # gone already: the wait below says how it ended
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def launch(tmp_path: Path, users: Path) -> subprocess.Popen[str]:
    """server.py on free ports, its log on stderr."""
    arguments = ["--host", "127.0.0.1", "--port", "0", "--pop3-port", "0", "--users", str(users)]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), *arguments, "--mailboxes", str(tmp_path / "mailboxes")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def exits_cleanly(process: subprocess.Popen[str], sent: float) -> None:
    """The process must exit 0 within STOP_WITHIN of the signal sent at time sent; else it is killed and fails."""
    try:
        status = process.wait(max(0.1, sent + STOP_WITHIN - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"no exit within {STOP_WITHIN} s of SIGTERM:\n{process.stderr.read() if process.stderr else ''}")
    log = process.stderr.read() if process.stderr else ""
    assert status == 0, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("delay", [0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.12])
def test_sigterm_during_start_up(tmp_path: Path, shared_users_file: Path, delay: float) -> None:
    process = launch(tmp_path, shared_users_file)
    wait_for(lambda: handles_sigterm(process.pid), timeout=15, interval=0.0002)
    time.sleep(delay)  # the point of start-up this run stops at
    process.send_signal(signal.SIGTERM)
    exits_cleanly(process, time.monotonic())


def serving(process: subprocess.Popen[str]) -> None:
    """Read the log up to the first "serving on" line (the SMTP port)."""
    assert process.stderr is not None
    deadline = time.monotonic() + 15
    while "serving on" not in (line := process.stderr.readline()):
        assert line and time.monotonic() < deadline, "the server did not start"


@pytest.mark.parametrize("delay", [0, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005])
def test_sigterm_just_after_serving(tmp_path: Path, shared_users_file: Path, delay: float) -> None:
    process = launch(tmp_path, shared_users_file)
    serving(process)
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    exits_cleanly(process, time.monotonic())


@pytest.mark.parametrize("delay", [0, 0.0005, 0.002, 0.01, 0.05])
def test_a_second_sigterm_during_the_stop(tmp_path: Path, shared_users_file: Path, delay: float) -> None:
    process = launch(tmp_path, shared_users_file)
    serving(process)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    time.sleep(delay)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    exits_cleanly(process, sent)


def test_a_listener_whose_thread_starts_after_shutdown_does_not_serve(tmp_path: Path, shared_users_file: Path) -> None:
    """shutdown() may come before a listener's thread has begun: that thread must not serve after it."""
    server = MailServer(ServerConfig(hostname="mail.test"), UserStore(shared_users_file), MailboxStore(tmp_path / "mb"))
    listener = server.listen(("127.0.0.1", 0), SMTPHandler)
    name = f"listener {listener.server_address[1]}"
    try:
        server.shutdown()
        server.serve_in_background(listener, poll_interval=0.01)
        wait_for(lambda: name not in {thread.name for thread in threading.enumerate()})
    finally:
        server.shutdown()
        server.close()


def test_close_after_a_stop_that_cut_the_duties_start_short(
    tmp_path: Path, shared_users_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM inside the first serve's start of the watchdog: close() must still stop cleanly (it raised)."""
    server = MailServer(ServerConfig(hostname="mail.test"), UserStore(shared_users_file), MailboxStore(tmp_path / "mb"))
    listener = server.listen(("127.0.0.1", 0), SMTPHandler)

    def interrupted(thread: threading.Thread) -> None:
        raise KeyboardInterrupt  # as stop_once raises it, between the duty's creation and its start

    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", interrupted)
        with pytest.raises(KeyboardInterrupt):
            server.serve_in_background(listener)
    server.shutdown()
    server.close()  # no "cannot join thread before it is started"


IGNORES_SIGTERM = """
import signal

real_signal = signal.signal
signal.signal = lambda signum, handler: real_signal(signum, signal.SIG_IGN if signum == signal.SIGTERM else handler)
"""


def test_stop_fails_the_test_when_the_server_had_to_be_killed(tmp_path: Path, shared_users_file: Path) -> None:
    """ServerProcess.stop() used to SIGKILL a hung server quietly; now the test that met the hang fails."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(IGNORES_SIGTERM)  # a server that hangs on SIGTERM
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(tmp_path / "site")}
    process = ServerProcess("--users", str(shared_users_file), "--mailboxes", str(tmp_path / "mb"), env=env)
    with pytest.raises(pytest.fail.Exception, match=r"did not stop within 0\.5 s of SIGTERM and was killed"):
        process.stop(grace=0.5)
    assert process.process.returncode == -signal.SIGKILL
