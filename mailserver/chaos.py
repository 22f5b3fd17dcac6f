"""Failure drills (--chaos): the server refuses on purpose, so students' clients meet 451 and 552.

A rule is `STAGE=CODE[:PROBABILITY]`, e.g. `--chaos rcpt=451:0.3,data=552:0.1`: at that
stage of an SMTP session the server answers CODE instead, with that probability (1 if left
out). The reply is a real one whose text says it is a drill:

    C: RCPT TO:<bob@example.org>
    S: 451 4.3.0 Chaos drill: temporary failure, try again later

At `connect` the drill is the greeting and the server closes, as it does after a drill at
`quit`; a 421 always closes (RFC 5321 3.8); a 5xx at `auth` is a failed login, so it closes
too (the seed, section 7). A drill is never counted by the error limit or the login
throttle, and a message refused at `data` is stored nowhere. `--chaos-seed N` makes a run
repeatable: one Random, drawn from only when a rule's probability is between 0 and 1.

Methods for the caller: `parse_rules()` (argparse's type for --chaos), `Chaos.drill()`, and
`DrillMixIn.drilled()`, which the session calls at each stage: for the stages that are
commands (`COMMAND_STAGES`) before the command's method runs (so before its own checks), at
the greeting, in the login after the AUTH exchange, and after DATA's final "." (smtp.py).
Only SMTP sessions are drilled.
"""

from __future__ import annotations

import argparse
import random
import threading
from typing import TYPE_CHECKING, ClassVar, NamedTuple, NoReturn, Protocol

from .logs import log

if TYPE_CHECKING:
    from .config import ServerConfig
    from .listener import MailServer

STAGES = ("connect", "helo", "auth", "mail", "rcpt", "data", "retr", "dele", "quit")
FORM = f"STAGE=CODE[:PROBABILITY], STAGE one of {', '.join(STAGES)}, CODE 400-599, PROBABILITY 0-1 (default 1)"
CLOSING = 421  # RFC 5321 3.8: the server closes the connection after it
DRILLED_PROTOCOL = "SMTP"  # POP3 sessions meet no drills
# The stages that are a command: the drill answers in the command's place, before its method runs.
COMMAND_STAGES = {"HELO": "helo", "EHLO": "helo", "MAIL": "mail", "RCPT": "rcpt", "RETR": "retr", "DELE": "dele",
                  "QUIT": "quit"}  # fmt: skip


class Rule(NamedTuple):
    """One --chaos rule: at stage, answer code with this probability."""

    stage: str
    code: int
    probability: float = 1.0


class Drill(NamedTuple):
    """The reply a drill sends, and whether the session ends after it."""

    code: int
    text: str
    closes: bool


def parse_rules(text: str) -> tuple[Rule, ...]:
    """`rcpt=451:0.3,data=552` as rules; raise argparse.ArgumentTypeError naming a malformed rule."""
    rules = []
    for written in text.split(","):
        rule = parse_rule(written.strip())
        if rule is None:
            raise argparse.ArgumentTypeError(f"bad rule {written.strip()!r}: write {FORM}")
        if any(known.stage == rule.stage for known in rules):
            raise argparse.ArgumentTypeError(f"two rules for the stage {rule.stage!r}: give one")
        rules.append(rule)
    return tuple(rules)


def parse_rule(written: str) -> Rule | None:
    """One rule, or None if it is not STAGE=CODE[:PROBABILITY]."""
    stage, _, answer = written.partition("=")
    code, _, probability = answer.partition(":")
    if stage.lower() not in STAGES or not (code.isdigit() and 400 <= int(code) <= 599):
        return None
    try:
        chance = float(probability) if probability else 1.0
    except ValueError:
        return None
    if not 0 <= chance <= 1:  # also refuses nan
        return None
    return Rule(stage.lower(), int(code), chance)


class Chaos:
    """The server's drills: one instance for the whole server, shared by every session."""

    def __init__(self, rules: tuple[Rule, ...] = (), seed: int | None = None) -> None:
        self.rules = {rule.stage: rule for rule in rules}
        self.random = random.Random(seed)
        self.lock = threading.Lock()  # sessions draw from one Random: its sequence is what --chaos-seed repeats

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __str__(self) -> str:
        """The rules as --chaos writes them."""
        return ",".join(f"{rule.stage}={rule.code}:{rule.probability:g}" for rule in self.rules.values())

    def drill(self, stage: str, hostname: str) -> Drill | None:
        """The drill reply for stage this time, or None to go on as usual."""
        rule = self.rules.get(stage)
        if rule is None or not self.strikes(rule.probability):
            return None
        return Drill(rule.code, drill_text(rule.code, hostname), closes=closes(stage, rule.code))

    def strikes(self, probability: float) -> bool:
        if probability in (0.0, 1.0):  # certain either way: no draw, so other rules' sequence stays the same
            return probability == 1.0
        with self.lock:
            return self.random.random() < probability


def drill_text(code: int, hostname: str) -> str:
    """The text of a drill reply: an enhanced status code (RFC 3463 X.3.0, "other") and that it is a drill."""
    if code == CLOSING:
        return f"{hostname} Chaos drill: service not available, closing transmission channel"
    if code < 500:
        return "4.3.0 Chaos drill: temporary failure, try again later"
    return "5.3.0 Chaos drill: permanent failure, do not try again"


def closes(stage: str, code: int) -> bool:
    """True if the session ends after this drill: at connect, after a 421, or a 5xx at AUTH (a failed login)."""
    return stage in ("connect", "quit") or code == CLOSING or (stage == "auth" and code >= 500)


class Abortable(Protocol):
    """A message being received (a Delivery)."""

    def abort(self) -> None: ...


class DrillMixIn:
    """The drills of `session.LineHandler`, which mixes this in (as it mixes in the login).

    It uses the session's mail, config, peer, protocol, send_lines() and hang_up().
    """

    if TYPE_CHECKING:
        mail: MailServer
        config: ServerConfig
        peer: str
        protocol: ClassVar[str]

        def send_lines(self, text: str) -> None: ...
        def hang_up(self) -> NoReturn: ...

    def drilled(self, stage: str | None, *, dropping: Abortable | None = None) -> bool:
        """True if a drill answered in stage's place (first aborting dropping, a message being received);
        the session hangs up after a drill that closes. False, and nothing sent, if no drill came."""
        if stage is None or self.protocol != DRILLED_PROTOCOL:
            return False
        drill = self.mail.chaos.drill(stage, self.config.hostname)
        if drill is None:
            return False
        if dropping is not None:
            dropping.abort()  # refused on purpose: stored nowhere
        log.info("%s CHAOS drill at %s: %d", self.peer, stage, drill.code)
        # Not through reply(): a drill is no mistake of the client's, so the error limit does not count it.
        self.send_lines(f"{drill.code} {drill.text}\r\n")
        if drill.closes:
            self.hang_up()
        return True
