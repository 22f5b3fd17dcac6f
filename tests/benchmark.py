"""Load benchmark of server.py: a whole class at once, measured from outside (issues 6 and 22).

    python tests/benchmark.py                                  # the eight short scenarios, bcrypt cost 12
    python tests/benchmark.py --scenario small --rounds 4 --compare aiosmtpd
    python tests/benchmark.py --scenario oneshot --compare aiosmtpd
    python tests/benchmark.py --scenario small --compare ../main/server.py   # before/after a change
    python tests/benchmark.py --scenario soak --minutes 30 [--malloc-arena-max 2]   # idle memory over a long day
    python tests/benchmark.py --scenario small --python ~/.pyenv/versions/3.13.0/bin/python
    python tests/benchmark.py --scenario small --host 127.0.0.1 --port 2525 --user alice --password wonderland
    python tests/benchmark.py --scenario pop3 --rounds 4

Each measurement starts `python server.py --port 0 --pop3-port 0` as a child process, with a
temporary users file (one account per connection, bcrypt cost --rounds) and
mailboxes, so that its CPU time and memory can be read from /proc/PID. The load
comes from several client processes, because on two cores one Python process
would measure itself rather than the server.

Scenarios (--connections, --messages and --size override their numbers):
  1 small  20 connections x 50 messages of 2 KiB: messages/s, latency MAIL -> 250 after DATA
  2 large  the same with 100 KiB messages: MiB/s
  3 login  50 clients log in at once, then send one message each: login latency
  4 burst  1000 connections opened at once, held idle, then each sends NOOP: all greeted? RSS
  5 huge   one 100 MiB message, with the size limit raised: MiB/s, RSS growth
  6 retr   RETR of a mailbox of 1000 messages of 2 KiB: seconds
  7 pop3   POP3 LIST and RETR of each message of a 1000-message inbox of 2 KiB: messages/s
  8 oneshot  200 connections over 10 accounts, each logging in and sending one 2 KiB message,
           as swaks or msmtp do; each account's connections one after another, as a
           student's sending script runs them: messages/s, and latency once every
           account has logged in once

small, large and oneshot run for --min-seconds (5) at least, whatever their message
count. With --compare, server.py and the peer alternate run by run, 3 pairs unless
--repeat says otherwise, and every figure is given as its median and min-max over the
pairs. Each run records the 1-minute load average before and after it, and the CPU the
rest of the machine used meanwhile (other_cores: the load average alone cannot tell,
as the benchmark's own processes raise it within seconds); a run is marked noisy when
that, or the load average before the benchmark began, is above 0.5.

  9 soak   (named only, never in "all") cycles of 20 x 50 messages to self, POP3 RETR and
           DELE of them all, and an account edit, for --minutes; at each --interval, once
           the sessions have gone, the server's idle RSS, malloc's and CPython's
           allocators and (--tracemalloc) Python's own allocations, read from inside by
           tests/memory_probe.py

Every scenario reports the server's CPU per message (user + kernel, from /proc)
beside its rate; the scenarios that log in also report the bcrypt floor: the
accounts' first logins (N checks x one check's time / cores), the least time the
logins can take however fast the rest is.

--compare aiosmtpd also runs scenarios 1, 2 and 8 against tests/aiosmtpd_baseline.py,
alternating with server.py run by run, and prints the ratios and both CPU figures.
--compare PATH/server.py does the same, in every scenario, against another copy of
server.py (a checkout of main, say): today's code against a change. --server runs a changed copy instead
of server.py; --python runs the servers under another interpreter.

Exit status: 0 all measured; 1 some sessions failed (see the errors column);
2 a server could not be started; 3 --compare aiosmtpd was asked for but aiosmtpd
is not installed (server.py was still measured).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import queue
import random
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import bcrypt

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = ROOT / "server.py"
BASELINE_SCRIPT = Path(__file__).resolve().with_name("aiosmtpd_baseline.py")
PROBE_SCRIPT = Path(__file__).resolve().with_name("memory_probe.py")
OURS = "server.py"
AIOSMTPD = "aiosmtpd"

KIB = 1024
MIB = 1024 * 1024
PASSWORD = "class-password"
SENDER = b"MAIL FROM:<student@example.org>\r\n"
RECIPIENT = b"RCPT TO:<teacher@example.org>\r\n"

EXIT_SESSION_ERRORS = 1
EXIT_NOT_STARTED = 2
EXIT_NO_AIOSMTPD = 3


@dataclasses.dataclass(frozen=True)
class Scenario:
    number: int
    name: str
    title: str
    connections: int
    messages: int  # per connection; for retr and pop3, the mailbox size
    size: int
    comparable: bool = False  # run against aiosmtpd too with --compare
    accounts: int | None = None  # None: one account per connection
    one_after_another: bool = False  # an account's connections run in turn, as a sending script's do
    long: bool = False  # minutes long: run only when named, never in "all"
    sustained: bool = False  # runs for --min-seconds at least, whatever its message count


SCENARIOS = [
    Scenario(1, "small", "many small messages", 20, 50, 2 * KIB, comparable=True, sustained=True),
    Scenario(2, "large", "100 KiB messages", 20, 50, 100 * KIB, comparable=True, sustained=True),
    Scenario(3, "login", "login storm", 50, 1, 2 * KIB),
    Scenario(4, "burst", "connection burst, held idle, then NOOP", 1000, 0, 0),
    Scenario(5, "huge", "one huge message", 1, 1, 100 * MIB),
    Scenario(6, "retr", "RETR of a big mailbox", 1, 1000, 2 * KIB),
    Scenario(7, "pop3", "POP3 LIST and RETR of a big inbox", 1, 1000, 2 * KIB),
    Scenario(
        8,
        "oneshot",
        "a message per connection",
        200,
        1,
        2 * KIB,
        comparable=True,
        accounts=10,
        one_after_another=True,
        sustained=True,
    ),
    Scenario(9, "soak", "a long day: SMTP, POP3 and account edits, idle RSS at intervals", 20, 50, 2 * KIB, long=True),
]


@dataclasses.dataclass(frozen=True)
class Load:
    """A scenario's numbers after the command line's overrides."""

    scenario: Scenario
    connections: int
    messages: int
    size: int
    rounds: int
    accounts: int


@dataclasses.dataclass
class Result:
    """One measurement of one scenario on one server; None where a figure does not apply."""

    scenario: str
    server: str
    rounds: int
    connections: int
    size: int
    messages: int  # messages stored (or retrieved, for retr and pop3)
    seconds: float
    messages_per_second: float | None
    mib_per_second: float | None
    latency_ms: dict[str, float] | None  # p50, p90, p99
    login_ms: dict[str, float] | None  # p50, p99
    server_cpu_seconds: float | None
    server_cpu_user_system: tuple[float, float] | None  # user vs kernel: Python work or system calls?
    cpu_ms_per_message: float | None  # the server's user + kernel CPU, bcrypt included, per message
    peak_rss_mib: float | None
    client_cpu_seconds: float
    load_before: float  # the 1-minute load average when the run started, and when it ended
    load_after: float
    other_cores: float | None  # cores' worth of CPU the rest of the machine used during the run (steal included)
    noisy: bool  # other_cores, or the load average before the benchmark began, above NOISY_LOAD
    errors: int
    error_samples: list[str]
    notes: dict[str, Any]
    summary: str  # the notes in words, for the table


class BenchmarkError(Exception):
    """A measurement could not be made (server did not start, clients hung)."""


class ServerNotStarted(BenchmarkError):
    pass


class ProtocolError(Exception):
    """The server answered something else than the benchmark expects."""


# ----------------------------------------------------------------- the server, watched


class ProcessMonitor:
    """CPU time and memory of a running process, from /proc/PID (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")

    def cpu_times(self) -> tuple[float, float]:
        """(utime, stime): what the server spent in Python and C, and in the kernel; all threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[11]) / self._ticks, int(fields[12]) / self._ticks  # fields 14 and 15 of proc(5)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_times())

    def status(self, field: str) -> int:
        """A number from /proc/PID/status (VmRSS and VmHWM in KiB, Threads)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss_mib(self) -> float:
        return self.status("VmRSS") / KIB

    def peak_rss_mib(self) -> float:
        return self.status("VmHWM") / KIB

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (proc(5) clear_refs 5), so a peak belongs to this scenario."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True


class ServerProcess:
    """A server run as `python SCRIPT --port 0 ...`; its log goes to a file, so a full pipe can't block it."""

    start_timeout = 30.0  # seconds: imports, plus one bcrypt hash at the accounts' cost

    def __init__(
        self, name: str, command: list[str], log_path: Path, *, pop3: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.pop3 = pop3  # server.py serves POP3 too: wait for its port as well
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self.pop3_port = 0

    def __enter__(self) -> ServerProcess:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT, env=self.env
            )
        self.monitor = ProcessMonitor(self.process.pid)
        try:
            self.port = self._wait_for_port(r"(?<!POP3 )serving on (\S+):(\d+)")
            if self.pop3:
                self.pop3_port = self._wait_for_port(r"POP3 serving on (\S+):(\d+)")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_for_port(self, pattern: str) -> int:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log_path.read_text(errors="replace"))
            if match:
                return int(match[2])
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise ServerNotStarted(f"{self.name} did not start:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM as Ctrl-C would, then kill if it takes longer than the server's promised grace."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclasses.dataclass
class Target:
    """Where the clients connect, and as whom."""

    name: str
    host: str
    port: int
    users: list[str]
    password: str
    monitor: ProcessMonitor | None
    pop3_port: int = 0
    users_path: Path | None = None  # the users file it reads (the soak edits it)
    memory_report: Path | None = None  # where tests/memory_probe.py reports, on SIGUSR1


_hash_cache: dict[int, str] = {}
_check_cpu_seconds: dict[int, float] = {}


def password_hash(rounds: int) -> str:
    if rounds not in _hash_cache:
        _hash_cache[rounds] = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds)).decode()
    return _hash_cache[rounds]


