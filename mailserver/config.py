"""Every setting of the server, with its default and its help text: one source for both.

`ServerConfig` is what the code reads; `server.py` builds its command line from the
fields that carry an `option(...)`, so a default or a help text is written once.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from typing import Any


def option(default: Any, help: str, *, metavar: str | None = None, type: type | None = None) -> Any:
    """A setting that is also a command-line option (`--name-with-dashes`); `help` is its --help text."""
    return dataclasses.field(
        default=default, metadata={"help": help, "metavar": metavar, "type": type or type_of(default)}
    )


def type_of(default: Any) -> type:
    return str if default is None else type(default)


@dataclasses.dataclass
class ServerConfig:
    """The settings of one server process, shared by all its listeners; the command line fills them in."""

    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(2525, "SMTP port; 0 picks a free one")
    hostname: str = option(socket.gethostname(), "the server's name, in the greeting and the replies")
    users: str = option("users.txt", "the accounts file", metavar="FILE")
    mailboxes: str = option("mailboxes", "where mail is stored", metavar="DIR")
    max_message_size: int = option(10 * 1024 * 1024, "the largest message accepted", metavar="BYTES")
    max_connections: int = option(100, "sessions at once, in all", metavar="N")
    # As Postfix's smtpd_client_connection_count_limit.
    max_connections_per_ip: int = option(50, "sessions at once from one address", metavar="N")
    # RFC 5321 4.5.3.2.7; also the ceiling for one command line, so a byte a second is no way around it.
    timeout: float = option(300.0, "idle timeout, and the most one command line may take", metavar="SECONDS")
    # RFC 5321 4.5.3.2.6 asks at least 10 minutes for the final "." to be answered; this bounds the whole DATA.
    data_timeout: float = option(600.0, "the most one DATA transfer may take", metavar="SECONDS")
    # Per name and address: one student's typos lock out that name, not a class sharing one address.
    max_login_failures: int = option(5, "failed logins of one name from one address before it must wait", metavar="N")
    # All names together: stops one address guessing across many names.
    max_login_failures_per_ip: int = option(
        30, "failed logins from one address, all names together, before it must wait", metavar="N"
    )
    login_failure_window: float = option(60.0, "how long a failed login counts", metavar="SECONDS")
    tls_cert: str | None = option(None, "certificate (PEM) for STARTTLS and --tls-port", metavar="FILE")
    tls_key: str | None = option(None, "private key (PEM) of --tls-cert", metavar="FILE")
    tls_port: int | None = option(None, "also listen here with implicit TLS (SMTPS)", metavar="PORT", type=int)
    require_tls: bool = option(False, "refuse logins before STARTTLS")
    verbose: bool = option(False, "log every line as C:/S: (passwords masked)")
    # Made from tls_cert and tls_key when the server starts; tests hand one in.
    tls_context: ssl.SSLContext | None = None


def is_option(field: dataclasses.Field[Any]) -> bool:
    return "help" in field.metadata


def options() -> list[dataclasses.Field[Any]]:
    """The fields of ServerConfig that are command-line options, in order."""
    return [field for field in dataclasses.fields(ServerConfig) if is_option(field)]
