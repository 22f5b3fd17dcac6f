"""The floor of the benchmark: server.py's system calls per message, and nothing else.

    python tests/benchmark.py --scenario small --rounds 4 --compare tests/floor_baseline.py

A thread per connection (socketserver, as server.py), the same socket settings (a
timeout, no Nagle, a 64 KiB read buffer), the same bcrypt login, and the same durable
Maildir delivery before each 250: create in tmp/, write, fsync, rename into new/,
fsync new/. What it leaves out is everything else server.py does: parsing and checking
commands, the state of a session, limits, the log. It answers only what the benchmark
sends, and trusts it. So the CPU it spends per message is what a thread-per-connection
Python server cannot go below on this machine, and server.py's CPU above it is the price
of being a real SMTP server. It is a yardstick, not a server: never run it for anyone.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import signal
import socketserver
import sys
import time

import bcrypt

MAX_LINE = 64 * 1024


class FloorHandler(socketserver.StreamRequestHandler):
    """EHLO, AUTH PLAIN, MAIL, RCPT, DATA and QUIT as the benchmark sends them; 250 after the fsyncs."""

    server: FloorServer
    timeout = 300  # as server.py: Python's socket timeout (a poll before each recv and send)
    disable_nagle_algorithm = True
    rbufsize = 64 * 1024

    def handle(self) -> None:
        send, user = self.connection.sendall, ""
        send(b"220 floor ready\r\n")
        while line := self.rfile.readline(MAX_LINE):
            verb = line[:4].upper()
            if verb == b"EHLO":
                send(b"250-floor\r\n250 AUTH PLAIN\r\n")
            elif verb == b"AUTH":
                _, name, password = base64.b64decode(line.split()[2]).split(b"\0")
                if not bcrypt.checkpw(password, self.server.accounts[name]):
                    return
                user = name.decode()
                send(b"235 OK\r\n")
            elif verb == b"DATA":
                self.deliver(user)
            elif verb == b"QUIT":
                send(b"221 bye\r\n")
                return
            else:  # MAIL and RCPT
                send(b"250 OK\r\n")

    def deliver(self, user: str) -> None:
        maildir = os.path.join(self.server.root, user)
        name = f"{time.time_ns()}.{next(self.server.sequence)}"
        temporary, final = os.path.join(maildir, "tmp", name), os.path.join(maildir, "new", name)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.connection.sendall(b"354 go on\r\n")
        lines = []
        while (line := self.rfile.readline(MAX_LINE)) not in (b".\r\n", b""):
            lines.append(line)
        os.write(descriptor, b"".join(lines).replace(b"\r\n", b"\n"))
        os.fsync(descriptor)
        os.close(descriptor)
        os.rename(temporary, final)
        folder = os.open(os.path.join(maildir, "new"), os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(folder)
        os.close(folder)
        self.connection.sendall(b"250 OK\r\n")


class FloorServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], accounts: dict[bytes, bytes], root: str) -> None:
        super().__init__(address, FloorHandler)
        self.accounts = accounts
        self.root = root
        self.sequence = itertools.count()
        for name in accounts:
            for folder in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(root, name.decode(), folder), exist_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--users", required=True)
    parser.add_argument("--mailboxes", required=True)
    args, _ = parser.parse_known_args()  # the benchmark passes server.py's options too
    with open(args.users, encoding="utf-8") as users:
        pairs = (line.strip().partition(":") for line in users if ":" in line)
        accounts = {name.encode(): hashed.encode() for name, _, hashed in pairs}
    server = FloorServer((args.host, args.port), accounts, args.mailboxes)
    host, port = server.server_address[:2]
    print(f"serving on {host}:{port}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
