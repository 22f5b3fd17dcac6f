"""The server's log and client.py's console mask credentials by the same rules: masking_cases.py's table."""

from __future__ import annotations

import pytest
from conftest import ROOT  # noqa: F401  (puts the project on the path)
from masking_cases import ASKED, CASES, SECRETS, Case
from test_client import client_module

from mailserver.logs import WireLog
from mailserver.pop3 import POP3Handler
from mailserver.smtp import SMTPHandler

SERVER_VERBS = {*SMTPHandler.commands(), *POP3Handler.commands()}


class CapturedLog(WireLog):
    """A WireLog that keeps what it would log."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:1", SERVER_VERBS, lambda name: True)
        self.lines: list[str] = []

    def write(self, direction: str, text: str) -> None:
        self.lines.append(text)


def through_the_server_log(case: Case) -> list[str]:
    log, asked = CapturedLog(), False
    for line in case.dialogue:
        if line is ASKED:
            asked = True
            continue
        log.client(line, credential=asked)
        asked = False
    return log.lines


def through_the_console(case: Case) -> list[str]:
    mask, shown, asked = client_module.CredentialMask(), [], False
    for line in case.dialogue:
        if line is ASKED:
            asked = True
            continue
        shown.append(mask.shown(line, answer=asked))
        asked = False
    return shown


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("side", [through_the_server_log, through_the_console], ids=["server log", "console"])
def test_each_case_is_masked_alike(case: Case, side: object) -> None:
    shown = side(case)  # type: ignore[operator]
    assert shown == case.shown
    for secret in SECRETS:
        assert not any(secret in line for line in shown)


def test_the_console_knows_every_verb_of_the_server() -> None:
    # A verb it did not know would make a command typed after AUTH look like a credential (or a base64 word).
    assert SERVER_VERBS <= client_module.COMMAND_VERBS
