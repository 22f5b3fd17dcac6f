"""The one table of what a client's line may show, for the server's --verbose log and the console alike.

Issue 18, item 6: `client.py --raw` must mask on screen, in its history and in :save by
the same rules as the server's log (mailserver/logs.py). Each case is a dialogue: the
client's lines, and where the server asked for an answer (a 334, POP3's "+"). `shown` is
what each client line may show, in order; none of SECRETS may show anywhere.
test_masking.py runs every case through both.
"""

from __future__ import annotations

import base64
from typing import NamedTuple

from conftest import USERS, plain_response

PASSWORD = USERS["alice"]
PLAIN = plain_response("alice", PASSWORD)
NAME64, PASSWORD64 = (base64.b64encode(text.encode()).decode() for text in ("alice", PASSWORD))
SECRETS = [PASSWORD, PLAIN, PLAIN.rstrip("="), PASSWORD64, PASSWORD64.rstrip("=")]
MASK = "********"
ASKED = None  # in a dialogue: the server asked for the next line (334, "+")


class Case(NamedTuple):
    name: str
    dialogue: list[str | None]  # client lines, and ASKED where the server asked for one
    shown: list[str]  # what each client line may show


# fmt: off
CASES = [
    Case("AUTH PLAIN with an initial response", [f"AUTH PLAIN {PLAIN}"], [f"AUTH PLAIN {MASK}"]),
    Case("AUTH, a tab, PLAIN", [f"AUTH\tPLAIN {PLAIN}"], [f"AUTH\tPLAIN {MASK}"]),
    Case("AUTH PLAIN, two spaces", [f"AUTH  PLAIN  {PLAIN}"], [f"AUTH  PLAIN {MASK}"]),
    Case("lower case", [f"auth plain {PLAIN}"], [f"auth plain {MASK}"]),
    Case("AUTH PLAIN alone, the answer after the 334", ["AUTH PLAIN", ASKED, PLAIN], ["AUTH PLAIN", MASK]),
    Case("AUTH PLAIN alone, the answer typed before the 334", ["AUTH PLAIN", PLAIN], ["AUTH PLAIN", MASK]),
    Case("AUTH LOGIN, two answers", ["AUTH LOGIN", ASKED, NAME64, ASKED, PASSWORD64], ["AUTH LOGIN", MASK, MASK]),
    Case("AUTH LOGIN with the name", [f"AUTH LOGIN {NAME64}", ASKED, PASSWORD64], [f"AUTH LOGIN {MASK}", MASK]),
    Case("the password in clear after a 334",
         ["AUTH LOGIN", ASKED, NAME64, ASKED, PASSWORD], ["AUTH LOGIN", MASK, MASK]),
    Case("AUTH LOGIN, answers typed ahead",
         ["AUTH LOGIN", NAME64, PASSWORD, "NOOP"], ["AUTH LOGIN", MASK, MASK, "NOOP"]),
    Case("AUTH refused, then the answer anyway", ["AUTH PLAIN", PLAIN, "NOOP"], ["AUTH PLAIN", MASK, "NOOP"]),
    Case("a command after AUTH is a command", ["AUTH PLAIN", "QUIT"], ["AUTH PLAIN", "QUIT"]),
    Case("PASS, a tab, the password", [f"PASS\t{PASSWORD}"], [f"PASS {MASK}"]),
    Case("PASS, two spaces", [f"PASS  {PASSWORD}"], [f"PASS {MASK}"]),
    Case("a password of two words", ["PASS two words"], [f"PASS {MASK}"]),
    Case("a stray base64 word", [PASSWORD64], [MASK]),
    Case("a stray base64 word with spaces", [f"  {PASSWORD64}\t"], [MASK]),
    Case("a PLAIN response in another command", [f"HELP {PLAIN}"], [f"HELP {MASK}"]),
    Case("POP3's AUTH PLAIN and its +", ["AUTH PLAIN", ASKED, PLAIN, "STAT"], ["AUTH PLAIN", MASK, "STAT"]),
    Case("ordinary commands", ["MAIL FROM:<a@localhost>", "USER alice"], ["MAIL FROM:<a@localhost>", "USER alice"]),
]
# fmt: on