def write_users_file(path: Path, names: list[str], rounds: int) -> None:
    """All accounts share one hash of PASSWORD: each check still costs the full bcrypt work.

    (The server's auth cache is per user name: sharing a hash gives no account another's entry.)
    """
    path.write_text("".join(f"{name}:{password_hash(rounds)}\n" for name in names))


def bcrypt_check_cpu_seconds(rounds: int) -> float:
    """The CPU time of one bcrypt check at this cost on this machine: the least of three, as floors are."""
    if rounds not in _check_cpu_seconds:
        hashed, times = password_hash(rounds).encode(), []
        for _ in range(3):
            started = time.thread_time()
            bcrypt.checkpw(PASSWORD.encode(), hashed)
            times.append(time.thread_time() - started)
        _check_cpu_seconds[rounds] = min(times)
    return _check_cpu_seconds[rounds]


def account_names(count: int) -> list[str]:
    return [f"student{number:04d}" for number in range(max(count, 1))]


@contextlib.contextmanager
def started_target(kind: str, load: Load, args: argparse.Namespace, work: Path) -> Iterator[Target]:
    """Start server.py or the aiosmtpd baseline in work/ (or use --host/--port); stop it afterwards."""
    if kind == OURS and args.port:
        monitor = ProcessMonitor(args.pid) if args.pid else None
        yield Target(
            f"{args.host}:{args.port}", args.host, args.port, args.user, args.password, monitor, args.pop3_port
        )
        return
    accounts = account_names(load.accounts)
    users_path = work / "users.txt"
    write_users_file(users_path, accounts, load.rounds)
    limit = max(10 * MIB, load.size + MIB)  # the huge message needs the limit raised
    common = ["--host", "127.0.0.1", "--port", "0", "--users", str(users_path)]
    common += ["--mailboxes", str(work / "mailboxes"), "--max-message-size", str(limit)]
    if kind == AIOSMTPD:
        command = [args.python, str(BASELINE_SCRIPT), *common]
    else:  # server.py, or the other copy of it that --compare names
        connections = str(max(100, load.connections + 10))
        extra = ["--hostname", "bench.test", "--max-connections", connections, "--max-connections-per-ip", connections]
        # The throttle lets only its limit's worth of checks run at once per name and address (the rest
        # wait their turn): 50 logins at once from 127.0.0.1 (login), or ten as one name (retr), are no
        # guessing, and the benchmark measures the server, not that queue.
        extra += ["--max-login-failures", connections, "--max-login-failures-per-ip", connections]
        # --pop3-port 0, never 1100: it may be taken. Only the pop3 scenario waits for that port.
        script = args.server if kind == OURS else args.peer_script
        command = [args.python, str(script), *common, "--pop3-port", "0", *extra, *args.extra_server_args]
    report = work / "memory.jsonl" if load.scenario.long else None
    if report:  # the soak: server.py under the probe, which reports its memory on SIGUSR1
        command[1:1] = [str(PROBE_SCRIPT), "--report", str(report), "--tracemalloc", str(args.tracemalloc)]
    # Only server.py gets the cap, so that `--compare server.py` measures what the cap costs.
    env = {"MALLOC_ARENA_MAX": str(args.malloc_arena_max)} if kind == OURS and args.malloc_arena_max else None
    pop3 = load.scenario.name in ("pop3", "soak")
    with ServerProcess(kind, command, work / "server.log", pop3=pop3, env=env) as server:
        yield Target(
            kind, "127.0.0.1", server.port, accounts, PASSWORD, server.monitor, server.pop3_port, users_path, report
        )


# ----------------------------------------------------------------------- the clients


class Connection:
    """A blocking connection with a buffered reader, closed at the end of a with block."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.file.close()
        self.sock.close()


class Client(Connection):
    """A minimal blocking SMTP client: less work per message than smtplib, so the server is measured."""

    def reply(self) -> tuple[int, bytes]:
        """Read one reply, multi-line or not: (code, last line)."""
        while True:
            line = self.file.readline(8192)
            if not line:
                raise ProtocolError("the server closed the connection")
            if line[3:4] != b"-":
                return int(line[:3]), line

    def expect(self, command: bytes, code: int) -> bytes:
        if command:
            self.sock.sendall(command)
        got, line = self.reply()
        if got != code:
            verb = command.split(b" ")[0].strip() or b"greeting"
            raise ProtocolError(f"{verb.decode()}: expected {code}, got {line.decode(errors='replace').strip()}")
        return line

    def login(self, user: str, password: str) -> float:
        """Greeting, EHLO, AUTH PLAIN; return the seconds from AUTH to its 235."""
        self.expect(b"", 220)
        self.expect(b"EHLO bench.client\r\n", 250)
        token = base64.b64encode(f"\0{user}\0{password}".encode())
        started = time.monotonic()
        self.expect(b"AUTH PLAIN " + token + b"\r\n", 235)
        return time.monotonic() - started

    def send(self, payload: bytes, recipient: bytes = RECIPIENT) -> float:
        """One transaction as smtplib does it, without pipelining; the seconds from MAIL to the 250 after DATA."""
        started = time.monotonic()
        self.expect(SENDER, 250)
        self.expect(recipient, 250)
        self.expect(b"DATA\r\n", 354)
        self.expect(payload, 250)
        return time.monotonic() - started


def make_message(size: int) -> bytes:
    """A message of about size octets as sent (CRLF lines of 78 octets, none starting with a dot)."""
    head = b"From: <student@example.org>\r\nTo: <teacher@example.org>\r\nSubject: benchmark\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    rest = size - len(head) - len(body)
    tail = b"x" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    return head + body + tail


@dataclasses.dataclass
class Channel:
    """A client process's side of the Fleet: report, and wait for the next phase."""

    index: int
    reports: multiprocessing.Queue[tuple[str, Any]]
    go: Any  # multiprocessing.Event: start now
    proceed: Any  # multiprocessing.Event: the burst may send NOOP
    timeout: float

    def report(self, kind: str, payload: object = None) -> None:
        self.reports.put((kind, payload))

    def wait(self, event: Any) -> None:
        if not event.wait(self.timeout):
            raise BenchmarkError("the benchmark never gave the signal")


def _client_process(worker: Callable[[Any, Channel], None], job: object, channel: Channel) -> None:
    try:
        worker(job, channel)
    except BaseException:
        channel.report("failed", traceback.format_exc())


