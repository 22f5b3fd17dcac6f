"""A small, real mail server for the classroom: python server.py, and a class can send mail.

It implements the "minimum implementation of SMTP" of the seed document (RFC 821's
HELO, MAIL, RCPT, DATA, HELP, NOOP, QUIT), the extensions real clients expect
(EHLO, AUTH PLAIN/LOGIN, SIZE, 8BITMIME, PIPELINING, STARTTLS), and two extra
commands: RETR sends back every message the logged-in user sent, DELE deletes them.
Mail to an account here (bob@localhost) lands in its inbox, which POP3 reads
(port 1100: USER, PASS, LIST, RETR, DELE, QUIT and the rest of RFC 1939).

    S: 220 localhost Service ready
    C: EHLO laptop
    S: 250-localhost Hello laptop
    S: ...            (the extensions; the whole reply is in docs/protocol.md)
    S: 250 HELP
    C: AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk
    S: 235 2.7.0 Authentication successful
    C: MAIL FROM:<alice@localhost>
    S: 250 OK
    C: RCPT TO:<bob@example.org>
    S: 250 OK
    C: DATA
    S: 354 Start mail input; end with <CRLF>.<CRLF>
    C: Subject: hi
    C:
    C: hello
    C: .
    S: 250 OK: stored as 1764366000.M000001P42Q000000001.laptop
    C: RETR
    S: 250 1 message follows
    S: Subject: hi
    S:
    S: hello
    S: .
    C: QUIT
    S: 221 localhost Service closing transmission channel

This file is the front door: the command line and the wiring. The rest lives in the
package `mailserver/`, a module per concern; the map of its modules, and which files
each ordinary change touches, is CONTRIBUTING.md ("Where things live").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import getpass
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

if sys.version_info < (3, 11):  # noqa: UP036  (for whoever runs an older Python: one line, not a traceback)
    sys.exit(f"server.py needs Python 3.11 or newer; this is Python {sys.version.split()[0]} (python.org has it)")

try:
    import bcrypt  # noqa: F401  (the one package the server needs: checked first, to say how to get it)
except ModuleNotFoundError:
    # One line saying what to type (README, Quick start), not a traceback.
    if sys.prefix != sys.base_prefix:  # in a virtual environment already: install into it
        how = f"{sys.executable} -m pip install -r requirements.txt"
    elif os.name == "nt":
        how = r"py -m venv .venv; .venv\Scripts\pip install -r requirements.txt; .venv\Scripts\python server.py"
    else:
        how = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python server.py"
    sys.exit(f"server.py needs the bcrypt package, which {sys.executable} does not have: {how}")

from mailserver.auth_cache import AuthCache
from mailserver.chaos import Chaos
from mailserver.config import CLASSROOM, ConfigError, ServerConfig, options
from mailserver.events import EventBus
from mailserver.listener import MailServer, server_tls_context
from mailserver.logs import OneWriteHandler, log, plural
from mailserver.migration import migrate_old_layout
from mailserver.pop3 import POP3Handler
from mailserver.session import LineHandler
from mailserver.smtp import SMTPHandler
from mailserver.storage import MailboxStore, MaildropInUse
from mailserver.users import (
    BCRYPT_MAX_PASSWORD,
    DEFAULT_ROUNDS,
    USERNAME,
    UsersFileError,
    UserStore,
    find_account,
    hash_password,
    parse_users,
    rewrite_users_file,
)
from mailserver.webview import WebView, start_web_view

DEFAULTS = ServerConfig()
CLIENT_FILE = Path(__file__).resolve().parent / "client.py"  # what the web view's /download hands out


# ------------------------------------------------------------------- accounts


def read_new_password(name: str) -> str:
    """Ask twice on a terminal; from a pipe, the first line of stdin is the password."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Again: ") != password:
            raise UsersFileError("the passwords do not match")
    if not password:
        raise UsersFileError("the password is empty")
    if len(password.encode()) > BCRYPT_MAX_PASSWORD:
        raise UsersFileError(f"the password is longer than bcrypt's {BCRYPT_MAX_PASSWORD} bytes")
    return password


def existing_mailbox(root: Path, name: str) -> Path | None:
    """The mailbox in root that the account name would be served from, whatever its case; None if none."""
    with contextlib.suppress(OSError):
        return next((path for path in root.iterdir() if path.name.casefold() == name.casefold()), None)
    return None


