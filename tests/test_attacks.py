"""Attacks: issue 10's holes, each sent as the attacker's bytes, and the next ones of their kinds.

1. Twelve guesses sent at once cannot race the login throttle: a guess holds its place in
   the count before bcrypt runs. The throttle counts per (address, name) and per address
   (issue 13, point 5), so one student's typos do not lock out a class on one machine.
2. One throttle, and 3. one table of connections, for both ports (plain and SMTPS).
4. An unknown name costs the bcrypt work of an account, whatever the mix of costs.
5. Nothing that could be a credential reaches the --verbose log.
6. No way out of DATA (reset, timeout, error, shutdown) leaves a file in tmp/.

Also: RETR holds no lock while it writes, so a client that does not read holds up no
DELE; the throttle's table stays bounded. And the holes of the same kinds found while
fixing these: a reply that echoes client text into the log, a password over bcrypt's 72
bytes checked at another cost than its account's, the name a client typed in a log line.

The tests of holes 2, 3 and 6 run server.py as a process, so that the same test could be
run against the code before the refactor (commit 00799d5), where each of them failed.
"""

from __future__ import annotations

import base64
import errno
import logging
import math
import re
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from conftest import (
    USERS,
    Certificate,
    RawSession,
    RunningServer,
    ServerProcess,
    plain_response,
    store_message,
    wait_for,
)

from mailserver import users as users_module
from mailserver.data import DataReader
from mailserver.limits import LoginAttempt, LoginRefused, LoginThrottle
from mailserver.logs import MASK, WireLog
from mailserver.storage import Delivery
from mailserver.users import UserStore

ALICE = USERS["alice"]
ALICE_PLAIN = plain_response("alice", ALICE)
NAME_WAIT = re.compile(r"4\.7\.0 Too many failed logins for this name, try again in (\d+) s")
ADDRESS_WAIT = re.compile(r"4\.7\.0 Too many failed logins from your address, try again in (\d+) s")
SMTPS_LINE = r"serving SMTPS \(implicit TLS\) on [\d.]+:(\d+)"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


