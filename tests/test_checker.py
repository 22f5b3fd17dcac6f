"""client.py --check and --check-all: the conformance checker, as a student and a teacher run it.

The checker must be right: against this project's server every required check passes;
against real peers (aiosmtpd, Python 3.11's smtpd, Postfix's smtp-sink) each check gives
the verdict docs/coursework.md explains; and each small broken server of seed_servers.py
is caught by the check meant for its bug, with only the named others failing alongside.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import seed_servers
from conftest import ENV, ROOT, USERS, Certificate, Result, RunningServer, Terminal, require_tool, run_client, wait_for

sys.path.insert(0, str(ROOT))
import client as client_module

CLIENT = ROOT / "client.py"
RUN_TIMEOUT = 120  # seconds one checker run may take before the test fails (its own bound is far lower)
PASSWORD = USERS["alice"]
CHECK_NAMES = [check.name for check in client_module.CHECKS]
EVERY_CHECK = frozenset(CHECK_NAMES)


def run_checker(*args: str, stdin: str = "") -> Result:
    """Run client.py with args (a --check and its --port, or a --check-all), stdin piped; never a traceback."""
    result = run_client(
        client_module.DEFAULT_PORT, stdin, *args, timeout=RUN_TIMEOUT
    )  # args' --port comes last, and wins
    assert "Traceback" not in result.stderr, result.stderr
    return result


def check_json(port: int, *args: str, user: str | None = "alice") -> tuple[int, dict[str, dict[str, object]]]:
    """Run --check --json on port (as user, the password piped); return the exit status and the rows by check."""
    login = ["--user", user] if user else []
    result = run_checker("--check", "--json", "--port", str(port), *login, *args, stdin=f"{PASSWORD}\n")
    report = json.loads(result.stdout)
    return result.returncode, {row["check"]: row for row in report["checks"]}


def verdicts(rows: dict[str, dict[str, object]], verdict: str) -> set[str]:
    return {name for name, row in rows.items() if row["result"] == verdict}


# --- this project's server -----------------------------------------------------------------


def test_this_server_passes_every_check(smtp_server: RunningServer) -> None:
    result = run_checker("--check", "--port", str(smtp_server.port), "--user", "alice", stdin=f"{PASSWORD}\n")
    assert result.returncode == 0, result.stdout
    rows = result.stdout.splitlines()
    assert rows[0] == f"client.py --check 127.0.0.1:{smtp_server.port} as alice"
    assert rows[1].split() == ["check", "source", "sent", "allowed", "received", "result"]
    assert [row.rsplit(None, 1)[1] for row in rows[2:-1]] == ["PASS"] * len(CHECK_NAMES)
    required = sum(check.required for check in client_module.CHECKS)
    assert rows[-1] == f"{required} of {required} required checks passed"
    assert PASSWORD not in result.stdout + result.stderr
    # DELE, the last check, emptied the Sent folder; the rest of the run's mail went nowhere else.
    assert smtp_server.stored("alice") == []


def test_retr_gets_back_exactly_what_the_run_sent(smtp_server: RunningServer) -> None:
    status, rows = check_json(smtp_server.port)
    stored_checks = [check.name for check in client_module.CHECKS if check.stored]
    assert rows["RETR"]["received"] == f"250 {len(stored_checks)} messages, as sent"
    assert status == 0


def test_without_user_the_login_checks_are_skipped_with_the_reason(smtp_server: RunningServer) -> None:
    status, rows = check_json(smtp_server.port, user=None)
    assert status == 0
    assert verdicts(rows, "FAIL") == set()
    # The server offers AUTH, so a wrong password is tried (as "checker"); MAIL and what follows need a login.
    assert rows["wrong password"]["result"] == "PASS"
    assert rows["MAIL"]["meaning"] == "the server wants a login first: give --user NAME"
    assert rows["RETR"]["meaning"] == "needs --user NAME (the server offers AUTH)"
    assert verdicts(rows, "SKIP") == {"MAIL", "RCPT", "DATA", "RCPT before MAIL", "DATA before RCPT",
                                      "bare LF.LF is not the end", "a .. line", "end of data split", "8-bit text",
                                      "1000-octet line", "login", "RETR", "DELE, then RETR"}  # fmt: skip


def test_starttls_checks_run_inside_tls(start_server: Callable[..., RunningServer], certificate: Certificate) -> None:
    server = start_server(tls_context=certificate.server_context(), require_tls=True)
    status, rows = check_json(server.port, "--starttls", "--cafile", str(certificate.cert))
    assert status == 0
    assert verdicts(rows, "PASS") == EVERY_CHECK  # login and RETR work only under TLS here


def test_the_json_report(smtp_server: RunningServer) -> None:
    result = run_checker("--check", "--json", "--port", str(smtp_server.port))
    report = json.loads(result.stdout)
    assert report["server"] == f"127.0.0.1:{smtp_server.port}"
    assert report["passed"] is True
    assert report["required_passed"] == report["required_run"]
    assert [row["check"] for row in report["checks"]] == CHECK_NAMES
    assert set(report["checks"][0]) == {"check", "source", "sent", "allowed", "received", "result", "required",
                                        "meaning"}  # fmt: skip
    assert report["checks"][0]["source"] == "seed 4.2"
    assert report["checks"][0]["allowed"] == "220"


# --- broken servers: each bug a student really makes, caught by the check meant for it ----------

BROKEN = [
    # handler, the check that must catch it, the checks that may fail alongside (and why)
    (seed_servers.GreetsWith250, "greeting", set()),
    (seed_servers.EndsRepliesInLF, "greeting", EVERY_CHECK),  # every reply ends so
    (seed_servers.EndsDataAtBareLF, "bare LF.LF is not the end", {"RETR"}),  # RETR: that message came back cut
    (seed_servers.KeepsDoubledDots, "a .. line", {"RETR"}),
    (seed_servers.Says502ForUnknown, "unknown command", {"garbage line"}),  # garbage is an unknown command too
    (seed_servers.HelpsWith250, "HELP", {"HELP <command>", "parameter not implemented"}),
    (seed_servers.StaysOpenAfterQuit, "QUIT", set()),
    (seed_servers.LosesSplitCommands, "command split", {"very long line"}),  # 10,000 octets may come in pieces
    (seed_servers.CrashesOnLongLines, "very long line", set()),
    (seed_servers.RetrievesEveryonesMail, "RETR", {"DELE, then RETR"}),  # bob's mail is still there after DELE
    (seed_servers.TakesDataBeforeRcpt, "DATA before RCPT", set()),
    (seed_servers.KeepsWrongPasswords, "wrong password", set()),
    (seed_servers.RefusesLowerCase, "lower-case verb", set()),
    (seed_servers.Helps501ForUnknownTopics, "parameter not implemented", set()),
    (seed_servers.RefusesFullLines, "1000-octet line", set()),
    (seed_servers.CountsAfterAStatusCode, "RETR", {"DELE, then RETR"}),  # "250 2.0.0 0 ..." is no count either
]


@pytest.fixture
def seed_server() -> Iterator[Callable[[type[seed_servers.SeedHandler]], seed_servers.SeedServer]]:
    """A factory: seed_server(handler) serves handler on 127.0.0.1, port 0; all stop after the test."""
    started: list[seed_servers.SeedServer] = []

    def start(handler: type[seed_servers.SeedHandler]) -> seed_servers.SeedServer:
        server = seed_servers.SeedServer(handler)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_the_seed_done_right_passes(seed_server: Callable[..., seed_servers.SeedServer]) -> None:
    """The broken servers' common base passes everything: so each fails only for its one bug."""
    status, rows = check_json(seed_server(seed_servers.SeedHandler).port)
    assert verdicts(rows, "PASS") == EVERY_CHECK
    assert status == 0


