"""Failure drills (--chaos): the server refuses on purpose, so students' clients meet 451 and 552.

A rule is `STAGE=CODE[:PROBABILITY]`, e.g. `--chaos rcpt=451:0.3,data=552:0.1`: at that
stage of an SMTP session the server answers CODE instead, with that probability (1 if left
out). The reply is a real one whose text says it is a drill:

    C: RCPT TO:<bob@example.org>
    S: 451 4.3.0 Chaos drill: temporary failure, try again later

At `connect` the drill is the greeting and the server closes; a 421 always closes (RFC 5321
3.8); a 5xx at `auth` is a failed login, so it closes too (the seed, section 7). A drill is
never counted by the error limit or the login throttle, and a message refused at `data` is
stored nowhere. `--chaos-seed N` makes a run repeatable: one Random, drawn from only when a
rule's probability is between 0 and 1.

Methods for the caller: `parse_rules()` (argparse's type for --chaos) and `Chaos.drill()`.
"""

from __future__ import annotations

import argparse
import random
import threading
from typing import NamedTuple

STAGES = ("connect", "helo", "auth", "mail", "rcpt", "data", "retr", "dele", "quit")
FORM = f"STAGE=CODE[:PROBABILITY], STAGE one of {', '.join(STAGES)}, CODE 400-599, PROBABILITY 0-1 (default 1)"
CLOSING = 421  # RFC 5321 3.8: the server closes the connection after it


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