@pytest.fixture
def open_session() -> Iterator[Callable[..., RawSession]]:
    """open_session(port, source="127.0.0.1", tls=None) connects and reads the 220; all close after the test.

    tls: a client context, for an SMTPS port (TLS from the first byte).
    """
    sessions: list[RawSession] = []

    def connect(port: int, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> RawSession:
        session = RawSession("127.0.0.1", port, source_address=source)
        sessions.append(session)
        if tls is not None:
            session.file.close()
            session.sock = tls.wrap_socket(session.sock, server_hostname="localhost")
            session.file = session.sock.makefile("rb")
        code, lines = session.read_reply()
        assert code == 220, lines
        return session

    yield connect
    for session in sessions:
        session.close()


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What the server logs, from INFO up: the C:/S: lines of --verbose are INFO."""
    caplog.set_level(logging.INFO, logger="mailserver")
    return caplog


def auth_plain(session: RawSession, user: str, password: str) -> tuple[int, str]:
    """AUTH PLAIN with an initial response; return the code and the last line of the reply."""
    code, lines = session.command(f"AUTH PLAIN {plain_response(user, password)}")
    return code, lines[-1]


def log_in(open_session: Callable[..., RawSession], port: int, user: str, password: str, **where: object) -> int:
    """A new session from `where`: EHLO, AUTH PLAIN; return AUTH's reply code."""
    session = open_session(port, **where)
    session.ehlo()
    return auth_plain(session, user, password)[0]


def reset(session: RawSession) -> None:
    """Close with a TCP reset (SO_LINGER 0): the worst moment for the server is when it comes."""
    session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    session.close()


def users_with_costs(path: Path, costs: dict[str, int]) -> Path:
    """A users file whose account name has its password hashed at the given bcrypt cost."""
    lines = [
        f"{name}:{bcrypt.hashpw(USERS.get(name, name).encode(), bcrypt.gensalt(cost)).decode()}"
        for name, cost in costs.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def logins_at_once(
    open_session: Callable[..., RawSession], port: int, logins: list[tuple[str, str]]
) -> list[tuple[int, list[str]]]:
    """One session per (name, password), each after its EHLO; the AUTH lines go out back to back,
    then every reply is read: a burst no check of the count can keep up with."""
    sessions = [open_session(port) for _ in logins]
    for session in sessions:
        session.ehlo()
    for (name, password), session in zip(logins, sessions, strict=True):
        session.send(f"AUTH PLAIN {plain_response(name, password)}\r\n")
    return [session.read_reply() for session in sessions]


def smtps_port(process: ServerProcess) -> int:
    wait_for(lambda: re.search(SMTPS_LINE, process.log))
    return int(re.search(SMTPS_LINE, process.log)[1])  # type: ignore[index]


# ---------------------------------------------------------------- 1. the throttle cannot be raced


def test_twelve_guesses_sent_at_once_cannot_race_the_throttle(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession], tmp_path: Path
) -> None:
    """Hole 1: 12 connections, each `EHLO x` then `AUTH PLAIN <\\0alice\\0guess-i>` back to back.

    Before the fix all 12 got 535: the count was looked at before bcrypt and raised after it.
    """
    # Cost 8 (about 15 ms a check): time enough for every guess to pass a look at the count before any is counted.
    users = users_with_costs(tmp_path / "users.txt", {"alice": 8})
    server = start_server(users_path=users, max_login_failures=3)
    replies = logins_at_once(open_session, server.port, [("alice", f"guess-{number}") for number in range(12)])
    assert Counter(code for code, _ in replies) == {535: 3, 454: 9}
    assert all(NAME_WAIT.fullmatch(lines[-1]) for code, lines in replies if code == 454)


def test_guesses_at_many_names_at_once_stop_at_the_limit_of_the_address(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession], tmp_path: Path
) -> None:
    """The second limit: one address guessing across names gets at most --max-login-failures-per-ip checks."""
    users = users_with_costs(tmp_path / "users.txt", {"alice": 8, "bob": 8, "carol": 8})
    server = start_server(users_path=users, max_login_failures=3, max_login_failures_per_ip=5)
    names = ["alice", "bob", "carol", *(f"nobody{number}" for number in range(9))]
    replies = logins_at_once(open_session, server.port, [(name, "guess") for name in names])
    assert Counter(code for code, _ in replies) == {535: 5, 454: 7}
    assert all(ADDRESS_WAIT.fullmatch(lines[-1]) for code, lines in replies if code == 454)


def test_a_class_logging_in_at_once_from_one_address_is_queued_not_refused(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession], tmp_path: Path
) -> None:
    """Found with the benchmark: logins in flight held the address's places, so a class of 50 logging
    in at once from 127.0.0.1 got 20 refusals for typing nothing wrong. Now the rest wait their turn."""
    users = users_with_costs(tmp_path / "users.txt", {"alice": 8, "bob": 8, "carol": 8})
    server = start_server(users_path=users, max_login_failures=2, max_login_failures_per_ip=3)
    names = ["alice", "bob", "carol"] * 4
    replies = logins_at_once(open_session, server.port, [(name, USERS[name]) for name in names])
    assert [code for code, _ in replies] == [235] * len(names)


def test_the_454_says_how_many_seconds_to_wait(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession]
) -> None:
    """Issue 13, point 5: N is the time until the oldest counted failure leaves the window, rounded up."""
    server = start_server(max_login_failures=2, login_failure_window=60)
    first_failure = time.monotonic()
    for _ in range(2):
        assert log_in(open_session, server.port, "alice", "guess") == 535
    session = open_session(server.port)
    session.ehlo()
    code, text = auth_plain(session, "alice", ALICE)
    waited = time.monotonic() - first_failure
    match = NAME_WAIT.fullmatch(text)
    assert code == 454 and match, text
    assert math.floor(60 - waited) <= int(match[1]) <= 60


def test_a_name_that_failed_five_times_waits_and_the_rest_of_the_class_does_not(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession]
) -> None:
    """Issue 13, point 5: a class on one machine all comes from 127.0.0.1; five typos lock out one name."""
    server = start_server()  # the defaults: 5 failures per name, 30 per address, within 60 s
    for _ in range(5):
        assert log_in(open_session, server.port, "alice", "typo") == 535
    assert log_in(open_session, server.port, "alice", ALICE) == 454
    assert log_in(open_session, server.port, "bob", USERS["bob"]) == 235  # same address, another name
    assert log_in(open_session, server.port, "alice", ALICE, source="127.0.0.2") == 235  # same name, another address