@pytest.mark.parametrize(("handler", "caught_by", "alongside"), BROKEN, ids=[row[0].__name__ for row in BROKEN])
def test_a_broken_server_is_caught_by_its_check(
    seed_server: Callable[..., seed_servers.SeedServer],
    handler: type[seed_servers.SeedHandler],
    caught_by: str,
    alongside: set[str],
) -> None:
    server = seed_server(handler)
    server.sent["bob"].append(b"Subject: bob's own\r\n\r\nnot alice's\r\n")  # for RETR to find if it looks too far
    status, rows = check_json(server.port)
    assert status == 1
    assert rows[caught_by]["result"] == "FAIL", rows[caught_by]
    assert verdicts(rows, "FAIL") <= {caught_by} | alongside, {name: rows[name] for name in verdicts(rows, "FAIL")}


def test_a_server_that_echoes_auth_shows_no_credentials(seed_server: Callable[..., seed_servers.SeedServer]) -> None:
    """The line a server echoes is reported as "not a reply", masked: AUTH PLAIN's base64 is the password."""
    result = run_checker(
        "--check", "--json", "--port", str(seed_server(seed_servers.EchoesAuth).port), "--user", "alice",
        stdin=f"{PASSWORD}\n",
    )  # fmt: skip
    rows = {row["check"]: row for row in json.loads(result.stdout)["checks"]}
    assert rows["login"]["result"] == "FAIL"
    assert "AUTH PLAIN ********" in rows["login"]["received"]
    credentials = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    assert credentials not in result.stdout and PASSWORD not in result.stdout


