"""The server a Python user would write with aiosmtpd, doing server.py's work: the benchmark's yardstick.

    python tests/aiosmtpd_baseline.py --port 0 --users users.txt --mailboxes mailboxes

Same contract as server.py where the benchmark looks: AUTH PLAIN/LOGIN checked
with bcrypt against a users.txt of `name:bcrypt-hash` lines, and each message
stored in the sender's Maildir (LF line ends), written to tmp/, fsynced, renamed
into new/, and the directory fsynced, all before the 250. Like the examples in
aiosmtpd's documentation, the authenticator and the handler are plain code on
the event loop: it is what the obvious aiosmtpd server does, and what issue 6
measured. aiosmtpd is pinned in requirements-dev.txt (the server does not need it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import bcrypt
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def load_users(path: Path) -> dict[bytes, bytes]:
    """{name: bcrypt hash} from a users.txt; comments and blank lines skipped."""
    users = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, colon, hashed = line.strip().partition(":")
        if colon and not name.startswith("#"):
            users[name.encode()] = hashed.encode()
    return users


class BcryptAuthenticator:
    """aiosmtpd's `authenticator` callback: bcrypt.checkpw, the same cost for unknown names."""

    def __init__(self, users: dict[bytes, bytes]) -> None:
        self.users = users
        cost = int(next(iter(users.values()), b"$2b$12$")[4:6])
        self.dummy = bcrypt.hashpw(b"no such user", bcrypt.gensalt(cost))

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        hashed = self.users.get(data.login)
        # bcrypt looks at 72 bytes at most (bcrypt 5 refuses longer passwords).
        matches = bcrypt.checkpw(data.password[:72], hashed or self.dummy)
        return AuthResult(success=matches and hashed is not None, handled=False, auth_data=data)


class MaildirHandler:
    """handle_DATA stores the message durably in the logged-in user's Maildir before the 250."""

    _sequence = itertools.count(1)

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._created: set[str] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        user = session.login_data.decode()  # type: ignore[attr-defined]  (auth_required: always set)
        content = envelope.original_content or b""
        key = self.deliver(user, content.replace(b"\r\n", b"\n"))  # Maildir readers expect LF
        return f"250 OK: stored as {key}"

    def deliver(self, user: str, message: bytes) -> str:
        """Write into tmp/, fsync, rename into new/, fsync new/: whole or absent after a crash."""
        maildir = self._maildir(user)
        key = f"{time.time_ns()}.P{os.getpid()}Q{next(self._sequence)}.bench"
        temporary, final = maildir / "tmp" / key, maildir / "new" / key
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "wb") as file:
            file.write(message)
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, final)
        directory = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return key

    def _maildir(self, user: str) -> Path:
        path = self.root / user
        if user not in self._created:
            for sub in ("tmp", "new", "cur"):
                (path / sub).mkdir(parents=True, exist_ok=True)
            self._created.add(user)
        return path


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(Path(args.mailboxes))
    authenticator = BcryptAuthenticator(load_users(Path(args.users)))

    def new_session() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=args.max_message_size,
            hostname="bench.test",
            auth_required=True,
            auth_require_tls=False,  # loopback benchmark; server.py allows plaintext AUTH too
            authenticator=authenticator,
            loop=loop,
        )

    server = await loop.create_server(new_session, args.host, args.port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"serving on {host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--users", required=True)
    parser.add_argument("--mailboxes", required=True)
    parser.add_argument("--max-message-size", type=int, default=10 * 1024 * 1024)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