@pytest.mark.parametrize("name", ["alice", "nobody"])
def test_a_name_is_throttled_the_same_whether_or_not_it_is_an_account(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession], name: str
) -> None:
    """The 454 tells nothing about which names exist: the name counted is what the client typed."""
    server = start_server(max_login_failures=2)
    replies = []
    for _ in range(3):
        session = open_session(server.port)
        session.ehlo()
        replies.append(auth_plain(session, name, "guess"))
    assert [code for code, _ in replies] == [535, 535, 454]
    assert NAME_WAIT.fullmatch(replies[-1][1])


def test_a_successful_login_forgives_its_name_but_not_the_address(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession]
) -> None:
    """A student who got in after typos starts afresh; an attacker's own account does not wipe the address's count."""
    server = start_server(max_login_failures=3, max_login_failures_per_ip=6)
    port = server.port
    assert [log_in(open_session, port, "alice", "typo") for _ in range(2)] == [535, 535]
    assert log_in(open_session, port, "alice", ALICE) == 235
    # Without the forgiving, the second of these would be alice's fourth failure: 454.
    assert [log_in(open_session, port, "alice", "typo") for _ in range(2)] == [535, 535]
    assert [log_in(open_session, port, name, "guess") for name in ("bob", "carol")] == [535, 535]
    # Six failures from the address, in spite of the success in their midst.
    session = open_session(port)
    session.ehlo()
    code, text = auth_plain(session, "bob", USERS["bob"])
    assert code == 454 and ADDRESS_WAIT.fullmatch(text), text


def test_the_throttle_log_line_names_no_name_that_is_not_an_account(
    start_server: Callable[..., RunningServer],
    open_session: Callable[..., RawSession],
    server_log: pytest.LogCaptureFixture,
) -> None:
    """Found while fixing hole 1: a password typed into the name field must not reach the log with the 454 either."""
    server = start_server(max_login_failures=1)
    typed = "correct-horse-typed-as-name"
    for expected in (535, 454):
        assert log_in(open_session, server.port, typed, "x") == expected
    assert log_in(open_session, server.port, "alice", "x") == 535
    assert log_in(open_session, server.port, "alice", "x") == 454
    logged = server_log.text
    assert typed not in logged
    assert "SMTP login refused for an unknown user" in logged and "SMTP login refused for alice" in logged


# ------------------------------------------------------- the throttle's rules, on a clock of our own


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, address: str, name: str) -> None:
    attempt = throttle.begin(address, name)
    assert isinstance(attempt, LoginAttempt), attempt
    with attempt:
        pass  # the password was wrong


def test_the_wait_lasts_until_the_oldest_counted_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_per_name=3, max_per_address=30, window=60, clock=clock)
    for moment in (0.0, 10.0, 20.5):
        clock.now = 1000 + moment
        fail(throttle, "10.0.0.1", "alice")
    clock.now = 1000 + 30.2
    refusal = throttle.begin("10.0.0.1", "alice")
    assert refusal == LoginRefused("Too many failed logins for this name", 30)  # 29.8 s, rounded up
    assert str(refusal) == "Too many failed logins for this name, try again in 30 s"
    clock.now = 1000 + 59.9
    assert throttle.begin("10.0.0.1", "alice") == LoginRefused("Too many failed logins for this name", 1)
    clock.now = 1000 + 60.0  # the failure at 0 has left the window
    assert isinstance(throttle.begin("10.0.0.1", "alice"), LoginAttempt)