def test_a_fail_says_what_it_means_from_the_reply_table(seed_server: Callable[..., seed_servers.SeedServer]) -> None:
    _, rows = check_json(seed_server(seed_servers.HelpsWith250).port)
    explain = client_module.explain
    help_row = rows["HELP"]
    assert (help_row["received"], help_row["allowed"]) == ("250", "214/211")
    assert help_row["meaning"] == f"{explain('250', '', 'HELP')}; wanted {explain('214', '', 'HELP')} (or 211)"


def test_retr_names_the_message_that_came_back_altered(seed_server: Callable[..., seed_servers.SeedServer]) -> None:
    _, rows = check_json(seed_server(seed_servers.KeepsDoubledDots).port)
    dots = rows["a .. line"]
    assert dots["received"] == "250, then RETR: altered"
    assert dots["meaning"].startswith("the message was not stored as sent: RETR gave line 5 back as ")
    back, sent = dots["meaning"].split(" back as ")[1].split(", sent as ")
    assert r"\r\n..a line that" in back and r"\r\n.a line that" in sent
    assert rows["RETR"]["received"] == "250 6 messages"
    assert rows["RETR"]["meaning"] == "not as they were sent: a .. line (see each one's row)"


def test_the_table_shows_a_broken_server_and_exits_1(seed_server: Callable[..., seed_servers.SeedServer]) -> None:
    server = seed_server(seed_servers.Says502ForUnknown)
    result = run_checker("--check", "--port", str(server.port), "--user", "alice", stdin=f"{PASSWORD}\n")
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if line.startswith("unknown command"))
    assert row.split()[-2:] == ["502", "FAIL"]
    means = result.stdout.splitlines()[result.stdout.splitlines().index(row) + 1]
    assert (
        means
        == f"    means: {client_module.explain('502', '', 'XYZZY')}; wanted {client_module.explain('500', '', 'XYZZY')}"
    )


# --- servers that do not answer, or are not there -------------------------------------------


def test_nothing_listening_fails_every_check_at_once(closed_port: int) -> None:
    status, rows = check_json(closed_port, user=None)
    assert status == 1
    assert {row["received"].split(":")[0] for row in rows.values() if row["result"] == "FAIL"} == {"cannot connect"}
    assert verdicts(rows, "FAIL") == EVERY_CHECK - {"wrong password", "login", "RETR", "DELE, then RETR"}


class CountedSilence(seed_servers.NeverGreets):
    """Never greets, and counts the sessions open at once across every server of the class."""

    lock = threading.Lock()
    open_now = 0
    most_at_once = 0

    def handle(self) -> None:
        cls = CountedSilence
        with cls.lock:
            cls.open_now += 1
            cls.most_at_once = max(cls.most_at_once, cls.open_now)
        try:
            super().handle()
        finally:
            with cls.lock:
                cls.open_now -= 1


