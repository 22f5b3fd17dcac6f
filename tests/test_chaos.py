"""server.py --chaos: replies that fail on purpose, so that students' clients meet 451 and 552.

The drills are switched on for a running server by handing its MailServer a Chaos, as
server.py's wiring does from --chaos; the command line itself is tested through server.py.
"""

from __future__ import annotations

import smtplib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, POP3Session, RawSession, RunningServer, ServerProcess, plain_response

sys.path.insert(0, str(ROOT))
import server as server_module
from mailserver.chaos import FORM, Chaos, parse_rules
from mailserver.config import ServerConfig
from mailserver.session import MAX_ERRORS


def drills(server: RunningServer, rules: str, seed: int | None = None) -> None:
    """Switch the drills of a running server to rules (as --chaos writes them; "": none)."""
    server.server.chaos = Chaos(parse_rules(rules) if rules else (), seed)


def config_of(*argv: str) -> ServerConfig:
    parser = server_module.build_parser()
    return server_module.config_from(server_module.parse_arguments(parser, list(argv)), parser)


def message_files(root: Path) -> list[Path]:
    """Every message file under root, finished or not (Maildir's tmp, new and cur)."""
    return [path for path in root.rglob("*") if path.is_file() and path.parent.name in ("tmp", "new", "cur")]


TEMPORARY = "451 4.3.0 Chaos drill: temporary failure, try again later"
PERMANENT = "552 5.3.0 Chaos drill: permanent failure, do not try again"


def test_a_drill_at_rcpt_says_it_is_one(smtp_server: RunningServer, logged_in: RawSession) -> None:
    drills(smtp_server, "rcpt=451")
    logged_in.expect(f"""
        C: MAIL FROM:<alice@example.org>
        S: 250 OK
        C: RCPT TO:<bob@example.org>
        S: {TEMPORARY}
        C: NOOP
        S: 250 OK
    """)


@pytest.mark.parametrize(
    ("stage", "before", "command"),
    [
        ("helo", [], "HELO client.test"),
        ("mail", [], "MAIL FROM:<alice@example.org>"),
        ("retr", [], "RETR"),
        ("dele", [], "DELE"),
        ("rcpt", ["MAIL FROM:<alice@example.org>"], "RCPT TO:<bob@example.org>"),
    ],
)
def test_each_stage_can_be_drilled(
    smtp_server: RunningServer, logged_in: RawSession, stage: str, before: list[str], command: str
) -> None:
    drills(smtp_server, f"{stage}=451")
    for line in before:
        assert logged_in.command(line)[0] == 250
    assert logged_in.command(command) == (451, ["4.3.0 Chaos drill: temporary failure, try again later"])


@pytest.mark.parametrize(
    ("code", "greeting"),
    [
        (421, "421 mail.test Chaos drill: service not available, closing transmission channel"),
        (554, "554 5.3.0 Chaos drill: permanent failure, do not try again"),  # RFC 5321 3.1: no service here
    ],
)
def test_a_connect_drill_answers_and_closes(smtp_server: RunningServer, code: int, greeting: str) -> None:
    drills(smtp_server, f"connect={code}")
    session = RawSession(smtp_server.host, smtp_server.port)
    assert session.read_line() == greeting
    assert session.closed_by_server()
    session.close()


def test_a_quit_drill_answers_and_closes(smtp_server: RunningServer, session: RawSession) -> None:
    drills(smtp_server, "quit=554")
    assert session.command("QUIT") == (554, ["5.3.0 Chaos drill: permanent failure, do not try again"])
    assert session.closed_by_server()


def test_a_message_refused_at_data_is_stored_nowhere(smtp_server: RunningServer, logged_in: RawSession) -> None:
    drills(smtp_server, "data=552")
    # To an account here too: neither the Sent copy nor the inbox copy may stay, not even in tmp/.
    reply = logged_in.send_message(b"Subject: drill\r\n\r\nnot to be kept\r\n", recipients=["bob@mail.test"])
    assert reply == (552, ["5.3.0 Chaos drill: permanent failure, do not try again"])
    assert logged_in.command("NOOP")[0] == 250
    assert message_files(smtp_server.mailboxes_path) == []
    drills(smtp_server, "")
    assert logged_in.send_message(b"Subject: kept\r\n\r\nthis one\r\n", recipients=["bob@mail.test"])[0] == 250
    assert smtp_server.stored("alice") == [b"Subject: kept\n\nthis one\n"]


def test_a_421_drill_at_data_closes_and_stores_nothing(smtp_server: RunningServer, logged_in: RawSession) -> None:
    drills(smtp_server, "data=421")
    code, _ = logged_in.send_message(b"Subject: drill\r\n\r\ngone\r\n")
    assert code == 421
    assert logged_in.closed_by_server()
    assert message_files(smtp_server.mailboxes_path) == []


