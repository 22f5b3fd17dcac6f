"""Logging in, the same in both protocols: the SASL exchange, the check, and its one outcome.

SMTP's AUTH and POP3's USER/PASS and AUTH all end in `check_login()`, which runs the login
through the server's one throttle and bcrypt check, logs what did not succeed, and returns
a `Login`: OK, WRONG, THROTTLED or TLS_FIRST. `LoginMixIn.log_in()` answers it
through the protocol's `refuse_login()`; a wrong password ends the connection there, once
for both. The SASL mechanisms are the `auth_<NAME>` methods (PLAIN here, LOGIN in SMTP):
EHLO, CAPA, HELP and the refusals list them from those methods, as aiosmtpd does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, NamedTuple, NoReturn

from .limits import LoginRefused
from .logs import log
from .sasl import (
    MAX_AUTH_LINE,
    AuthProblem,
    Cancelled,
    Credentials,
    decode_response,
    plain_credentials,
    well_formed_name,
)

if TYPE_CHECKING:
    from .listener import MailServer


class LoginOutcome(enum.Enum):
    """What a login came to, in either protocol (SMTP AUTH, POP3 USER/PASS and AUTH)."""

    OK = "logged in"
    WRONG = "wrong username or password"  # the seed's rule: the connection ends
    THROTTLED = "refused unchecked by the login throttle"  # the session goes on
    TLS_FIRST = "no password before TLS (--require-tls)"  # the session goes on
    REVOKED = "the account was removed or its password changed since the login"  # the session ends (issue 18)


class Login(NamedTuple):
    """A login's outcome, the reason a THROTTLED one may tell the client ("try again in 42 s"), and
    for OK the account logged in, as users.txt spells it."""

    outcome: LoginOutcome
    reason: str = ""
    account: str = ""


class LoginMixIn:
    """The login steps of `session.LineHandler`, which mixes this in (as socketserver mixes in threads).

    It uses the session's mail, peer, protocol and client_address, and its needs_tls_first(),
    read_line(), trace(), send_challenge(), refuse_auth(), drilled() and hang_up(); each protocol
    gives refuse_login() its own words.
    """

    if TYPE_CHECKING:
        mail: MailServer
        peer: str
        account: str | None
        login_hash: bytes | None
        protocol: ClassVar[str]
        client_address: tuple[str, int]

        def needs_tls_first(self) -> bool: ...
        def read_line(self, limit: int) -> bytes | None: ...
        def trace(self, direction: str, line: str, *, credential: bool = False) -> None: ...
        def send_challenge(self, challenge: bytes) -> None: ...
        def refuse_auth(self, problem: AuthProblem) -> None: ...
        def drilled(self, stage: str | None) -> bool: ...
        def hang_up(self) -> NoReturn: ...

    def refuse_login(self, login: Login) -> None:
        """Answer a login that did not succeed (WRONG, THROTTLED, TLS_FIRST) in the protocol's words."""
        raise NotImplementedError

    def refused_before_tls(self) -> bool:
        """With --require-tls and no TLS yet: answer as refuse_login() does and return True."""
        if not self.needs_tls_first():
            return False
        self.refuse_login(Login(LoginOutcome.TLS_FIRST))
        return True

    def log_in(self, credentials: Credentials) -> bool:
        """Check credentials; True if they are right (self.account is then the account), else answer the
        outcome and return False.

        A wrong username or password ends the connection after its reply: the seed's rule,
        for both protocols. A refused login (the throttle, no TLS yet) lets the session go on.
        """
        if self.drilled("auth"):  # before the throttle: a --chaos drill counts no failed login
            return False
        login = self.check_login(credentials)
        if login.outcome is LoginOutcome.OK:
            self.account = login.account
            return True
        self.refuse_login(login)
        if login.outcome is LoginOutcome.WRONG:
            self.hang_up()
        return False

    def check_login(self, credentials: Credentials) -> Login:
        """Check a login as both protocols do, log it unless it succeeded, and return its outcome.

        One rule for a name (issue 18): it means the account RCPT would find for it (case
        ignored, as in addresses), the throttle counts it under that account, and an OK login
        is that account as users.txt spells it. The throttle counts the login before bcrypt
        runs, so no burst of guesses outruns it, and settles it before the caller replies: a
        client may be back at once with its next login.
        """
        users, name = self.mail.users, credentials.user
        if self.needs_tls_first():  # the commands refuse before asking; this keeps any path from checking
            log.warning("%s %s login refused for %s: no TLS yet", self.peer, self.protocol, self.loggable_name(name))
            return Login(LoginOutcome.TLS_FIRST)
        account = users.account(name) or name
        attempt = self.mail.login_throttle.begin(self.client_address[0], account)
        if isinstance(attempt, LoginRefused):
            log.warning("%s %s login refused for %s: %s", self.peer, self.protocol, self.loggable_name(name), attempt)
            return Login(LoginOutcome.THROTTLED, str(attempt))
        with attempt:
            # Taken before the check: if passwd lands in between, the session ends at its next command.
            login_hash = users.hash_of(account)
            authorization = credentials.authorization_id
            wanted_identity = authorization == "" or users.account(authorization) == account
            if users.check(account, credentials.password) and wanted_identity:
                attempt.succeeded()
                self.login_hash = login_hash
        if attempt.success:
            return Login(LoginOutcome.OK, account=account)
        log.warning("%s %s login failed for %s", self.peer, self.protocol, self.loggable_name(name))
        return Login(LoginOutcome.WRONG)

    @classmethod
    def mechanisms(cls) -> list[str]:
        """The SASL mechanisms offered: one per auth_<NAME> method, in the order they are defined."""
        names = (name for klass in reversed(cls.__mro__) for name in vars(klass) if name.startswith("auth_"))
        return [name.removeprefix("auth_") for name in dict.fromkeys(names) if name.removeprefix("auth_").isupper()]

    def authenticate(self, argument: str) -> Credentials | None:
        """Run AUTH's `<mechanism> [<initial-response>]` by its auth_<MECHANISM> method (RFC 4954, RFC 5034):
        the credentials, or None once refuse_auth() has answered."""
        mechanism, _, initial = argument.partition(" ")
        name = mechanism.upper()
        if not (name.isascii() and name.isalpha() and name in self.mechanisms()):
            self.refuse_auth(AuthProblem.UNKNOWN_MECHANISM)
            return None
        run: Callable[[str | None], Credentials | None] = getattr(self, "auth_" + name)
        credentials = run(initial.strip() or None)
        if credentials is not None and not well_formed_name(credentials.user):  # one rule for a name
            self.refuse_auth(AuthProblem.MALFORMED_NAME)
            return None
        return credentials

    def auth_PLAIN(self, initial: str | None) -> Credentials | None:
        """RFC 4616: base64 of authzid NUL authcid NUL password; the same in SMTP (RFC 4954) and POP3 (RFC 5034)."""
        response = self.auth_response(initial, b"")
        if response is None:
            return None
        credentials = plain_credentials(response)
        if credentials is None:
            self.refuse_auth(AuthProblem.MALFORMED)
        return credentials

    def auth_response(self, initial: str | None, challenge: bytes) -> bytes | None:
        """Return the decoded initial response, or send the challenge and read the answer;
        None once refuse_auth() has answered (a line too long, "*", not base64)."""
        if initial is None:
            self.send_challenge(challenge)
            line = self.read_line(MAX_AUTH_LINE)
            if line is None:
                self.refuse_auth(AuthProblem.TOO_LONG)
                return None
            answer = line.decode("ascii", "replace").strip()
            self.trace("C:", answer, credential=True)
        else:
            answer = initial
        try:
            return decode_response(answer)
        except Cancelled:
            self.refuse_auth(AuthProblem.CANCELLED)
        except ValueError:
            self.refuse_auth(AuthProblem.BAD_BASE64)
        return None

    def account_revoked(self) -> bool:
        """True if the logged-in account is gone from users.txt, or has another hash than at the login."""
        return self.account is not None and self.mail.users.hash_of(self.account) != self.login_hash

    def is_account(self, name: str) -> bool:
        return name in self.mail.users

    def loggable_name(self, name: str) -> str:
        """name if it is an account; a name that is not may be a password typed into the wrong field."""
        return name if self.is_account(name) else "an unknown user"