def test_check_all_grades_a_class(
    seed_server: Callable[..., seed_servers.SeedServer], smtp_server: RunningServer, closed_port: int, tmp_path: Path
) -> None:
    silent = [seed_server(CountedSilence) for _ in range(9)]  # more than 8: the bound must hold them back
    broken = seed_server(seed_servers.HelpsWith250)
    lines = [f"127.0.0.1:{server.port}" for server in silent]
    lines += [f"127.0.0.1:{smtp_server.port} alice", "# a comment, and a blank line", "",
              f"localhost:{broken.port} alice", "10.0.0.7 alice", f"127.0.0.1:{closed_port}"]  # fmt: skip
    class_file = tmp_path / "class.txt"
    class_file.write_text("\n".join(lines) + "\n")
    csv_file = tmp_path / "grades.csv"
    result = run_checker("--check-all", str(class_file), "--csv", str(csv_file), stdin=f"{PASSWORD}\n")
    assert result.returncode == 1
    assert (
        result.stderr
        == f"{class_file}:14: cannot read '10.0.0.7 alice': write host:port [user], e.g. 10.0.0.7:2525 alice\n"
    )
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    for server in silent:
        assert rows[f"127.0.0.1:{server.port}"].endswith("greeting: no reply in 5 s")
    assert rows[f"127.0.0.1:{smtp_server.port}"].split()[1:4] == ["alice", "25/25", "0"]
    assert rows[f"localhost:{broken.port}"].split(None, 4)[4] == "HELP: 250"
    assert rows[f"127.0.0.1:{closed_port}"].endswith("greeting: cannot connect: Connection refused")
    assert result.stdout.splitlines()[-1] == "1 of 12 servers passed every required check"
    assert CountedSilence.most_at_once == client_module.MAX_PARALLEL
    with csv_file.open(newline="") as file:
        table = list(csv.DictReader(file))
    assert [row["server"] for row in table] == [line.split()[0] for line in lines if ":" in line.split("#")[0]]
    ours = table[9]
    assert (ours["user"], ours["required_passed"], ours["first_failure"]) == ("alice", "25", "")
    assert {ours[name] for name in CHECK_NAMES} == {"PASS"}
    assert table[10]["HELP"] == "FAIL"
    assert PASSWORD not in result.stdout + csv_file.read_text()