def valid_name(name: str) -> str:
    """name, if it can be an account (and a folder); else UsersFileError saying what a name may hold."""
    if not USERNAME.fullmatch(name):
        raise UsersFileError(f"bad username {name!r}: 1-64 of A-Z a-z 0-9 . _ -, not starting with . or -")
    return name


def manage_users(args: argparse.Namespace) -> None:
    """adduser, passwd and deluser: edit users.txt; a running server notices by itself."""
    name, path = valid_name(args.name), Path(args.users)
    # Parsing first also refuses to edit a file the server would not load.
    existing = parse_users(path) if args.command != "adduser" or path.exists() else {}
    clash = find_account(existing, name)
    if args.command == "adduser" and clash is not None:
        same = "" if clash == name else f" as {clash!r} (mail addresses ignore case)"
        raise UsersFileError(f"{path}: user {name!r} exists already{same} (use passwd to change the password)")
    if args.command != "adduser" and name not in existing:
        raise UsersFileError(f"{path}: no user {name!r}")
    mailbox = existing_mailbox(Path(args.mailboxes), name)
    if args.command == "deluser":
        rewrite_users_file(path, name, None)
        kept = (
            f"the mailbox {mailbox} is kept (a new {name} gets it only with adduser --take-over-mailbox)"
            if mailbox is not None
            else f"{name} had no mailbox in {args.mailboxes}"
        )
        print(f"deleted {name} from {path}; {kept}")
        return
    if args.command == "adduser" and mailbox is not None and not args.take_over_mailbox:
        # A reused name must not read the mail of the account it replaces (issue 18).
        raise UsersFileError(
            f"{mailbox} holds the mail of an earlier {mailbox.name}: move it out of {args.mailboxes} first, "
            f"or add --take-over-mailbox to give it to the new {name}"
        )
    rewrite_users_file(path, name, hash_password(read_new_password(name), args.rounds))
    print(f"{'added' if args.command == 'adduser' else 'changed the password of'} {name} in {path}")


def clear_mailbox(args: argparse.Namespace) -> None:
    """clear: empty a user's inbox and/or Sent folder and say how many messages went; the server may be running."""
    name, mailboxes = valid_name(args.name), Path(args.mailboxes)
    try:
        from_inbox, from_sent = MailboxStore(mailboxes).clear(name, inbox=not args.sent, sent=not args.inbox)
    except FileNotFoundError:
        raise UsersFileError(f"{name} has no mailbox in {mailboxes}") from None
    except MaildropInUse:
        in_use = f"{name}'s inbox is open in a POP3 session now: try again when it ends"
        raise UsersFileError(f"{in_use} (--sent empties the Sent folder alone)") from None
    done = [f"{plural(from_inbox, 'message')} from the inbox"] if not args.sent else []
    done += [f"{plural(from_sent, 'message')} from the Sent folder"] if not args.inbox else []
    print(f"cleared {name} in {mailboxes}: {' and '.join(done)}")


# ------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The options come from ServerConfig's fields: their defaults and help texts are written there."""
    parser = argparse.ArgumentParser(description="A small mail server with login, RETR and DELE.")
    for field in options():
        flag = flag_of(field.name)
        default, help_text = getattr(DEFAULTS, field.name), field.metadata["help"]
        if isinstance(default, bool):  # --verbose and --no-verbose: either overrules --classroom (--no-pop3 is one)
            action = "store_true" if field.name.startswith("no_") else argparse.BooleanOptionalAction
            parser.add_argument(flag, action=action, default=default, help=help_text)
            continue
        if isinstance(default, tuple):  # repeatable: each use adds one item
            parser.add_argument(flag, action="append", type=field.metadata["type"], default=[],
                                metavar=field.metadata["metavar"], help=help_text)  # fmt: skip
            continue
        if default is not None:
            help_text += f" (default {shown(default)})"
        parser.add_argument(flag, type=field.metadata["type"], default=default, metavar=field.metadata["metavar"],
                            help=help_text)  # fmt: skip
    preset = " ".join(flag_for(name, value) for name, value in CLASSROOM.items())
    parser.add_argument("--classroom", action="store_true", help=f"a class's settings: {preset} (options given win)")
    commands = parser.add_subparsers(dest="command", metavar="{adduser,passwd,deluser,clear}")
    for command, help_text in (
        ("adduser", "add an account"),
        ("passwd", "change a password"),
        ("deluser", "remove an account (its mailbox is kept)"),
    ):
        sub = commands.add_parser(command, help=help_text)
        sub.add_argument("name")
        if command != "deluser":
            sub.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="bcrypt cost (default 12)")
        if command == "adduser":
            sub.add_argument(
                "--take-over-mailbox", action="store_true", help="give the new account the mailbox an earlier one left"
            )
    clear = commands.add_parser("clear", help="empty a user's inbox and Sent folder (not while POP3 has the inbox)")
    clear.add_argument("name")
    which = clear.add_mutually_exclusive_group()
    which.add_argument("--inbox", action="store_true", help="only the inbox")
    which.add_argument("--sent", action="store_true", help="only the Sent folder")
    return parser