def test_a_5xx_drill_at_auth_is_a_failed_login_but_not_counted(
    smtp_server: RunningServer, connect: Callable[..., RawSession]
) -> None:
    drills(smtp_server, "auth=535")
    for _ in range(smtp_server.config.max_login_failures + 1):  # more than the throttle lets fail
        session = connect()
        assert session.command("EHLO client.test")[0] == 250
        assert session.command(f"AUTH PLAIN {plain_response('alice', 'alice-password')}") == (
            535,
            ["5.3.0 Chaos drill: permanent failure, do not try again"],
        )
        assert session.closed_by_server()  # the seed, section 7: a failed login ends the connection
    drills(smtp_server, "")
    connect().login()  # 235: the throttle counted none of the drills


def test_a_4xx_drill_at_auth_keeps_the_session(smtp_server: RunningServer, session: RawSession) -> None:
    drills(smtp_server, "auth=454")
    assert session.command("EHLO client.test")[0] == 250
    assert session.command(f"AUTH PLAIN {plain_response('alice', 'alice-password')}")[0] == 454
    drills(smtp_server, "")
    assert session.command(f"AUTH PLAIN {plain_response('alice', 'alice-password')}")[0] == 235


def test_drills_are_not_counted_by_the_error_limit(smtp_server: RunningServer, logged_in: RawSession) -> None:
    drills(smtp_server, "rcpt=550")
    assert logged_in.command("MAIL FROM:<alice@example.org>")[0] == 250
    for _ in range(MAX_ERRORS + 2):
        assert logged_in.command("RCPT TO:<bob@example.org>")[0] == 550
    assert logged_in.command("NOOP")[0] == 250  # no 421 Too many errors


def test_the_rate_and_the_seed(smtp_server: RunningServer, connect: Callable[..., RawSession]) -> None:
    """rcpt=451:0.3 refuses about 3 in 10, and the same seed refuses the same ones."""

    def refusals(seed: int) -> list[bool]:
        drills(smtp_server, "rcpt=451:0.3", seed)
        session = connect()
        session.login()
        assert session.command("MAIL FROM:<alice@example.org>")[0] == 250
        codes = [session.command("RCPT TO:<bob@example.org>")[0] for _ in range(90)]  # under the 100 recipients
        assert set(codes) <= {250, 451}
        return [code == 451 for code in codes]

    first = refusals(seed=7)
    assert 9 <= sum(first) <= 45  # binomial(90, 0.3): mean 27, standard deviation 4.3; this is 4 of them each way
    assert refusals(seed=7) == first
    assert refusals(seed=8) != first


def test_a_probability_of_0_never_drills(smtp_server: RunningServer, logged_in: RawSession) -> None:
    drills(smtp_server, "mail=451:0")
    for _ in range(20):
        assert logged_in.command("MAIL FROM:<alice@example.org>")[0] == 250
        assert logged_in.command("RSET")[0] == 250


# --- the command line -------------------------------------------------------------------------


def test_the_command_line_drill_is_logged_as_chaos(server_process: Callable[..., ServerProcess]) -> None:
    process = server_process("--chaos", "rcpt=451,data=552:0.5", "--chaos-seed", "3")
    assert "CHAOS drills on: rcpt=451:1,data=552:0.5" in process.log
    with smtplib.SMTP("127.0.0.1", process.port, timeout=10) as client:
        client.login("alice", "alice-password")
        client.mail("alice@example.org")
        assert client.rcpt("bob@example.org") == (451, b"4.3.0 Chaos drill: temporary failure, try again later")
    process.stop()
    marked = [line.rstrip() for line in process.log_lines if "CHAOS drill at" in line]
    assert len(marked) == 1 and marked[0].endswith("CHAOS drill at rcpt: 451"), marked


@pytest.mark.parametrize(
    ("rules", "bad"),
    [
        ("rcpt=45", "rcpt=45"),
        ("rcpt", "rcpt"),
        ("nowhere=451", "nowhere=451"),
        ("rcpt=451:1.5", "rcpt=451:1.5"),
        ("rcpt=451:often", "rcpt=451:often"),
        ("rcpt=250", "rcpt=250"),
        ("data=552,,rcpt=451", ""),
    ],
)
def test_a_malformed_rule_is_a_usage_error(capsys: pytest.CaptureFixture[str], rules: str, bad: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        config_of("--chaos", rules)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.endswith(f": error: argument --chaos: bad rule {bad!r}: write {FORM}")


def test_two_rules_for_one_stage_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        config_of("--chaos", "rcpt=451,rcpt=452")
    assert capsys.readouterr().err.splitlines()[-1].endswith("two rules for the stage 'rcpt': give one")


def test_classroom_leaves_chaos_off() -> None:
    assert config_of("--classroom").chaos is None
    assert not Chaos(config_of("--classroom").chaos or ())
    # An option given still wins over the preset, as every other one does.
    assert config_of("--classroom", "--chaos", "mail=451").chaos == parse_rules("mail=451")


def test_pop3_sessions_meet_no_drills(pop3_server: RunningServer, pop3: POP3Session) -> None:
    drills(pop3_server, "connect=421,auth=535,retr=451,dele=451,quit=451")
    pop3.login()
    assert pop3.status("DELE 1").startswith("-ERR")  # an empty inbox's own answer, not a drill
    assert pop3.status("QUIT").startswith("+OK")