class Fleet:
    """Client processes that start together when released, and are always stopped."""

    def __init__(self, worker: Callable[[Any, Channel], None], jobs: list[Any], timeout: float) -> None:
        # fork: the jobs and the worker need no pickling, and the parent has no threads to copy.
        context = multiprocessing.get_context("fork")
        self.reports: multiprocessing.Queue[tuple[str, Any]] = context.Queue()
        self.go, self.proceed = context.Event(), context.Event()
        self.deadline = time.monotonic() + timeout
        self.processes = [
            context.Process(
                target=_client_process,
                args=(worker, job, Channel(index, self.reports, self.go, self.proceed, timeout)),
                daemon=True,
            )
            for index, job in enumerate(jobs)
        ]

    def __enter__(self) -> Fleet:
        try:
            for process in self.processes:
                process.start()
            self.collect("ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def release(self) -> float:
        """Let every client start at once; return the moment (time.monotonic is system-wide on Linux)."""
        started = time.monotonic()
        self.go.set()
        return started

    def collect(self, kind: str) -> list[Any]:
        """Wait for one report of kind from every process, within the fleet's deadline."""
        payloads: list[Any] = []
        while len(payloads) < len(self.processes):
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise BenchmarkError(f"client processes did not report {kind!r} in time")
            try:
                got, payload = self.reports.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if not any(process.is_alive() for process in self.processes):
                    raise BenchmarkError("client processes ended without reporting") from None
                continue
            if got == "failed":
                raise BenchmarkError(f"a client process failed:\n{payload}")
            payloads.append(payload)
        return payloads

    def __exit__(self, *exc_info: object) -> None:
        self.go.set()  # a process still waiting must not wait out its timeout
        self.proceed.set()
        for process in self.processes:
            if process.pid is None:  # never started
                continue
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(2)
            if process.is_alive():
                process.kill()
                process.join()


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """Deal items round-robin into at most parts non-empty lists."""
    hands = [items[start::parts] for start in range(max(1, min(parts, len(items))))]
    return [hand for hand in hands if hand]


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


Script = list[tuple[str, int]]  # connections run one after another: (user, messages) for each


@dataclasses.dataclass(frozen=True)
class SendJob:
    host: str
    port: int
    password: str
    timeout: float
    scripts: list[Script]  # run side by side, a thread each
    size: int
    to_self: bool = False  # each user sends to its own inbox (user@localhost), else to a remote address
    min_seconds: float = 0.0  # go on until the run has lasted this long (sending, or connecting again)
    reconnect: bool = False  # go on with new connections (one_after_another), else on the open ones


def send_worker(job: SendJob, channel: Channel) -> None:
    """One thread per script: each connection logs in, sends its messages one after the other, quits."""
    payload = make_message(job.size) + b".\r\n"  # built before the start: not part of the measurement
    outcome: dict[str, Any] = {"latencies": [], "logins": [], "connections": [], "errors": []}
    channel.report("ready")
    channel.wait(channel.go)
    stop_at = time.monotonic() + job.min_seconds
    threads = [
        threading.Thread(target=_run_script, args=(job, script, payload, outcome, stop_at), daemon=True)
        for script in job.scripts
    ]
    for thread in threads:
        thread.start()
    deadline = stop_at + channel.timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        outcome["errors"].append("a session was still running at the client's deadline")
    outcome["cpu"] = _own_cpu_seconds()
    channel.report("done", outcome)


def _run_script(job: SendJob, script: Script, payload: bytes, outcome: dict[str, Any], stop_at: float) -> None:
    """The script's connections in turn; with reconnect, again from the first until stop_at."""
    while True:
        for user, count in script:
            _send_session(job, user, count, payload, outcome, stop_at)
        if not job.reconnect or time.monotonic() >= stop_at:
            return


def _send_session(job: SendJob, user: str, count: int, payload: bytes, outcome: dict[str, Any], stop_at: float) -> None:
    """One connection; outcome["connections"] gets when it started, logged in (None if not) and ended."""
    connection = {"user": user, "started": time.monotonic(), "logged_in": None, "latencies": []}
    try:
        with Client(job.host, job.port, job.timeout) as client:
            outcome["logins"].append(client.login(user, job.password))
            connection["logged_in"] = time.monotonic()
            recipient = f"RCPT TO:<{user}@localhost>\r\n".encode() if job.to_self else RECIPIENT
            for _ in range(count):
                connection["latencies"].append(client.send(payload, recipient))
            while not job.reconnect and time.monotonic() < stop_at:  # a sustained run: more on this connection
                connection["latencies"].append(client.send(payload, recipient))
            client.expect(b"QUIT\r\n", 221)
    except (OSError, ProtocolError) as error:
        outcome["errors"].append(f"{user}: {error}")
    finally:
        connection["ended"] = time.monotonic()
        outcome["latencies"].extend(connection["latencies"])
        outcome["connections"].append(connection)


@dataclasses.dataclass(frozen=True)
class BurstJob:
    host: str
    port: int
    connections: int
    timeout: float


def burst_worker(job: BurstJob, channel: Channel) -> None:
    """Open all connections as fast as possible, read the greetings, hold, then NOOP and QUIT on each."""
    outcome: dict[str, Any] = {"errors": [], "latencies": []}
    channel.report("ready")
    channel.wait(channel.go)
    sockets = _open_many(job, outcome["errors"])
    greetings = read_lines(sockets, time.monotonic() + job.timeout)
    greeted = [sock for sock in sockets if greetings.get(sock, (b"", 0.0))[0].startswith(b"220")]
    refused = sum(greetings.get(sock, (b"", 0.0))[0].startswith(b"421") for sock in sockets)
    last_greeting = max((when for _, when in greetings.values()), default=time.monotonic())
    channel.report("held", {"greeted": len(greeted), "refused": refused, "last_greeting": last_greeting})
    channel.wait(channel.proceed)
    sent_at = {}
    for sock in greeted:
        sent_at[sock] = time.monotonic()
        sock.sendall(b"NOOP\r\n")
    replies = read_lines(greeted, time.monotonic() + job.timeout)
    answered = [sock for sock in greeted if replies.get(sock, (b"", 0.0))[0].startswith(b"250")]
    outcome["latencies"] = [replies[sock][1] - sent_at[sock] for sock in answered]
    for sock in answered:
        sock.sendall(b"QUIT\r\n")
    read_lines(answered, time.monotonic() + job.timeout)  # the 221s, so that the server closes first
    for sock in sockets:
        sock.close()
    lost = len(sockets) - len(greeted) - refused
    if lost or refused or len(answered) < len(greeted):
        unanswered = len(greeted) - len(answered)
        outcome["errors"].append(f"{refused} refused, {lost} not greeted, {unanswered} NOOP unanswered")
    outcome.update(connected=len(sockets), greeted=len(greeted), refused=refused, noop_ok=len(answered))
    outcome["cpu"] = _own_cpu_seconds()
    channel.report("done", outcome)


def _open_many(job: BurstJob, errors: list[str]) -> list[socket.socket]:
    sockets = []
    for _ in range(job.connections):
        try:
            sockets.append(socket.create_connection((job.host, job.port), timeout=job.timeout))
        except OSError as error:
            errors.append(f"connect: {error}")
    return sockets


def read_lines(sockets: list[socket.socket], deadline: float) -> dict[socket.socket, tuple[bytes, float]]:
    """Read one line from each socket, all at once; {socket: (line, arrival time)}. EOF gives b""."""
    pending: dict[socket.socket, bytes] = {sock: b"" for sock in sockets}
    lines: dict[socket.socket, tuple[bytes, float]] = {}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(4096)
                except OSError:
                    chunk = b""
                pending[sock] += chunk
                if not chunk or b"\n" in pending[sock]:
                    lines[sock] = (pending.pop(sock), time.monotonic())
                    selector.unregister(sock)
    return lines


# ------------------------------------------------------------------------- statistics


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least fraction of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def milliseconds(values: list[float], points: tuple[int, ...]) -> dict[str, float] | None:
    if not values:
        return None
    return {f"p{point}": round(percentile(values, point / 100) * 1000, 1) for point in points}


NOISY_LOAD = 0.5  # other work on the machine above this many cores: the run's figures are marked noisy


def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy since boot, hypervisor's steal included (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Usage:
    """The server's CPU and memory around one measurement, and what else the machine did meanwhile."""

    monitor: ProcessMonitor | None
    cpu_before: tuple[float, float] = (0.0, 0.0)
    rss_before: float = 0.0
    load_before: float = 0.0
    machine_before: float = 0.0  # machine_busy_seconds()
    own_before: float = 0.0  # this process's CPU
    started: float = 0.0

    def start(self) -> None:
        if self.monitor:
            self.monitor.reset_peak()
            self.cpu_before = self.monitor.cpu_times()
            self.rss_before = self.monitor.rss_mib()
        self.load_before = os.getloadavg()[0]
        self.machine_before, self.own_before = machine_busy_seconds(), _own_cpu_seconds()
        self.started = time.monotonic()

    def other_cores(self, server_cpu: float | None, client_cpu: float) -> float | None:
        """Cores' worth of CPU that neither the server, the client processes nor the benchmark used since start().

        The 1-minute load average cannot tell: the benchmark's own processes raise it
        within seconds. This can, and is the noise that reaches the figures.
        """
        elapsed = time.monotonic() - self.started
        if server_cpu is None or elapsed <= 0:
            return None
        ours = server_cpu + client_cpu + _own_cpu_seconds() - self.own_before
        return round(max(0.0, machine_busy_seconds() - self.machine_before - ours) / elapsed, 2)

    def cpu(self) -> tuple[float, float] | None:
        """(user, system) seconds since start()."""
        if not self.monitor:
            return None
        user, system = self.monitor.cpu_times()
        return round(user - self.cpu_before[0], 2), round(system - self.cpu_before[1], 2)

    def peak(self) -> float | None:
        return round(self.monitor.peak_rss_mib(), 1) if self.monitor else None


def make_result(
    load: Load,
    target: Target,
    usage: Usage,
    outcomes: list[dict[str, Any]],
    *,
    messages: int,
    octets: int | None,
    seconds: float,
    notes: dict[str, Any],
    summary: str,
) -> Result:
    """Merge the client processes' outcomes with the server's usage into one Result."""
    errors = [error for outcome in outcomes for error in outcome["errors"]]
    user_system = usage.cpu()
    cpu = round(sum(user_system), 2) if user_system else None
    client_cpu = round(sum(outcome.get("cpu", 0.0) for outcome in outcomes), 2)
    other = usage.other_cores(cpu, client_cpu)
    return Result(
        scenario=load.scenario.name,
        server=target.name,
        rounds=load.rounds,
        connections=load.connections,
        size=load.size,
        messages=messages,
        seconds=round(seconds, 6),
        messages_per_second=round(messages / seconds, 1) if messages and seconds else None,
        mib_per_second=round(octets / MIB / seconds, 2) if octets is not None and seconds else None,
        latency_ms=milliseconds([x for outcome in outcomes for x in outcome["latencies"]], (50, 90, 99)),
        login_ms=milliseconds([x for outcome in outcomes for x in outcome.get("logins", [])], (50, 99)),
        server_cpu_seconds=cpu,
        server_cpu_user_system=user_system,
        cpu_ms_per_message=round(cpu / messages * 1000, 3) if cpu is not None and messages else None,
        peak_rss_mib=usage.peak(),
        client_cpu_seconds=client_cpu,
        load_before=round(usage.load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
        other_cores=other,
        noisy=other is None or other > NOISY_LOAD,  # run_all adds the load before the benchmark began
        errors=len(errors),
        error_samples=errors[:5],
        notes=notes,
        summary=summary,
    )


# -------------------------------------------------------------------------- scenarios


def drive_senders(
    target: Target,
    scripts: list[Script],
    size: int,
    args: argparse.Namespace,
    *,
    to_self: bool = False,
    min_seconds: float = 0.0,
    reconnect: bool = False,
) -> tuple[float, list[dict[str, Any]]]:
    """Run the scripts from --processes client processes, for min_seconds at least; return (start time, outcomes)."""
    jobs = [
        SendJob(target.host, target.port, target.password, args.timeout, hand, size, to_self, min_seconds, reconnect)
        for hand in split(scripts, args.processes)
    ]
    with Fleet(send_worker, jobs, args.max_seconds) as fleet:
        started = fleet.release()
        return started, fleet.collect("done")


def scripts_of(load: Load, users: list[str]) -> list[Script]:
    """The connections of the scenario, grouped into scripts: one per connection, or one per account."""
    connections = [(users[number % len(users)], load.messages) for number in range(load.connections)]
    if not load.scenario.one_after_another:
        return [[connection] for connection in connections]
    return [[c for c in connections if c[0] == user] for user in users]


def run_send(load: Load, target: Target, args: argparse.Namespace) -> Result:
    """Scenarios 1, 2, 3, 5 and 7: every connection logs in and sends its messages."""
    usage = Usage(target.monitor)
    usage.start()
    scripts = scripts_of(load, target.users)
    minimum = args.min_seconds if load.scenario.sustained else 0.0
    reconnect = load.scenario.one_after_another
    started, outcomes = drive_senders(target, scripts, load.size, args, min_seconds=minimum, reconnect=reconnect)
    connections = [connection for outcome in outcomes for connection in outcome["connections"]]
    seconds = max(connection["ended"] for connection in connections) - started
    messages = sum(len(outcome["latencies"]) for outcome in outcomes)
    notes, summary = login_notes(load, connections, started)
    if load.scenario.one_after_another:
        summary = warm_notes(connections, notes, started)
    if load.scenario.name == "huge":  # the rate of the transfer itself (MAIL to 250), not of the login
        seconds = sum(x for outcome in outcomes for x in outcome["latencies"]) or seconds
        growth = round(usage.monitor.peak_rss_mib() - usage.rss_before, 1) if usage.monitor else None
        notes["rss_growth_mib"] = growth
        summary = f"stored in {seconds:.2f} s (MAIL to 250), RSS growth {growth} MiB"
    octets = messages * load.size
    figures = {"messages": messages, "octets": octets, "seconds": seconds, "notes": notes, "summary": summary}
    return make_result(load, target, usage, outcomes, **figures)


def login_notes(load: Load, connections: list[dict[str, Any]], started: float) -> tuple[dict[str, Any], str]:
    """When all connections, and every account once, had logged in; and the bcrypt floor of those first logins.

    The floor is N checks x one check's CPU time / cores, N the accounts: with the auth
    cache, a second login of an account costs no bcrypt, so no server can log them in sooner.
    """
    logins = [connection for connection in connections if connection["logged_in"] is not None]
    if not logins:
        return {"all_logged_in_s": None}, "nobody logged in"
    first_login: dict[str, float] = {}
    for connection in logins:
        first_login[connection["user"]] = min(first_login.get(connection["user"], math.inf), connection["logged_in"])
    floor = len(first_login) * bcrypt_check_cpu_seconds(load.rounds) / (os.cpu_count() or 1)
    accounts_in = max(first_login.values()) - started
    notes = {
        "all_logged_in_s": round(max(connection["logged_in"] for connection in logins) - started, 3),
        "accounts_logged_in_s": round(accounts_in, 3),
        "bcrypt_floor_s": round(floor, 3),
        "accounts_logged_in_vs_floor": round(accounts_in / floor, 2) if floor else None,
    }
    ratio = notes["accounts_logged_in_vs_floor"]
    summary = (
        f"all logged in after {notes['all_logged_in_s']} s ({ratio}x the bcrypt floor of {notes['bcrypt_floor_s']} s)"
    )
    return notes, summary


def warm_notes(connections: list[dict[str, Any]], notes: dict[str, Any], started: float) -> str:
    """Latency of the connections that began once every account had logged in once (the auth cache warm)."""
    warm_after = started + notes["accounts_logged_in_s"] if notes.get("accounts_logged_in_s") is not None else math.inf
    warm = [c for c in connections if c["started"] >= warm_after and c["logged_in"] is not None]
    notes["warm_connections"] = len(warm)
    notes["warm_session_ms"] = milliseconds([c["ended"] - c["started"] for c in warm], (50, 99))
    notes["warm_message_ms"] = milliseconds([latency for c in warm for latency in c["latencies"]], (50, 99))
    session, message = notes["warm_session_ms"] or {}, notes["warm_message_ms"] or {}
    return (
        f"every account logged in after {notes.get('accounts_logged_in_s')} s "
        f"({notes.get('accounts_logged_in_vs_floor')}x the bcrypt floor); then {len(warm)} connections: "
        f"connect-to-221 p99 {session.get('p99')} ms, message p99 {message.get('p99')} ms"
    )


def run_burst(load: Load, target: Target, args: argparse.Namespace) -> Result:
    """Scenario 4: open every connection at once, hold them, read the RSS, then NOOP on each."""
    jobs = [
        BurstJob(target.host, target.port, len(hand), args.timeout)
        for hand in split(list(range(load.connections)), args.processes)
    ]
    usage = Usage(target.monitor)
    usage.start()
    with Fleet(burst_worker, jobs, args.max_seconds) as fleet:
        started = fleet.release()
        held = fleet.collect("held")
        time.sleep(args.hold)  # idle sessions: what do they cost while nothing happens?
        rss_held = round(target.monitor.rss_mib(), 1) if target.monitor else None
        threads_held = target.monitor.status("Threads") if target.monitor else None
        fleet.proceed.set()
        outcomes = fleet.collect("done")
    greeted = sum(outcome["greeted"] for outcome in outcomes)
    noop_ok = sum(outcome["noop_ok"] for outcome in outcomes)
    all_greeted_s = round(max(report["last_greeting"] for report in held) - started, 3)
    notes = {
        "greeted": greeted,
        "refused": sum(outcome["refused"] for outcome in outcomes),
        "noop_ok": noop_ok,
        "greeted_within_s": all_greeted_s,
        "rss_held_mib": rss_held,
        "threads_held": threads_held,
    }
    summary = f"greeted {greeted}/{load.connections} in {all_greeted_s} s, NOOP {noop_ok}, RSS held {rss_held} MiB"
    figures = {"messages": 0, "octets": None, "seconds": all_greeted_s, "notes": notes, "summary": summary}
    return make_result(load, target, usage, outcomes, **figures)


def run_retr(load: Load, target: Target, args: argparse.Namespace) -> Result:
    """Scenario 6: fill one mailbox (DELE first, for a running server), then time one RETR."""
    user, count = target.users[0], load.messages
    with Client(target.host, target.port, args.timeout) as client:
        client.login(user, target.password)
        client.expect(b"DELE\r\n", 250)
    fill_mailbox(target, user, count, load.size, args)
    usage = Usage(target.monitor)
    usage.start()
    outcome: dict[str, Any] = {"errors": [], "latencies": [], "logins": [], "cpu": 0.0}
    with Client(target.host, target.port, args.timeout) as client:
        outcome["logins"].append(client.login(user, target.password))
        started = time.monotonic()
        received, octets = retrieve_all(client)
        seconds = time.monotonic() - started
    outcome["latencies"].append(seconds)
    if received != count:
        outcome["errors"].append(f"RETR gave {received} messages, expected {count}")
    notes: dict[str, Any] = {"retr_s": round(seconds, 3), "retrieved": received}
    if usage.monitor:
        notes["rss_growth_mib"] = round(usage.monitor.peak_rss_mib() - usage.rss_before, 1)
    summary = f"RETR of {received} messages in {seconds:.3f} s, RSS growth {notes.get('rss_growth_mib')} MiB"
    figures = {"messages": received, "octets": octets, "seconds": seconds, "notes": notes, "summary": summary}
    return make_result(load, target, usage, [outcome], **figures)


def fill_mailbox(
    target: Target, user: str, count: int, size: int, args: argparse.Namespace, *, to_self: bool = False
) -> None:
    """user sends count messages: to a remote address (its Sent fills), or to itself (its inbox fills too)."""
    fillers = min(10, count)  # ten sessions fill it faster than one; all as the same user
    scripts = [[(user, count // fillers + (number < count % fillers))] for number in range(fillers)]
    if scripts:
        _, filled = drive_senders(target, scripts, size, args, to_self=to_self)
        errors = [error for outcome in filled for error in outcome["errors"]]
        if errors:
            raise BenchmarkError(f"could not fill the mailbox: {errors[:3]}")


def retrieve_all(client: Client) -> tuple[int, int]:
    """Send RETR and read every block up to its "." line; return (messages, octets)."""
    line = client.expect(b"RETR\r\n", 250)
    expected = int(line[4:].split()[0])
    received = octets = 0
    while received < expected:
        line = client.file.readline(MIB)
        if not line:
            raise ProtocolError("the server closed the connection during RETR")
        octets += len(line)
        received += line == b".\r\n"  # content lines starting with a dot come doubled, so this ends a block
    return received, octets


class POP3Client(Connection):
    """A minimal blocking POP3 client, as Client is for SMTP: less work per message than poplib."""

    def ok(self, command: bytes = b"") -> bytes:
        """Send command (if any) and read its status line; anything but +OK is a ProtocolError."""
        if command:
            self.sock.sendall(command)
        line = self.file.readline(8192)
        if not line.startswith(b"+OK"):
            verb = command.split(b" ")[0].strip() or b"greeting"
            raise ProtocolError(f"POP3 {verb.decode()}: {line.decode(errors='replace').strip() or 'connection closed'}")
        return line

    def login(self, user: str, password: str) -> float:
        """Greeting, USER, PASS; return the seconds from PASS to its +OK (the bcrypt check and the snapshot)."""
        self.ok()
        self.ok(f"USER {user}\r\n".encode())
        started = time.monotonic()
        self.ok(f"PASS {password}\r\n".encode())
        return time.monotonic() - started

    def block(self) -> tuple[int, int]:
        """Read a multi-line response to its "." line; return (lines, octets)."""
        lines = octets = 0
        while (line := self.file.readline(MIB)) != b".\r\n":
            if not line:
                raise ProtocolError("the server closed the connection in a POP3 block")
            lines += 1
            octets += len(line)
        return lines, octets

    def empty_inbox(self) -> None:
        """DELE every message (pipelined), then QUIT: a running server's inbox may hold mail already."""
        count = int(self.ok(b"STAT\r\n").split()[1])
        self.sock.sendall(b"".join(f"DELE {number}\r\n".encode() for number in range(1, count + 1)))
        for _ in range(count):
            self.ok()
        self.ok(b"QUIT\r\n")


def run_pop3(load: Load, target: Target, args: argparse.Namespace) -> Result:
    """Scenario 7: fill one inbox over SMTP (emptied first, for a running server), then LIST and RETR each over POP3."""
    user, count = target.users[0], load.messages
    with POP3Client(target.host, target.pop3_port, args.timeout) as client:
        client.login(user, target.password)
        client.empty_inbox()
    fill_mailbox(target, user, count, load.size, args, to_self=True)
    usage = Usage(target.monitor)
    usage.start()
    outcome: dict[str, Any] = {"errors": [], "latencies": [], "logins": [], "cpu": 0.0}
    octets = 0
    with POP3Client(target.host, target.pop3_port, args.timeout) as client:
        outcome["logins"].append(client.login(user, target.password))
        started = time.monotonic()
        client.ok(b"LIST\r\n")
        listed, _ = client.block()
        list_seconds = time.monotonic() - started
        for number in range(1, listed + 1):
            sent = time.monotonic()
            client.ok(f"RETR {number}\r\n".encode())
            octets += client.block()[1]
            outcome["latencies"].append(time.monotonic() - sent)
        seconds = time.monotonic() - started
        client.ok(b"QUIT\r\n")  # nothing marked: the inbox stays as it is
    retrieved = len(outcome["latencies"])
    if retrieved != count:
        outcome["errors"].append(f"POP3 listed {listed} and retrieved {retrieved} messages, expected {count}")
    notes: dict[str, Any] = {"list_s": round(list_seconds, 3), "retr_s": round(seconds - list_seconds, 3)}
    notes["retrieved"] = retrieved
    if usage.monitor:
        notes["rss_growth_mib"] = round(usage.monitor.peak_rss_mib() - usage.rss_before, 1)
    summary = (
        f"LIST of {listed} in {notes['list_s']} s, then RETR of each in {notes['retr_s']} s, "
        f"RSS growth {notes.get('rss_growth_mib')} MiB"
    )
    figures = {"messages": retrieved, "octets": octets, "seconds": seconds, "notes": notes, "summary": summary}
    return make_result(load, target, usage, [outcome], **figures)


# ------------------------------------------------------------------------- the long day (soak)


def drain_inbox(target: Target, user: str, timeout: float) -> int:
    """One POP3 session: RETR and DELE every message of user's inbox, then QUIT; return how many."""
    with POP3Client(target.host, target.pop3_port, timeout) as client:
        client.login(user, target.password)
        count = int(client.ok(b"STAT\r\n").split()[1])
        for number in range(1, count + 1):
            client.ok(f"RETR {number}\r\n".encode())
            client.block()
            client.ok(f"DELE {number}\r\n".encode())
        client.ok(b"QUIT\r\n")
    return count


def edit_accounts(target: Target, cycle: int, rounds: int) -> None:
    """What `server.py passwd` and `adduser`/`deluser` do to users.txt: one new hash, one visitor in, one out."""
    assert target.users_path is not None
    changed = target.users[cycle % len(target.users)]
    rehashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds)).decode()  # same password, new salt
    lines = [f"{name}:{rehashed if name == changed else password_hash(rounds)}" for name in target.users]
    lines.append(f"visitor{cycle:05d}:{password_hash(rounds)}")  # the last cycle's visitor is gone
    temporary = target.users_path.with_suffix(".tmp")
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, target.users_path)  # atomic, as the server's own edits are


def idle_report(target: Target, timeout: float) -> dict[str, Any]:
    """Ask the probe for a memory report (SIGUSR1) until it gives one with no session's thread left."""
    assert target.monitor is not None and target.memory_report is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = len(target.memory_report.read_text().splitlines()) if target.memory_report.exists() else 0
        os.kill(target.monitor.pid, signal.SIGUSR1)
        while time.monotonic() < deadline:
            if target.memory_report.exists() and len(lines := target.memory_report.read_text().splitlines()) > done:
                report = json.loads(lines[-1])
                break
            time.sleep(0.02)
        else:
            break
        if report["session_threads"] == 0:
            return report
        time.sleep(0.05)  # a session's thread ends just after its QUIT reply
    raise BenchmarkError("the server's memory probe did not report it idle")


def run_soak(load: Load, target: Target, args: argparse.Namespace) -> Result:
    """Scenario 9: cycles of SMTP (to self), POP3 RETR and DELE of it all, account edits; idle figures each interval.

    The first report comes after one cycle (warm-up); tracemalloc's growth is counted from it.
    """
    if target.monitor is None:
        raise BenchmarkError("the soak needs a server it starts itself (its memory is read from inside)")
    usage = Usage(target.monitor)
    usage.start()
    fresh_rss = target.monitor.rss_mib()
    started = time.monotonic()
    reports: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    sent = drained = cycle = 0
    while cycle == 0 or time.monotonic() - started < args.minutes * 60:
        cycle_started = time.monotonic()
        _, outcome = drive_senders(target, scripts_of(load, target.users), load.size, args, to_self=True)
        outcomes += outcome
        sent += sum(len(o["latencies"]) for o in outcome)
        with concurrent.futures.ThreadPoolExecutor(len(target.users)) as pool:
            drained += sum(pool.map(lambda user: drain_inbox(target, user, args.timeout), target.users))
        edit_accounts(target, cycle, load.rounds)
        cycle += 1
        report = idle_report(target, args.timeout)
        report.update(minute=round((time.monotonic() - started) / 60, 2), cycle=cycle, messages=sent)
        reports.append(report)
        log(f"  soak {soak_line(report)}")
        time.sleep(max(0.0, cycle_started + args.interval - time.monotonic()))
    seconds = time.monotonic() - started
    if drained != sent:
        outcomes.append({"errors": [f"sent {sent} messages, POP3 retrieved and deleted {drained}"], "latencies": []})
    first, last = reports[0], reports[-1]
    notes: dict[str, Any] = {"fresh_rss_mib": fresh_rss, "reports": reports, "retrieved": drained}
    notes["malloc_arena_max"] = args.malloc_arena_max
    summary = (
        f"{cycle} cycles in {seconds / 60:.1f} min; idle RSS {fresh_rss:.1f} fresh, {first['rss_mib']} after warm-up, "
        f"{last['rss_mib']} at the end ({last['rss_mib'] - first['rss_mib']:+.1f} MiB); "
        f"threads {first['threads']} -> {last['threads']}, files {first['open_files']} -> {last['open_files']}"
    )
    figures = {"messages": sent, "octets": sent * load.size, "seconds": seconds, "notes": notes, "summary": summary}
    return make_result(load, target, usage, outcomes, **figures)


def soak_line(report: dict[str, Any]) -> str:
    """One interval of the soak in words: where the idle RSS stands, and what holds it."""
    parts = [f"minute {report['minute']:6.2f}", f"{report['messages']:7d} msgs", f"RSS {report['rss_mib']:6.2f} MiB"]
    parts += [f"threads {report['threads']}", f"files {report['open_files']}"]
    if "malloc_in_use_mib" in report:
        parts.append(
            f"malloc in use {report['malloc_in_use_mib']:.2f}, free kept {report['malloc_free_kept_mib']:.2f}, "
            f"{report['malloc_arenas']} arenas"
        )
    if "python_traced_mib" in report:
        traced, own = report["python_traced_mib"], report["tracemalloc_overhead_mib"]
        parts.append(f"Python traced {traced:.2f} (tracemalloc's own {own:.2f})")
    return "; ".join(parts)


RUNNERS: dict[str, Callable[[Load, Target, argparse.Namespace], Result]] = {
    "small": run_send,
    "large": run_send,
    "login": run_send,
    "burst": run_burst,
    "huge": run_send,
    "retr": run_retr,
    "pop3": run_pop3,
    "oneshot": run_send,
    "soak": run_soak,
}


def measure(scenario: Scenario, kind: str, args: argparse.Namespace) -> Result:
    connections = args.connections or scenario.connections
    messages = args.messages if args.messages is not None else scenario.messages
    accounts = min(args.accounts or scenario.accounts or connections, connections) if messages else 1
    load = Load(scenario, connections, messages, args.size or scenario.size, args.rounds, accounts)
    if scenario.name == "huge":  # one message on one connection by design
        load = dataclasses.replace(load, connections=1, messages=1, accounts=1)
    if scenario.name in ("retr", "pop3"):  # one session reads; --messages is the mailbox's size
        load = dataclasses.replace(load, connections=1, accounts=1)
    if scenario.name == "burst":
        load = dataclasses.replace(load, messages=0, size=0, accounts=1)
    log(
        f"{scenario.number} {scenario.name} ({scenario.title}) on {kind}: {load.connections} connections, "
        f"{load.messages} messages of {load.size} octets, {load.accounts} accounts at bcrypt cost {load.rounds}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="run-", dir=args.base) as work,
        started_target(kind, load, args, Path(work)) as target,
    ):
        return RUNNERS[scenario.name](load, target, args)


# ----------------------------------------------------------------------------- report


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return str(value)


COLUMNS = [
    ("scenario", lambda r: r.scenario),
    ("server", lambda r: r.server),
    ("cost", lambda r: r.rounds),
    ("conns", lambda r: r.connections),
    ("size", lambda r: r.size),
    ("msgs", lambda r: r.messages),
    ("secs", lambda r: r.seconds),
    ("msgs/s", lambda r: r.messages_per_second),
    ("CPU ms/msg", lambda r: r.cpu_ms_per_message),
    ("MiB/s", lambda r: r.mib_per_second),
    ("p50 ms", lambda r: (r.latency_ms or {}).get("p50")),
    ("p90 ms", lambda r: (r.latency_ms or {}).get("p90")),
    ("p99 ms", lambda r: (r.latency_ms or {}).get("p99")),
    ("login p50", lambda r: (r.login_ms or {}).get("p50")),
    ("login p99", lambda r: (r.login_ms or {}).get("p99")),
    ("peak RSS MiB", lambda r: r.peak_rss_mib),
    ("load", lambda r: f"{r.load_before:.2f}-{r.load_after:.2f}"),
    ("other", lambda r: r.other_cores),
    ("noisy", lambda r: "noisy" if r.noisy else "quiet"),
    ("errors", lambda r: r.errors),
    ("notes", lambda r: r.summary),
]


def format_table(results: list[Result]) -> str:
    rows = [[name for name, _ in COLUMNS]] + [[_cell(get(result)) for _, get in COLUMNS] for result in results]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


MIN_PAIRS = 3  # a ratio's spread means something from three alternating pairs on


def spread(values: list[float | None]) -> dict[str, float] | None:
    """Median, least and greatest of the known values; None if none is known."""
    known = [value for value in values if value is not None]
    if not known:
        return None
    return {"median": round(statistics.median(known), 3), "min": min(known), "max": max(known)}


def comparisons(results: list[Result], peer: str | None) -> list[dict[str, Any]]:
    """server.py against the peer for each scenario both ran: each figure's median and min-max over the pairs.

    The runs alternate (server.py, peer, server.py, ...), so a pair saw the same machine.
    """
    compared = []
    for scenario in SCENARIOS:
        ours = [r for r in results if r.scenario == scenario.name and r.server == OURS]
        theirs = [r for r in results if r.scenario == scenario.name and peer and r.server.startswith(peer)]
        pairs = [(a, b) for a, b in zip(ours, theirs, strict=False) if a.messages_per_second and b.messages_per_second]
        if not pairs:
            continue
        runs = [run for pair in pairs for run in pair]
        cpu = [(a.cpu_ms_per_message, b.cpu_ms_per_message) for a, b in pairs]
        compared.append(
            {
                "scenario": scenario.name,
                "peer": pairs[0][1].server,
                "rounds": pairs[0][0].rounds,
                "pairs": len(pairs),
                "ratio": spread([round(a.messages_per_second / b.messages_per_second, 2) for a, b in pairs]),  # type: ignore[operator]
                "messages_per_second": [spread([pair[side].messages_per_second for pair in pairs]) for side in (0, 1)],
                "cpu_ms_per_message": [spread([c[side] for c in cpu]) for side in (0, 1)],
                "cpu_ratio": spread([round(a / b, 2) if a is not None and b else None for a, b in cpu]),
                "p99_ms": [spread([(pair[side].latency_ms or {}).get("p99") for pair in pairs]) for side in (0, 1)],
                "peak_rss_mib": [spread([pair[side].peak_rss_mib for pair in pairs]) for side in (0, 1)],
                "load": spread([run.load_before for run in runs] + [run.load_after for run in runs]),
                "other_cores": spread([run.other_cores for run in runs]),
                "noisy": any(run.noisy for run in runs),
            }
        )
    return compared


def shown_spread(figure: dict[str, float] | None, unit: str = "") -> str:
    """1.42x (1.31-1.52): the median, then the least and the greatest."""
    if figure is None:
        return "-"
    return f"{_cell(figure['median'])}{unit} ({_cell(figure['min'])}-{_cell(figure['max'])})"


def format_comparisons(compared: list[dict[str, Any]]) -> str:
    lines = ["server.py against the peer, run by run alternating; median (min-max) over the pairs:"]
    for item in compared:
        (ours_cpu, their_cpu), (ours_p99, their_p99) = item["cpu_ms_per_message"], item["p99_ms"]
        (ours_rate, their_rate), (ours_rss, their_rss) = item["messages_per_second"], item["peak_rss_mib"]
        few = f", fewer than {MIN_PAIRS}: no spread to speak of" if item["pairs"] < MIN_PAIRS else ""
        noise = "NOISY" if item["noisy"] else "quiet"
        lines += [
            f"  {item['scenario']:7} cost {item['rounds']}, against {item['peer']}, {item['pairs']} pairs{few}: "
            f"msgs/s ratio {shown_spread(item['ratio'], 'x')}",
            f"  {'':7} msgs/s {shown_spread(ours_rate)} vs {shown_spread(their_rate)}",
            f"  {'':7} server CPU ms per message {shown_spread(ours_cpu)} vs {shown_spread(their_cpu)}, "
            f"ratio {shown_spread(item['cpu_ratio'], 'x')}",
            f"  {'':7} message p99 ms {shown_spread(ours_p99)} vs {shown_spread(their_p99)}; "
            f"peak RSS MiB {shown_spread(ours_rss)} vs {shown_spread(their_rss)}",
            f"  {'':7} {noise}: load average {shown_spread(item['load'])}, "
            f"other work {shown_spread(item['other_cores'])} cores (noisy above {NOISY_LOAD})",
        ]
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "server_python": python_version(args.python),
        "cpus": os.cpu_count(),
        "command": shlex.join(["tests/benchmark.py", *args.argv]),
        # Before the benchmark: other work on the machine (the benchmark itself raises it; see other_cores).
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "min_seconds": args.min_seconds,
        "malloc_arena_max": args.malloc_arena_max,
        "workdir_filesystem": filesystem_of(args.base),
        "workdir_spread_over_block_groups": args.spread,
        "file_create_cpu_us": file_create_cpu_us(args.base),
        "processes": args.processes,
    }


def make_base(parent: str | None) -> tuple[Path, bool]:
    """The directory every measurement's users file and mailboxes go into; and whether it spreads them.

    Why spread: ext4 without a journal (as on this project's machines) skips the inodes
    deleted in the last minutes when it creates a file, reading the inode table for each
    one; where test suites have just deleted thousands of files, as in /tmp, creating a
    file then costs 0.1-0.4 ms of CPU instead of 0.02, for server.py and aiosmtpd alike,
    and more after each run that deleted its mailboxes. ext4's "top directory" flag
    (chattr +T) makes the directories made inside go to block groups of their own, away
    from those deletions, so the figures measure the servers rather than the churn.
    Best effort: elsewhere the flag is refused and nothing changes.
    """
    base = Path(tempfile.mkdtemp(prefix="smtp-bench-", dir=parent))
    try:
        spread = subprocess.run(["chattr", "+T", str(base)], capture_output=True, check=False).returncode == 0
    except OSError:  # no chattr
        spread = False
    return base, spread


def file_create_cpu_us(base: Path, count: int = 200) -> float:
    """The CPU time it takes to create one file where the servers will write: part of every message's cost."""
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=base))  # removed with base, at the end: no churn meanwhile
    started = time.thread_time()
    for number in range(count):
        os.close(os.open(probe / str(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return round((time.thread_time() - started) / count * 1e6, 1)


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding path (fsync costs differ: tmpfs makes it free)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount = fields[1]
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


# --------------------------------------------------------------------------- main


def probe(python: str, code: str) -> str | None:
    """What python prints running code, or None if it fails."""
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def python_version(python: str) -> str | None:
    return probe(python, "import platform; print(platform.python_version())")


def aiosmtpd_version(python: str) -> str | None:
    """The version of aiosmtpd that the servers' python imports (the baseline runs under it); None if none."""
    return probe(python, "import importlib.metadata, aiosmtpd.smtp; print(importlib.metadata.version('aiosmtpd'))")


def raise_open_files_limit(needed: int) -> None:
    """The burst holds a socket per connection, on both sides; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new_soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < needed:
            log(f"warning: open files limited to {new_soft} (hard limit); the burst needs about {needed}")


def build_parser() -> argparse.ArgumentParser:
    names = [scenario.name for scenario in SCENARIOS]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scenario",
        default="all",
        choices=["all", *names, *(str(scenario.number) for scenario in SCENARIOS)],
        help="which scenario (name or number; default all)",
    )
    parser.add_argument("--connections", type=int, help="connections (default: the scenario's)")
    parser.add_argument("--messages", type=int, help="messages per connection; for retr and pop3, the mailbox size")
    parser.add_argument("--size", type=int, help="message size in octets (default: the scenario's)")
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost of the accounts (default 12)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (default 4)")
    parser.add_argument(
        "--repeat", type=int, help="measure each scenario this many times (default 1; with --compare 3, the least)"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=5.0,
        help="small, large and oneshot go on until a run has lasted this long (default 5; 0: just the messages)",
    )
    parser.add_argument(
        "--compare",
        metavar="aiosmtpd|SERVER.py",
        help="also run small, large and oneshot against aiosmtpd, or every scenario against another server.py",
    )
    parser.add_argument("--accounts", type=int, help="accounts the connections log in as (default: the scenario's)")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the servers (default: this one); it needs bcrypt, and aiosmtpd to compare",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument(
        "--web-view", action="store_true", help="the small scenario without and with the web view's streams (issue 19)"
    )
    parser.add_argument("--hold", type=float, default=2.0, help="seconds the burst's connections stay idle")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a client waits for one reply")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the most one measurement may take")
    soak = parser.add_argument_group("the soak (scenario 9) and the allocator")
    soak.add_argument("--minutes", type=float, default=30.0, help="how long the soak runs (default 30)")
    soak.add_argument("--interval", type=float, default=60.0, help="seconds between the soak's reports (default 60)")
    soak.add_argument(
        "--tracemalloc", type=int, default=1, metavar="FRAMES", help="the soak traces Python allocations (0: off)"
    )
    soak.add_argument(
        "--malloc-arena-max",
        type=int,
        metavar="N",
        help="run server.py (not the peer) with MALLOC_ARENA_MAX=N: glibc keeps at most N malloc arenas",
    )
    parser.add_argument("--workdir", help="where temporary users files and mailboxes go (default: the temp dir)")
    parser.add_argument(
        "--server",
        type=Path,
        default=SERVER_SCRIPT,
        help="the server script to start (default server.py; a changed copy measures a change before it is made)",
    )
    target = parser.add_argument_group("a server that is already running (instead of starting server.py)")
    target.add_argument("--host", default="127.0.0.1")
    target.add_argument("--port", type=int, default=0)
    target.add_argument(
        "--user",
        action="append",
        help="account to log in as; repeat it and connections take turns (retr and pop3 empty the first's mail!)",
    )
    target.add_argument("--password")
    target.add_argument(
        "--pop3-port", type=int, default=1100, help="its POP3 port, for the pop3 scenario (default 1100)"
    )
    target.add_argument("--pid", type=int, help="its process id, to read CPU and RSS from /proc")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.repeat is None:
        args.repeat = MIN_PAIRS if args.compare else 1
    if args.port and not (args.user and args.password):
        parser.error("--port of a running server needs --user and --password")
    if min(args.processes, args.repeat) < 1 or (args.messages is not None and args.messages < 0):
        parser.error("--processes and --repeat must be at least 1, --messages at least 0")
    if args.accounts is not None and args.accounts < 1:
        parser.error("--accounts must be at least 1")
    args.peer, args.peer_script = None, None
    args.extra_server_args = []  # web_view_cost() sets them per arm
    if args.compare == AIOSMTPD:
        args.peer = AIOSMTPD
    elif args.compare:
        args.peer_script = Path(args.compare).resolve()
        if not args.peer_script.is_file():
            parser.error(f"--compare: {args.compare} is neither aiosmtpd nor a server script")
        args.peer = f"{args.peer_script.parent.name}/{args.peer_script.name}"  # e.g. main/server.py
    return args


def selected_scenarios(choice: str) -> list[Scenario]:
    return [s for s in SCENARIOS if choice in (s.name, str(s.number)) or (choice == "all" and not s.long)]


def run_all(args: argparse.Namespace, peer: str | None) -> tuple[list[Result], list[tuple[str, Exception]]]:
    """Every selected scenario, --repeat times; the peer right after server.py, so drift hits both."""
    results: list[Result] = []
    failures: list[tuple[str, Exception]] = []
    for scenario in selected_scenarios(args.scenario):
        # aiosmtpd does the comparable scenarios; another server.py does them all.
        kinds = [OURS, peer] if peer and (scenario.comparable or peer != AIOSMTPD) else [OURS]
        for _ in range(args.repeat):
            for kind in kinds:
                try:
                    result = measure(scenario, kind, args)
                except (BenchmarkError, ProtocolError, OSError) as error:
                    failures.append((f"{scenario.name} on {kind}", error))
                    log(f"  failed: {error}")
                    continue
                if kind == AIOSMTPD:
                    result.server = f"{AIOSMTPD} {aiosmtpd_version(args.python)}"
                result.noisy = result.noisy or args.load_at_start > NOISY_LOAD
                log(f"  {result.messages_per_second} msgs/s, {result.errors} errors; {result.summary}")
                results.append(result)
    return results, failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_open_files_limit(2 * max(args.connections or 0, 1000) + 256)
    missing = (
        "--compare aiosmtpd: aiosmtpd is not installed (`.venv/bin/pip install -r requirements-dev.txt` "
        "installs it); measuring server.py alone"
    )
    aiosmtpd_missing = args.peer == AIOSMTPD and aiosmtpd_version(args.python) is None
    if aiosmtpd_missing:
        log(missing)
    args.base, args.spread = make_base(args.workdir)
    if args.web_view:
        try:
            return web_view_cost(args)
        finally:
            shutil.rmtree(args.base, ignore_errors=True)
    try:
        setting = environment(args)
        args.load_at_start = setting["load_average_before"][0]
        results, failures = run_all(args, None if aiosmtpd_missing else args.peer)
    finally:
        shutil.rmtree(args.base, ignore_errors=True)
    setting["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    compared = comparisons(results, args.peer)
    if args.json:
        report = {"environment": setting, "results": [dataclasses.asdict(r) for r in results]}
        failed = [f"{where}: {error}" for where, error in failures]
        print(json.dumps({**report, "comparisons": compared, "failures": failed}, indent=2))
    else:
        print(format_table(results))
        if compared:
            print("\n" + format_comparisons(compared))
        print(f"\nenvironment: {json.dumps(setting)}")
    for where, error in failures:
        log(f"failed: {where}: {error}")
    if aiosmtpd_missing:
        log(missing)
        return EXIT_NO_AIOSMTPD
    if any(isinstance(error, ServerNotStarted) for _, error in failures):
        return EXIT_NOT_STARTED
    return EXIT_SESSION_ERRORS if failures or any(r.errors for r in results) else 0


# ------------------------------------------------------------ the web view's cost (issue 19)

# Each arm: server.py's extra options, event streams that read everything, streams that read nothing.
WEB_VIEW_ARMS = {
    "no --web": ((), 0, 0),
    "--verbose (no --web)": (("--verbose",), 0, 0),  # the projected log: the same masking, to the log
    "--web, no browser": (("--web", "--web-port", "0"), 0, 0),
    "--web, 5 browsers": (("--web", "--web-port", "0"), 5, 0),
    "--web, 1 stuck browser": (("--web", "--web-port", "0"), 0, 1),
}
WEB_VIEW_PORT = re.compile(r"web view on http://127\.0\.0\.1:(\d+)/")


class EventStreams:
    """Browsers' event streams on the web view (GET /events): some read all, some nothing (a stuck tab)."""

    def __init__(self, port: int, reading: int, stuck: int) -> None:
        self.port, self.reading, self.stuck = port, reading, stuck
        self.sockets: list[socket.socket] = []
        self.received = 0  # octets the reading streams got
        self.closing = threading.Event()

    def __enter__(self) -> Self:
        for number in range(self.reading + self.stuck):
            stream = socket.socket()
            if number >= self.reading:  # never read: the server's writes fill its buffers at once
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stream.connect(("127.0.0.1", self.port))
            stream.sendall(b"GET /events HTTP/1.0\r\n\r\n")
            self.sockets.append(stream)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        with selectors.DefaultSelector() as selector:
            for stream in self.sockets[: self.reading]:
                selector.register(stream, selectors.EVENT_READ)
            while not self.closing.is_set() and selector.get_map():
                for key, _ in selector.select(0.2):
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    self.received += len(chunk)
                    if not chunk:
                        selector.unregister(key.fileobj)

    def __exit__(self, *exc_info: object) -> None:
        self.closing.set()
        self.reader.join(5)
        for stream in self.sockets:
            stream.close()


def web_view_cost(args: argparse.Namespace) -> int:
    """The small scenario with the web view off, on, with 5 browsers' streams, and with one that reads nothing.

    The arms alternate, --repeat times, in a shuffled order, so that the machine's drift hits each alike.
    """
    scenario = SCENARIOS[0]  # small
    connections = args.connections or scenario.connections
    load = Load(scenario, connections, args.messages or scenario.messages, args.size or scenario.size,
                args.rounds, connections)  # fmt: skip
    results: dict[str, list[Result]] = {arm: [] for arm in WEB_VIEW_ARMS}
    load_at_start = os.getloadavg()
    order = list(WEB_VIEW_ARMS)
    for repeat in range(args.repeat):
        # Each repetition in another order: a machine whose load drifts (another suite starting) favours no arm.
        random.Random(repeat).shuffle(order)
        for arm in order:
            options, reading, stuck = WEB_VIEW_ARMS[arm]
            args.extra_server_args = list(options)
            log(f"{scenario.name} with {arm}: {load.connections} connections x {load.messages} messages")
            with (
                tempfile.TemporaryDirectory(prefix="run-", dir=args.base) as work,
                started_target(OURS, load, args, Path(work)) as target,
            ):
                found = WEB_VIEW_PORT.search((Path(work) / "server.log").read_text(errors="replace"))
                with (
                    EventStreams(int(found[1]) if found else 0, reading, stuck) if options else contextlib.nullcontext()
                ):
                    result = run_send(load, target, args)
            log(
                f"  {result.messages_per_second} msgs/s, {result.cpu_ms_per_message} ms CPU/msg, {result.errors} errors"
            )
            results[arm].append(result)
    base = spread([r.messages_per_second for r in results["--web, no browser"]])
    header = f"{'msgs/s (min-max)':>22} {'vs no browser':>14} {'CPU ms/msg (min-max)':>22} {'peak RSS MiB':>13}"
    print(f"{'arm':24} {header}")
    for arm, measured in results.items():
        rate = spread([r.messages_per_second for r in measured]) or {"median": 0.0, "min": 0.0, "max": 0.0}
        cpu = spread([r.cpu_ms_per_message for r in measured]) or {"median": 0.0, "min": 0.0, "max": 0.0}
        rss = spread([r.peak_rss_mib for r in measured]) or {"median": 0.0}
        ratio = rate["median"] / (base["median"] if base and base["median"] else 1.0)
        print(
            f"{arm:24} {rate['median']:7.0f} ({rate['min']:5.0f}-{rate['max']:5.0f}) {ratio:14.3f} "
            f"{cpu['median']:7.2f} ({cpu['min']:5.2f}-{cpu['max']:5.2f}) {rss['median']:13.1f}"
        )
    print(
        f"\nmedians of {args.repeat}; load average (1, 5, 15 min) at the start {load_at_start}, "
        f"at the end {os.getloadavg()}"
    )
    return EXIT_SESSION_ERRORS if any(r.errors for measured in results.values() for r in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