class WaitSeen(threading.Condition):
    """The throttle's condition, with an event set when a login starts waiting on it."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()  # the lock is still held: the login is about to wait, and cannot have an answer
        return super().wait(timeout)


def begin_in_thread(throttle: LoginThrottle, address: str, name: str) -> tuple[threading.Thread, list[object]]:
    """Call throttle.begin in a thread of its own and return once it waits for the checks ahead; the list
    gets its answer. Fails the test if the login does not wait."""
    seen = throttle._check_ended = WaitSeen(throttle._lock)  # type: ignore[arg-type]
    answer: list[object] = []
    thread = threading.Thread(target=lambda: answer.append(throttle.begin(address, name)), daemon=True)
    thread.start()
    assert seen.waiting.wait(10), f"the login did not wait: {answer}"
    return thread, answer


def test_a_login_in_flight_holds_its_place_and_the_next_waits_for_it() -> None:
    """Three checks running fill the places: a fourth is not checked beside them, and not refused
    either (a class logging in at once is queued), but waits until one of them ends."""
    throttle = LoginThrottle(max_per_name=3, max_per_address=30, window=60, clock=Clock())
    in_flight = [throttle.begin("10.0.0.1", "alice") for _ in range(3)]
    waiting, answer = begin_in_thread(throttle, "10.0.0.1", "alice")
    assert not answer  # no fourth check while three run: it waits
    with in_flight[0] as attempt:  # type: ignore[union-attr]
        attempt.succeeded()
    waiting.join(10)
    assert len(answer) == 1 and isinstance(answer[0], LoginAttempt)


def test_a_login_waiting_for_checks_that_fail_is_refused_with_the_wait() -> None:
    throttle = LoginThrottle(max_per_name=3, max_per_address=30, window=60, clock=Clock())
    in_flight = [throttle.begin("10.0.0.1", "alice") for _ in range(3)]
    waiting, answer = begin_in_thread(throttle, "10.0.0.1", "alice")
    assert not answer  # it waits for the three, whatever they turn out to be
    for attempt in in_flight:
        with attempt:  # type: ignore[union-attr]
            pass  # wrong passwords
    waiting.join(10)
    assert answer == [LoginRefused("Too many failed logins for this name", 60)]


def test_a_login_waits_for_the_checks_ahead_only_so_long() -> None:
    throttle = LoginThrottle(max_per_name=1, max_per_address=30, window=60, clock=Clock())
    throttle.max_wait = 0.2
    assert isinstance(throttle.begin("10.0.0.1", "alice"), LoginAttempt)  # a check that never ends
    assert throttle.begin("10.0.0.1", "alice") == LoginRefused("Too many failed logins for this name", 1)


def test_an_attempt_ended_by_an_exception_counts_as_a_failure() -> None:
    throttle = LoginThrottle(max_per_name=1, max_per_address=30, window=60, clock=Clock())
    attempt = throttle.begin("10.0.0.1", "alice")
    with pytest.raises(ConnectionResetError), attempt:  # type: ignore[union-attr]
        raise ConnectionResetError
    assert isinstance(throttle.begin("10.0.0.1", "alice"), LoginRefused)


def test_the_throttle_table_stays_bounded_whatever_the_sources() -> None:
    """Also noticed in issue 10: an entry went only when its address came back; many addresses grew the table."""
    clock = Clock()
    throttle = LoginThrottle(max_per_name=5, max_per_address=30, window=60, clock=clock)
    throttle.max_records = 1000
    for number in range(5000):  # from 5000 addresses, a name each
        fail(throttle, f"10.{number // 256}.{number % 256}.1", f"user{number}")
        assert len(throttle) <= 1000
    for number in range(1000):  # from one address, 1000 names: refused after 30, so nothing more is kept
        attempt = throttle.begin("10.99.0.1", f"name{number}")
        if isinstance(attempt, LoginAttempt):
            with attempt:
                pass
    assert len(throttle) <= 1000
    clock.now += 61  # a window later, a look at the table forgets every failure in it
    fail(throttle, "10.200.0.1", "zed")
    assert len(throttle) == 2  # zed's own two records: per name and per address


def test_the_throttle_keeps_no_name_a_client_typed_only_a_digest_of_it() -> None:
    """The name counted is what the client typed, 12 KB of it if it likes: the table keeps a small digest."""
    throttle = LoginThrottle(max_per_name=5, max_per_address=30, window=60, clock=Clock())
    tracemalloc.start()
    try:
        for number in range(1000):
            fail(throttle, f"10.1.{number // 256}.{number % 256}", f"{number}{'x' * 12000}")
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(throttle) == 2000
    assert grown < 3_000_000, f"{grown} bytes for 1000 failures: the 12 MB of names are kept"


def test_successful_logins_leave_nothing_in_the_table() -> None:
    throttle = LoginThrottle(max_per_name=5, max_per_address=30, window=60, clock=Clock())
    for number in range(100):
        with throttle.begin("127.0.0.1", f"student{number}") as attempt:  # type: ignore[union-attr]
            attempt.succeeded()
    assert len(throttle) == 0


# ------------------------------------------------- 2 and 3. one throttle and one table for both ports


def tls_arguments(certificate: Certificate) -> list[str]:
    return ["--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key), "--tls-port", "0"]


def test_the_smtps_port_shares_the_throttle_of_the_plain_port(
    server_process: Callable[..., ServerProcess], certificate: Certificate, open_session: Callable[..., RawSession]
) -> None:
    """Hole 2: 3 wrong logins on the plain port earned 454 there, and the SMTPS port still checked (and let in)."""
    process = server_process(*tls_arguments(certificate), "--max-login-failures", "3")
    for _ in range(3):
        assert log_in(open_session, process.port, "alice", "guess") == 535
    tls = certificate.client_context()
    assert log_in(open_session, smtps_port(process), "alice", ALICE, tls=tls) == 454


def smtps_greeted(port: int, source: str, context: ssl.SSLContext, opened: list[socket.socket]) -> bool:
    """True if an SMTPS connection from source gets its 220; False if it is turned away (closed unanswered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    opened.append(sock)
    try:
        wrapped = context.wrap_socket(sock, server_hostname="localhost")
        opened.append(wrapped)
        return wrapped.makefile("rb").readline().startswith(b"220 ")
    except (ssl.SSLError, ConnectionError):
        return False


def test_the_smtps_port_shares_the_connection_caps_of_the_plain_port(
    server_process: Callable[..., ServerProcess], certificate: Certificate, open_session: Callable[..., RawSession]
) -> None:
    """Hole 3: with 6 in all and 3 per address, a 4th connection by SMTPS and a 7th in all were greeted."""
    process = server_process(*tls_arguments(certificate), "--max-connections", "6", "--max-connections-per-ip", "3")
    port, tls_port, tls = process.port, smtps_port(process), certificate.client_context()
    opened: list[socket.socket] = []
    try:
        for _ in range(3):
            open_session(port)  # greeted: 220
        assert not smtps_greeted(tls_port, "127.0.0.1", tls, opened), "a 4th from 127.0.0.1 came in by SMTPS"
        assert smtps_greeted(tls_port, "127.0.0.2", tls, opened)
        assert smtps_greeted(tls_port, "127.0.0.2", tls, opened)
        open_session(port, source="127.0.0.2")  # 6 in all
        assert not smtps_greeted(tls_port, "127.0.0.3", tls, opened), "a 7th in all came in by SMTPS"
        late = RawSession("127.0.0.1", port, source_address="127.0.0.3")
        opened.append(late.sock)
        assert late.read_reply()[0] == 421
    finally:
        for sock in opened:
            sock.close()


# ------------------------------------------------------------- 4. timing with mixed bcrypt costs


@pytest.fixture
def mixed_costs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[UserStore, list[int]]:
    """A UserStore with alice at cost 4 and bob and carol at cost 10, and the list of costs bcrypt is asked to pay.

    The spy does no bcrypt work: it notes the cost in the hash and answers no.
    """
    store = UserStore(users_with_costs(tmp_path / "users.txt", {"alice": 4, "bob": 10, "carol": 10}))
    costs: list[int] = []

    def spy(password: bytes, hashed: bytes) -> bool:
        costs.append(int(hashed.split(b"$")[2]))
        return False

    monkeypatch.setattr(users_module.bcrypt, "checkpw", spy)
    return store, costs


def test_an_unknown_name_costs_what_an_account_costs_whatever_the_mix(mixed_costs: tuple[UserStore, list[int]]) -> None:
    """Hole 4: the dummy hash had the highest cost of the file, so a name checked at cost 4 was an account.

    Now each unknown name is checked at the cost of an account chosen from the name with a
    secret key: always the same for that name, and costs come out weighted like the accounts.
    """
    store, costs = mixed_costs
    for number in range(300):
        assert not store.check(f"stranger{number}", b"guess")
    assert len(costs) == 300 and set(costs) == {4, 10}  # one check for each, at an account's cost
    assert 60 <= costs.count(4) <= 140  # a third of the accounts are at cost 4: about 100 of 300
    for number in range(20):  # the same name costs the same every time: no average tells it apart
        costs.clear()
        for _ in range(3):
            store.check(f"stranger{number}", b"another guess")
        assert len(set(costs)) == 1


def test_a_name_costs_the_same_after_a_restart(mixed_costs: tuple[UserStore, list[int]]) -> None:
    """Were the pick keyed at random at start-up, a name whose cost changed over a restart would be no account."""
    store, costs = mixed_costs
    restarted = UserStore(store.path)
    for number in range(50):
        store.check(f"stranger{number}", b"guess")
        restarted.check(f"stranger{number}", b"guess")
    assert costs[0::2] == costs[1::2]


def test_a_password_over_72_bytes_costs_its_accounts_own_cost(mixed_costs: tuple[UserStore, list[int]]) -> None:
    """Found while fixing hole 4: an over-long password for an account was checked against the dummy hash.

    Then a long and a short guess for bob cost different times, and for a stranger the same.
    """
    store, costs = mixed_costs
    for password in (b"short", b"x" * 100):
        assert not store.check("alice", password)
        assert not store.check("bob", password)
    assert costs == [4, 10, 4, 10]


# ----------------------------------------------------------- 5. credentials in the --verbose log


@pytest.fixture
def verbose_server(start_server: Callable[..., RunningServer], server_log: pytest.LogCaptureFixture) -> RunningServer:
    return start_server(verbose=True)


def test_nothing_that_could_be_a_credential_reaches_the_verbose_log(
    verbose_server: RunningServer, open_session: Callable[..., RawSession], server_log: pytest.LogCaptureFixture
) -> None:
    """Hole 5: a line after a refused AUTH, AUTH with a tab, a bare PLAIN blob: each was logged as sent."""
    server, blob = verbose_server, ALICE_PLAIN
    long_password = "a-passphrase-long-enough-that-base64-wraps-it-onto-a-second-line"
    long_blob = plain_response("alice", long_password)
    wrapped = [long_blob[:76], long_blob[76:]]  # as `base64` wraps its output at 76 columns
    assert b"\0" not in base64.b64decode(wrapped[1] + "=" * (-len(wrapped[1]) % 4))  # the 2nd line: password only
    conversations: list[list[tuple[str, int]]] = [  # (line, the code of its reply); a session each
        [("AUTH PLAIN", 503), (blob, 500)],  # the bytes: AUTH before EHLO, then the blob
        [("AUTH LOGIN", 503), (b64("alice"), 500), (b64(ALICE), 500)],
        [("AUTH LOGIN", 503), ("alice", 500), (ALICE, 500)],  # typed in clear, as into telnet
        [("AUTH PLAIN", 503), (wrapped[0], 500), (wrapped[1], 500)],
        [("EHLO x", 250), (f"AUTH PLAIN\t{blob}", 504), (f"AUTH\tPLAIN {blob}", 500), (f"auth  plain  {blob}", 235)],
    ]
    for conversation in conversations:
        session = open_session(server.port)
        for line, code in conversation:
            assert session.command(line)[0] == code, line
    stray = open_session(server.port)
    stray.ehlo()
    assert stray.command(blob.rstrip("="))[0] == 500  # a PLAIN response with no AUTH before it, unpadded
    assert stray.command(b64(ALICE))[0] == 500  # a LOGIN answer out of place
    assert stray.command(f"AUTH LOGIN {b64('alice')}")[0] == 334
    assert stray.command(b64(ALICE))[0] == 235  # the answer to a 334: masked as before

    logged = server_log.text
    assert "C: AUTH PLAIN" in logged and "C: EHLO x" in logged  # it did log the dialogue
    secrets = {ALICE, long_password, blob, blob.rstrip("="), b64(ALICE), b64(ALICE).rstrip("="), *wrapped}
    for secret in sorted(secrets):
        assert secret not in logged, f"the log shows {secret!r}"


def test_replies_that_echo_client_text_do_not_carry_a_credential_into_the_log(
    verbose_server: RunningServer, open_session: Callable[..., RawSession], server_log: pytest.LogCaptureFixture
) -> None:
    """Found while fixing hole 5: HELP, EHLO and MAIL echo what the client sent, and the S: line was logged as is."""
    blob = ALICE_PLAIN
    session = open_session(verbose_server.port)
    assert session.command(f"HELP {blob}")[0] == 504  # "HELP topic not recognized: <the blob>"
    assert session.command(f"EHLO {blob}")[0] == 250  # "Hello <the blob>"
    session.login()
    assert session.command(f"MAIL FROM:<alice@example.org> X={blob}")[0] == 555  # "parameter not recognized"
    session.start_data()
    code, _ = session.command(f"Subject: {blob}\r\n\r\n{blob}\r\n.")  # a message that holds one
    assert code == 250
    assert f"parameter not recognized: X={MASK}" in server_log.text
    assert blob not in server_log.text


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        ("PASS hunter2", f"PASS {MASK}"),  # POP3 (RFC 1939 7): the password in clear
        ("pass  two words", f"pass {MASK}"),
        ("PASS", "PASS"),
        ("USER alice", "USER alice"),  # an account's name is shown
        ("USER correct-horse-battery", f"USER {MASK}"),  # no account: maybe a password in the wrong field
        ("AUTH PLAIN", "AUTH PLAIN"),
        (f"AUTH PLAIN {ALICE_PLAIN}", f"AUTH PLAIN {MASK}"),
        ("AUTH\tPLAIN x", f"AUTH\\tPLAIN {MASK}"),
        (f"AUTH {ALICE_PLAIN}", f"AUTH {MASK}"),  # no mechanism: the blob in its place
        ("MAIL FROM:<a@example.org>", "MAIL FROM:<a@example.org>"),
        ("EHLO laptop", "EHLO laptop"),
        ("XYZZY", "XYZZY"),  # a typo stays readable
    ],
)
def test_the_wire_log_masks_each_line_that_may_carry_a_credential(
    line: str, logged: str, server_log: pytest.LogCaptureFixture
) -> None:
    WireLog("peer", ["AUTH", "EHLO", "MAIL", "USER", "PASS"], USERS.__contains__).client(line)
    assert server_log.records[-1].getMessage() == f"peer C: {logged}"