BOTH = "--check checks --host and --port; --check-all the servers in its file: choose one"
NOT_ALONE = "--json goes with --check or --check-all, --csv with --check-all"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--json"], NOT_ALONE),
        (["--check", "--csv", "x.csv"], NOT_ALONE),
        (["--check", "--raw"], "--check and --check-all print their own report: drop --raw and --trace"),
        (["--check", "--check-all", "class.txt"], BOTH),
        (["--check-all", "c.txt", "--user", "bob"], "with --check-all the users are in the file (host:port user)"),
    ],
)
def test_options_that_do_not_go_together(args: list[str], error: str) -> None:
    result = run_checker(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(f"error: {error}")


def test_a_missing_class_file_is_one_line(tmp_path: Path) -> None:
    result = run_checker("--check-all", str(tmp_path / "nowhere.txt"))
    assert (result.returncode, result.stderr) == (
        2,
        f"Cannot read {tmp_path / 'nowhere.txt'}: No such file or directory\n",
    )


# --- real peers: what each check says of them is written down in docs/coursework.md -------------


def serve_peer(command: list[str], port: int) -> subprocess.Popen[bytes]:
    """Start a peer server process on 127.0.0.1:port; return once it accepts connections."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def accepting() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else b""
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(accepting, timeout=15)
    return process


def free_port() -> int:
    """A port nothing listens on now, for a peer to bind (bound and closed at once; the OS does not reuse it soon)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def peer() -> Iterator[Callable[[list[str]], int]]:
    """peer(command) runs a peer server on a port this test picked ({port} in command); it stops after the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str]) -> int:
        port = free_port()
        processes.append(serve_peer([part.replace("{port}", str(port)) for part in command], port))
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


# Each peer's FAILs (check: what came back) and SKIPs; docs/coursework.md traces each FAIL to the seed or an RFC.
NEEDS_USER = {"login", "RETR", "DELE, then RETR"}
PYTHON_PEER_FAILS = {
    "HELP": "250",  # seed 4.2: HELP's success is 211 or 214
    "HELP <command>": "250",
    "parameter not implemented": "501",  # seed 4.1: 504 Command parameter not implemented
}
PEERS = {
    "aiosmtpd": (PYTHON_PEER_FAILS, NEEDS_USER | {"wrong password"}),  # no AUTH offered without TLS
    # smtpd decodes a command as UTF-8 and the error closes the channel (smtpd.py found_terminator).
    "smtpd": (
        {**PYTHON_PEER_FAILS, "garbage line": "the server closed the connection"},
        NEEDS_USER | {"wrong password"},
    ),
    "smtp-sink": (
        {
            "HELP": "500",  # smtp-sink knows no HELP
            "HELP <command>": "500",
            "parameter not implemented": "500",
            "very long line": "the server closed the connection",  # it hangs up on a command line over its limit
            "wrong password": "250, 250",  # it takes any AUTH: a sink, not a login system
        },
        NEEDS_USER,
    ),
}


def assert_peer(name: str, port: int) -> None:
    """The checker's verdicts on a peer are PEERS[name], and its exit status 1."""
    status, rows = check_json(port, user=None)
    fails, skips = PEERS[name]
    assert {check: rows[check]["received"] for check in verdicts(rows, "FAIL")} == fails
    assert verdicts(rows, "SKIP") == skips
    assert status == 1


def test_aiosmtpd(peer: Callable[[list[str]], int]) -> None:
    assert_peer("aiosmtpd", peer([sys.executable, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:{port}"]))


def test_python_smtpd(peer: Callable[[list[str]], int]) -> None:
    # Python 3.11's own smtpd module, run as its documentation says: python -m smtpd (-W: its DeprecationWarning).
    command = [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "smtpd", "-n", "-c", "DebuggingServer"]
    assert_peer("smtpd", peer([*command, "127.0.0.1:{port}"]))


def test_postfix_smtp_sink(peer: Callable[[list[str]], int]) -> None:
    sink = require_tool("smtp-sink")
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
    assert_peer("smtp-sink", peer([sink, *as_user, "-h", "sink.test", "127.0.0.1:{port}", "10"]))


# --- docs/coursework.md: its table and its sample are what the checker does ----------------------

COURSEWORK = ROOT / "docs" / "coursework.md"


def test_the_docs_table_is_the_checks_and_the_peers_results() -> None:
    text = COURSEWORK.read_text(encoding="utf-8")
    header = "| check | source | sent | allowed | aiosmtpd | smtpd | smtp-sink |"
    rows = [line.split(" | ") for line in text.split(header)[1].split("\n\n")[0].splitlines()[2:]]
    names = [row[0].removeprefix("| ").removesuffix(" (required: no)") for row in rows]
    assert names == CHECK_NAMES
    optional = {row[0].removeprefix("| ").removesuffix(" (required: no)") for row in rows if "required: no" in row[0]}
    assert optional == {check.name for check in client_module.CHECKS if not check.required}
    for column, peer_name in enumerate(PEERS, start=4):
        fails, skips = PEERS[peer_name]
        cells = {name: row[column].removesuffix(" |") for name, row in zip(names, rows, strict=True)}
        shown_fails = {name: f"FAIL ({received.replace('the server closed the connection', 'closed')})"
                       for name, received in fails.items()}  # fmt: skip
        assert {name: cell for name, cell in cells.items() if cell.startswith("FAIL")} == shown_fails, peer_name
        assert {name for name, cell in cells.items() if cell == "SKIP"} == skips, peer_name
        assert {cell for name, cell in cells.items() if name not in fails and name not in skips} == {"PASS"}


def test_the_docs_sample_is_a_real_run(seed_server: Callable[..., seed_servers.SeedServer]) -> None:
    text = COURSEWORK.read_text(encoding="utf-8")
    command = "$ echo alice-password | python3 client.py --check --port 2526 --user alice\n"
    sample = text.split(command)[1].split("```")[0]
    server = seed_server(seed_servers.EndsDataAtBareLF)
    result = run_checker("--check", "--port", str(server.port), "--user", "alice", stdin=f"{PASSWORD}\n")
    assert result.stdout.replace(f"127.0.0.1:{server.port}", "127.0.0.1:2526") == sample


@pytest.mark.parametrize("mode", ["--check", "--check-all"])
def test_ctrl_c_ends_the_checker_at_once(
    seed_server: Callable[..., seed_servers.SeedServer], tmp_path: Path, mode: str
) -> None:
    server = seed_server(CountedSilence)
    (tmp_path / "class.txt").write_text(f"127.0.0.1:{server.port}\n")
    where = ["--port", str(server.port)] if mode == "--check" else [str(tmp_path / "class.txt")]
    process = subprocess.Popen([sys.executable, str(CLIENT), mode, *where], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    wait_for(lambda: CountedSilence.open_now > 0)  # the checker is waiting for a greeting
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=10)
    assert (process.returncode, stdout, stderr) == (130, "", "\n(interrupted: no report)\n")


def test_at_a_terminal_the_password_is_asked_without_echo(
    smtp_server: RunningServer, terminal: Callable[..., Terminal]
) -> None:
    """As a student runs it: the table comes to the terminal, the password typed is never shown."""
    term = terminal("--check", "--port", str(smtp_server.port), "--user", "alice")
    term.expect("Password for alice: ")
    term.type(PASSWORD + "\n")
    required = sum(check.required for check in client_module.CHECKS)
    term.expect(f"{required} of {required} required checks passed")
    assert term.wait() == 0
    assert PASSWORD not in term.output
    assert "RETR" in term.output and "FAIL" not in term.output