def flag_of(name: str) -> str:
    """The option of a ServerConfig field: max_login_failures -> --max-login-failures."""
    return "--" + name.replace("_", "-")


def shown(value: object) -> str:
    """A setting as the command line writes it: 1800, not 1800.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_for(name: str, value: object) -> str:
    """The command-line words that set name to value: --verbose, --timeout 1800."""
    flag = flag_of(name)
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {shown(value)}"


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; with --classroom, parse again with its settings as the defaults."""
    args = parser.parse_args(argv)
    if args.classroom:
        parser.set_defaults(**CLASSROOM)
        args = parser.parse_args(argv)
    return args


def config_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerConfig:
    """The settings the command line asks for; a combination that cannot work is a usage error."""
    values = {field.name: getattr(args, field.name) for field in options()}
    try:
        return ServerConfig(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})
    except ConfigError as error:  # ServerConfig checks its combinations itself
        parser.error(str(error))


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    # One write() a line, no lock held across it (see OneWriteHandler): a thread per session logs at once.
    handlers = [OneWriteHandler()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers)
    # The format shows no process, thread or caller: don't make every line look them up (the
    # "Optimization" advice of logging's documentation; the process id is a system call a line).
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    logging._srcfile = None  # no walk up the stack to find the caller of each log call
    try:
        if args.command == "clear":
            clear_mailbox(args)
        elif args.command:
            manage_users(args)
        else:
            serve(config_from(args, parser))
    except (UsersFileError, ssl.SSLError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except KeyboardInterrupt:  # Ctrl-C at adduser's password prompt
        parser.exit(130, "\n")


# ------------------------------------------------------------------- the wiring


def serve(config: ServerConfig) -> None:
    """Run the server until Ctrl-C or SIGTERM."""
    # From here on SIGTERM (and Windows' Ctrl-Break) stops the server the way Ctrl-C does, at whatever
    # moment it comes; the first of them only: a second must not cut the orderly stop short.
    for signum in (signal.SIGINT, *stop_signals()):
        signal.signal(signum, stop_once)
    server: MailServer | None = None
    web: WebView | None = None
    try:
        server = start(config)  # a stop in the middle: start() closes what it opened
        web = start_web(config, server)
        for listener in server.listeners:
            host, port = listener.server_address[:2]
            if listener.RequestHandlerClass is POP3Handler:
                log.info("POP3%s serving on %s:%d", "S (implicit TLS)" if listener.implicit_tls else "", host, port)
                continue
            kind = " SMTPS (implicit TLS)" if listener.implicit_tls else ""
            log.info("serving%s on %s:%d (%d accounts in %s, mail in %s)", kind, host, port,
                     len(server.users), server.users.path, server.mailboxes.root)  # fmt: skip
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        ignore_stop_signals()  # if no signal stopped us; the orderly stop takes two seconds at most
        if web is not None:
            web.close()
        if server is not None:
            server.shutdown()
            server.close()
    log.info("stopped")


def stop_once(signum: int, frame: object) -> None:
    """The handler of Ctrl-C and SIGTERM: ignore every later one, then stop as Ctrl-C does."""
    ignore_stop_signals()
    raise KeyboardInterrupt


def ignore_stop_signals() -> None:
    for signum in (signal.SIGINT, *stop_signals()):
        signal.signal(signum, signal.SIG_IGN)


def stop_signals() -> list[signal.Signals]:
    """The signals besides Ctrl-C's SIGINT that stop the server, those this OS has."""
    return [getattr(signal, name) for name in ("SIGTERM", "SIGBREAK") if hasattr(signal, name)]


def start(config: ServerConfig) -> MailServer:
    """Load the users, open the mailboxes, and bind the SMTP and POP3 ports (and the TLS ones if asked)."""
    if config.tls_cert and config.tls_key:
        config = dataclasses.replace(config, tls_context=server_tls_context(config.tls_cert, config.tls_key))
    users = UserStore(Path(config.users), AuthCache(config.auth_cache_ttl))
    mailboxes = MailboxStore(Path(config.mailboxes))
    migrated, moved = migrate_old_layout(mailboxes.root)  # first: a half-done move's tmp/ is .Sent's once done
    if migrated:
        log.info("moved %d sent messages of %d mailboxes of the old layout into their .Sent folders", moved, migrated)
    if removed := mailboxes.clean_temporary_files():
        log.info("removed %d unfinished deliveries left by a crash", removed)
    if not config.require_tls and not is_loopback(config.host):
        log.warning(
            "listening on %s, and clients may log in without TLS: their passwords cross the network in "
            "clear text (use --tls-cert, --tls-key and --require-tls)",
            config.host,
        )
    # A session needs little stack, and 1000 of them add up; where the OS cannot set it, its default.
    with contextlib.suppress(ValueError, RuntimeError):
        threading.stack_size(512 * 1024)
    chaos = Chaos(config.chaos or (), config.chaos_seed)
    if chaos:
        log.warning("CHAOS drills on: %s (replies that fail on purpose)", chaos)
    server = MailServer(config, users, mailboxes, chaos, events=EventBus() if config.web else None)
    try:
        listen(server, (config.host, config.port), SMTPHandler, "--port")
        if config.tls_port is not None:
            listen(server, (config.host, config.tls_port), SMTPHandler, "--tls-port", implicit_tls=True)
        if not config.no_pop3:
            listen(server, (config.host, config.pop3_port), POP3Handler, "--pop3-port")
        if config.pop3s_port is not None:
            listen(server, (config.host, config.pop3s_port), POP3Handler, "--pop3s-port", implicit_tls=True)
    except BaseException:
        server.close()
        raise
    return server


def start_web(config: ServerConfig, server: MailServer) -> WebView | None:
    """With --web, serve the web view in the background and log its address (with the token, if any)."""
    if server.events is None:
        return None
    try:
        web = start_web_view(server, server.events, config.web_host, config.web_port, CLIENT_FILE)
    except (OSError, OverflowError) as error:
        host, port = config.web_host, config.web_port
        raise OSError(f"cannot listen on {host}:{port}: {why_not(error, host, '--web-port')}") from None
    log.info("web view on %s", web.url)
    download = web.url.split("?", 1)[0] + "download"
    log.info("students get client.py%s from %s", " and cert.pem" if config.tls_cert else "", download)
    return web


def listen(
    server: MailServer, address: tuple[str, int], handler: type[LineHandler], option: str, *, implicit_tls: bool = False
) -> None:
    """Bind one port of the server; if that fails, raise OSError with one line naming the address and the way out."""
    try:
        server.listen(address, handler, implicit_tls=implicit_tls)
    except (OSError, OverflowError) as error:
        raise OSError(f"cannot listen on {address[0]}:{address[1]}: {why_not(error, address[0], option)}") from None


def why_not(error: OSError | OverflowError, host: str, option: str) -> str:
    """What a failed bind means, and what to do about it."""
    code = getattr(error, "errno", None)
    if code is not None and code in error_codes("EADDRINUSE"):
        return f"the port is in use (is another server running? stop it, or choose another {option})"
    if isinstance(error, PermissionError) or (code is not None and code in error_codes("EACCES")):
        return f"permission denied (ports below 1024 need administrator rights: choose {option} 1024 or above)"
    if code is not None and code in error_codes("EADDRNOTAVAIL"):
        return f"{host} is not an address of this machine (check --host)"
    if isinstance(error, socket.gaierror):
        return f"unknown host {host} (check --host)"
    if isinstance(error, OverflowError):
        return f"a port is a number from 0 to 65535 (check {option})"
    return error.strerror or str(error)


def error_codes(name: str) -> set[int]:
    """The errno values called name here: POSIX's, and the WSA one Windows sockets report."""
    return {code for code in (getattr(errno, name, None), getattr(errno, "WSA" + name, None)) if code is not None}


def is_loopback(host: str) -> bool:
    """True if every address host stands for is a loopback one (no password crosses a network)."""
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    main()