def test_after_an_auth_the_lines_that_are_no_command_are_masked(server_log: pytest.LogCaptureFixture) -> None:
    """A refused AUTH LOGIN may be followed by a username and a password; a command ends the masking."""
    wire = WireLog("peer", ["AUTH", "EHLO", "QUIT"], USERS.__contains__)
    sent = ["AUTH LOGIN", "alice", "pass word", "EHLO x", "XYZZY", "AUTH PLAIN", "QUIT", "XYZZY"]
    for line in sent:
        wire.client(line)
    logged = [record.getMessage().removeprefix("peer C: ") for record in server_log.records]
    assert logged == ["AUTH LOGIN", MASK, MASK, "EHLO x", "XYZZY", "AUTH PLAIN", "QUIT", "XYZZY"]


# -------------------------------------------------------------------------- 6. no leak in tmp/


def test_data_cut_off_by_a_reset_50_times_leaves_nothing_in_tmp(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Hole 6: log in, MAIL, RCPT, DATA and a reset at once: each left a file in tmp/ (the 354 was sent outside the
    block that aborts the delivery)."""
    process = server_process()
    for _ in range(50):
        session = RawSession("127.0.0.1", process.port)
        assert session.read_reply()[0] == 220
        session.login()
        assert session.command("MAIL FROM:<alice@example.org>")[0] == 250
        assert session.command("RCPT TO:<bob@example.org>")[0] == 250
        session.send("DATA\r\n")
        reset(session)
    wait_for(lambda: process.log.count(" disconnected\n") == 50)
    assert not list((tmp_path / "mailboxes").glob("*/tmp/*"))
    assert not list((tmp_path / "mailboxes").glob("*/new/*"))


def cut_by_reset(server: RunningServer, session: RawSession) -> None:
    reset(session)


def cut_by_the_data_timeout(server: RunningServer, session: RawSession) -> None:
    code, lines = session.read_reply()  # the server gives up on its own: data_timeout is 1 s
    assert code == 421 and "Timeout" in lines[0], lines


def cut_by_shutdown(server: RunningServer, session: RawSession) -> None:
    server.stop()
    code, lines = session.read_reply()
    assert code == 421 and "shutting down" in lines[0], lines


def end_with_a_disk_error(server: RunningServer, session: RawSession) -> None:
    session.send(".\r\n")
    assert session.read_reply()[0] == 451
    assert session.command("QUIT")[0] == 221


def end_with_a_bug(server: RunningServer, session: RawSession) -> None:
    session.send(".\r\n")
    code, lines = session.read_reply()
    assert code == 421 and "Internal error" in lines[0], lines


def disk_error(self: Delivery, chunk: bytes) -> None:
    raise OSError(errno.EIO, "Input/output error")


def a_bug(self: DataReader, stored: bytes) -> None:
    raise RuntimeError("a bug in the middle of the data")


@pytest.mark.parametrize(
    ("cut", "broken", "settings"),
    [
        (cut_by_reset, None, {}),
        (cut_by_the_data_timeout, None, {"data_timeout": 1}),
        (cut_by_shutdown, None, {}),
        (end_with_a_disk_error, (Delivery, "write", disk_error), {}),
        (end_with_a_bug, (DataReader, "keep", a_bug), {}),
    ],
    ids=["reset", "data-timeout", "shutdown", "disk-error", "bug"],
)
def test_no_way_out_of_data_leaves_a_file_in_tmp(
    start_server: Callable[..., RunningServer],
    open_session: Callable[..., RawSession],
    monkeypatch: pytest.MonkeyPatch,
    cut: Callable[[RunningServer, RawSession], None],
    broken: tuple[type, str, Callable[..., None]] | None,
    settings: dict[str, float],
) -> None:
    """Hole 6, the other exits: whatever ends the data, tmp/ is as it was and nothing is stored."""
    server = start_server(**settings)
    if broken is not None:
        monkeypatch.setattr(*broken)
    session = open_session(server.port)
    session.login()
    session.start_data()
    session.send(b"Subject: cut off\r\n\r\n" + b"a line of the message\r\n" * 100)
    cut(server, session)
    wait_for(lambda: server.server.connections.wait_until_idle(0))
    assert not list(server.mailboxes_path.glob("*/tmp/*"))
    assert not list(server.mailboxes_path.glob("*/new/*"))


# ------------------------------------------------------------- also noticed: RETR holds no lock


def test_a_client_that_does_not_read_its_retr_holds_up_no_dele(
    start_server: Callable[..., RunningServer], open_session: Callable[..., RawSession]
) -> None:
    """Issue 10, also noticed: RETR held the user's lock while it wrote, so DELE waited for the slowest reader.

    RETR now lists the messages under the lock and sends them without it. A message that a
    DELE removed before RETR came to it is sent as an empty block: the count stays true.
    """
    server = start_server(timeout=60)
    line = b"x" * 998 + b"\n"
    messages = [b"Subject: %d\n\n" % number + line * 2048 for number in range(12)]  # 2 MiB each: more than
    for message in messages:  # the socket buffers of both sides hold
        store_message(server.server.mailboxes, "alice", message)
    reader = open_session(server.port)
    reader.login()
    reader.send("RETR\r\n")
    assert reader.read_reply() == (250, ["12 messages follow"])
    first_line = reader.file.readline()  # the first message is open: then the reader reads no more, for now
    assert first_line == b"Subject: 0\r\n"

    deleter = open_session(server.port)
    deleter.login()
    deleter.sock.settimeout(10)  # before the fix: a TimeoutError here, DELE waiting on the lock
    assert deleter.command("DELE") == (250, ["12 messages deleted"])

    blocks = []
    for number in range(len(messages)):
        block = first_line if number == 0 else b""
        while (wire_line := reader.file.readline(2_000_000)) != b".\r\n":
            block += wire_line
        blocks.append(block.replace(b"\r\n", b"\n"))
    assert reader.command("NOOP")[0] == 250  # 12 blocks, not one more: the count was true
    sent = [number for number, block in enumerate(blocks) if block]
    assert sent and len(sent) < 12
    assert sent == list(range(len(sent))), "the messages RETR opened before the DELE, then empty blocks"
    for number in sent:
        assert blocks[number] == messages[number]
