"""Every setting of the server, with its default and its help text: one source for both.

`ServerConfig` is what the code reads; `server.py` builds its command line from the
fields that carry an `option(...)`, so a default or a help text is written once. It is
frozen, and checks its own combinations when it is made (`__post_init__`): a test that
builds one directly gets the same refusals as the command line.

A new limit is an `option(...)` here, with a comment saying why its default is what it is.
Only a number an RFC fixes is a constant, in the module of its protocol, citing the RFC
(`MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4`).
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from typing import Any

from .chaos import FORM, Rule, parse_rules


def option(default: Any, help: str, *, metavar: str | None = None, type: type | None = None) -> Any:
    """A setting that is also a command-line option (`--name-with-dashes`); `help` is its --help text.

    A tuple default makes the option repeatable: each use adds one item of `type`.
    """
    return dataclasses.field(
        default=default, metadata={"help": help, "metavar": metavar, "type": type or type_of(default)}
    )


def type_of(default: Any) -> type:
    return str if default is None else type(default)


class ConfigError(ValueError):
    """A combination of settings that cannot work; the message names the options, as the command line spells them."""


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """The settings of one server process, shared by all its listeners; the command line fills them in."""

    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(2525, "SMTP port; 0 picks a free one")
    # 1100: unprivileged, as mpopd's default; 110 would need root.
    pop3_port: int = option(1100, "POP3 port; 0 picks a free one", metavar="PORT")
    pop3s_port: int | None = option(None, "also serve POP3 here with implicit TLS (POP3S)", metavar="PORT", type=int)
    no_pop3: bool = option(False, "do not serve POP3")
    hostname: str = option(socket.gethostname(), "the server's name, in the greeting and the replies")
    # With --hostname and localhost, the domains whose addresses are this server's accounts.
    domain: tuple[str, ...] = option((), "one more local domain (repeat for several)", metavar="NAME", type=str)
    users: str = option("users.txt", "the accounts file", metavar="FILE")
    mailboxes: str = option("mailboxes", "where mail is stored", metavar="DIR")
    max_message_size: int = option(10 * 1024 * 1024, "the largest message accepted", metavar="BYTES")
    # Of inbox, per user; the messages a user sent are not counted (DELE empties them).
    max_mailbox_size: int = option(100 * 1024 * 1024, "the most mail one inbox may hold", metavar="BYTES")
    max_connections: int = option(100, "sessions at once, in all", metavar="N")
    # As Postfix's smtpd_client_connection_count_limit.
    max_connections_per_ip: int = option(50, "sessions at once from one address", metavar="N")
    # RFC 5321 4.5.3.2.7; also the ceiling for one command line, so a byte a second is no way around it.
    timeout: float = option(300.0, "idle timeout, and the most one command line may take", metavar="SECONDS")
    # RFC 5321 4.5.3.2.6 asks at least 10 minutes for the final "." to be answered; this bounds the whole DATA.
    data_timeout: float = option(600.0, "the most one DATA transfer may take", metavar="SECONDS")
    # RFC 1939 3: a POP3 server's autologout timer must be at least 10 minutes; --timeout is SMTP's.
    pop3_timeout: float = option(600.0, "POP3 idle timeout, and the most one command line may take", metavar="SECONDS")
    # Per name and address: one student's typos lock out that name, not a class sharing one address.
    max_login_failures: int = option(5, "failed logins of one name from one address before it must wait", metavar="N")
    # All names together: stops one address guessing across many names.
    max_login_failures_per_ip: int = option(
        30, "failed logins from one address, all names together, before it must wait", metavar="N"
    )
    login_failure_window: float = option(60.0, "how long a failed login counts", metavar="SECONDS")
    # As Dovecot's auth_cache_ttl: a client that logs in for every message pays bcrypt once an hour.
    auth_cache_ttl: float = option(
        3600.0, "how long a successful login is remembered, so the next costs no bcrypt (0: off)", metavar="SECONDS"
    )
    tls_cert: str | None = option(None, "certificate (PEM) for STARTTLS, STLS and the TLS ports", metavar="FILE")
    tls_key: str | None = option(None, "private key (PEM) of --tls-cert", metavar="FILE")
    tls_port: int | None = option(None, "also listen here with implicit TLS (SMTPS)", metavar="PORT", type=int)
    require_tls: bool = option(False, "refuse logins before STARTTLS (POP3: STLS)")
    verbose: bool = option(False, "log every line as C:/S: (passwords masked)")
    # Failure drills for students' clients (chaos.py); --classroom leaves them off.
    chaos: tuple[Rule, ...] | None = option(
        None, f"refuse on purpose: {FORM}; several, comma-separated", metavar="RULES", type=parse_rules
    )
    chaos_seed: int | None = option(
        None, "seed of --chaos's draws: the same seed, the same drills", metavar="N", type=int
    )
    # A line a teacher can find in a fast log: who is here now. 0 turns it off.
    who_interval: float = option(0.0, "log who is logged in, per protocol, every SECONDS (0: never)", metavar="SECONDS")
    web: bool = option(False, "serve the live web view of the sessions, for the projector")
    # 8025: beside SMTP's 2525, and the web port of other teaching mail servers (smtp4dev, Mailpit).
    web_port: int = option(8025, "the web view's port; 0 picks a free one", metavar="PORT")
    # Not --host: the view shows who logs in, so it stays on this machine unless asked (then with a token).
    web_host: str = option("127.0.0.1", "the web view's address; any but 127.0.0.1 needs the printed token",
                           metavar="ADDRESS")  # fmt: skip
    # Made from tls_cert and tls_key when the server starts; tests hand one in.
    tls_context: ssl.SSLContext | None = None
    # The domains whose addresses are accounts here, lower case: --hostname, localhost, every --domain.
    local_domains: frozenset[str] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse a combination that cannot work (ConfigError); work out local_domains, once."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        wants_tls = self.require_tls or self.tls_port is not None or self.pop3s_port is not None
        if wants_tls and not (self.tls_cert or self.tls_context):
            raise ConfigError("--require-tls, --tls-port and --pop3s-port need --tls-cert and --tls-key")
        if self.no_pop3 and self.pop3s_port is not None:
            raise ConfigError("--no-pop3 and --pop3s-port contradict each other")
        if self.auth_cache_ttl < 0:
            raise ConfigError("--auth-cache-ttl must be 0 (off) or more seconds")
        domains = frozenset(name.lower().rstrip(".") for name in (self.hostname, "localhost", *self.domain))
        object.__setattr__(self, "local_domains", domains)  # frozen: the one way to set a derived field


# --classroom: the settings for a class. server.py makes them the defaults, so that an option given on
# the command line still wins (--classroom --timeout 600).
CLASSROOM: dict[str, Any] = {
    "timeout": 1800.0,  # a student listens to the teacher for a while between two menu choices
    "pop3_timeout": 1800.0,  # and so between two looks at the inbox: both protocols wait alike
    "max_login_failures": 5,  # one student's typos make that name wait, not the class
    "max_login_failures_per_ip": 30,  # and guessing across many names from one address stops
    "verbose": True,  # the whole dialogue, for the projector
    "who_interval": 300.0,  # and every five minutes who is logged in
    "web": True,  # and drawn, live, in a browser
}


def is_option(field: dataclasses.Field[Any]) -> bool:
    return "help" in field.metadata


def options() -> list[dataclasses.Field[Any]]:
    """The fields of ServerConfig that are command-line options, in order."""
    return [field for field in dataclasses.fields(ServerConfig) if is_option(field)]
