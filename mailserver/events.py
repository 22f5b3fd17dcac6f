"""What happens in the sessions, as events for the web view: one bus per server, never waited on.

The sessions publish; each browser of the web view subscribes. A line of the dialogue
reaches the bus only through a session's `WireLog` (logs.py), after it was masked and
escaped there: the web view shows no more than the projected log does.

    bus = EventBus()
    watch = bus.watch("SMTP", "10.0.0.7:51000", status=session.status)  # status: (user, state, TLS on)
    watch.line("S:", "220 localhost Service ready")    # {"type": "line", "id": 1, "dir": "S", ...}
    subscriber = bus.subscribe()                         # sessions so far, then each new event
    bus.take(subscriber)                                 # the events queued since, framed for the wire

Bounded everywhere: each subscriber has a queue of `queue_size` events, and one that
falls behind is dropped (its browser reconnects and starts again from the history),
so a stuck browser costs its queue and never slows a session. The history keeps the
open sessions and the last `history_size` finished ones, each with at most
`lines_per_session` events.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

import client  # client.py, beside server.py: its table of reply meanings is the only one

Event = dict[str, Any]
Status = Callable[[], tuple[str | None, str, bool]]  # a session's (user, state, TLS on)

# Made once: json.dumps with any option builds a new encoder at every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
# JSON of a flat event's values, in C where it matters (a line's text); the rest goes to _ENCODER.
_SCALARS: dict[type, Callable[[Any], str]] = {
    str: json.encoder.encode_basestring_ascii,  # type: ignore[attr-defined]
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}
BODIES_PER_SESSION = 5  # the text of a session's last messages is kept, in case the teacher opens one
BODY_LINE_CHARS = 200  # of each line of that text: with the log's 20 lines, 4 KB a message at most
LINE_CHARS = 1000  # the longest text of one line kept: a message line's limit (RFC 5321 4.5.3.1.6)
# How the --raw console reads a reply line, per protocol: the explanations come from the same place.
DIALECTS: dict[str, type[client.Dialect]] = {"SMTP": client.SMTPDialect, "POP3": client.POP3Dialect}


class Subscriber:
    """One browser's stream: a bounded queue of events, each already framed for the wire; dropped once it overflows.

    Its reader takes the whole queue every tenth of a second (EventBus.take) and
    sends it in one write, so nobody waits on the queue and no session wakes a thread: a
    queue.Queue's put and get, per browser and per event, would cost several times as much.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.queue: deque[bytes] = deque()
        self.dropped = False

    def offer(self, frame: bytes) -> bool:
        """Queue frame without waiting; False (and dropped from now on) if the queue is full."""
        if len(self.queue) >= self.size:
            self.dropped = True
        else:
            self.queue.append(frame)
        return not self.dropped


class SessionRecord:
    """One session in the history: how it started, its events, and its last messages' text (all bounded)."""

    __slots__ = ("bodies", "events", "open")

    def __init__(self, opening: Event, size: int) -> None:
        self.open = opening
        self.events: deque[Event] = deque(maxlen=size)
        self.bodies: OrderedDict[int, list[str]] = OrderedDict()  # message number: the lines the log shows


class EventBus:
    """The server-wide bus: sessions publish events, browsers subscribe; nobody waits on a browser."""

    def __init__(
        self, *, queue_size: int = 2000, history_size: int = 200, lines_per_session: int = 500, subscribers: int = 20
    ) -> None:
        self.queue_size = queue_size
        self.history_size = history_size
        self.lines_per_session = lines_per_session
        self.max_subscribers = subscribers
        self._ids = itertools.count(1)
        self._open: dict[int, SessionRecord] = {}
        self._finished: OrderedDict[int, SessionRecord] = OrderedDict()  # oldest first
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self.dropped = 0  # subscribers dropped for falling behind, since the start

    def watch(self, protocol: str, peer: str, *, status: Status) -> SessionWatch:
        """Open the record of a new session and return what its WireLog and handler report to."""
        return SessionWatch(self, next(self._ids), protocol, peer, status)

    def publish(self, event: Event, body: list[str] | None = None) -> None:
        """Record event in its session's history and offer it to every subscriber, without waiting.

        body: a message's text, kept for body() and never sent in an event: it is hidden until asked for.
        """
        with self._lock:
            self._record(event, body)
            if not self._subscribers:
                return
            self._offer(framed(event))

    def broadcast(self, event: Event) -> None:
        """Offer event to every subscriber, keeping no history (the server-wide status)."""
        with self._lock:
            self._offer(framed(event))

    def _offer(self, frame: bytes) -> None:
        """Queue frame for every subscriber (the lock held); drop those whose queue is full."""
        behind = [subscriber for subscriber in self._subscribers if not subscriber.offer(frame)]
        for subscriber in behind:
            self._subscribers.remove(subscriber)
        self.dropped += len(behind)

    def _record(self, event: Event, body: list[str] | None) -> None:
        kind, session = event["type"], event.get("id")
        if kind == "open":
            self._open[session] = SessionRecord(event, self.lines_per_session)
            return
        record = self._open.get(session)
        if record is None:
            return
        record.events.append(event)
        if body is not None:
            record.bodies[event["n"]] = body
            while len(record.bodies) > BODIES_PER_SESSION:
                record.bodies.popitem(last=False)
        if kind == "close":
            self._finished[session] = self._open.pop(session)
            while len(self._finished) > self.history_size:
                self._finished.popitem(last=False)

    def subscribe(self) -> Subscriber | None:
        """A new subscriber whose queue starts with the history; None if there are too many already.

        The history (megabytes, with 200 long sessions) is encoded after the lock is let go:
        the sessions publish meanwhile, and their events queue up behind it.
        """
        with self._lock:
            if len(self._subscribers) >= self.max_subscribers:
                return None
            subscriber = Subscriber(self.queue_size)
            records = [(r.open, list(r.events)) for r in (*self._finished.values(), *self._open.values())]
            self._subscribers.append(subscriber)
        history = framed({"type": "history", "sessions": [{**opening, "events": ev} for opening, ev in records]})
        with self._lock:
            subscriber.queue.appendleft(history)
        return subscriber

    def body(self, session: int, number: int) -> list[str] | None:
        """The text (as the log shows it) of message number of session, if still kept."""
        with self._lock:
            record = self._open.get(session) or self._finished.get(session)
            return record.bodies.get(number) if record is not None else None

    def take(self, subscriber: Subscriber) -> list[bytes]:
        """The frames queued for subscriber, oldest first; its queue starts again empty."""
        with self._lock:
            frames, subscriber.queue = subscriber.queue, deque()
        return list(frames)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def sessions_kept(self) -> int:
        """How many sessions the history holds, open and finished."""
        with self._lock:
            return len(self._open) + len(self._finished)


class SessionWatch:
    """What one session reports: its masked lines (from its WireLog), its state, its deliveries."""

    def __init__(self, bus: EventBus, session_id: int, protocol: str, peer: str, status: Status) -> None:
        self.bus = bus
        self.id = session_id
        self.protocol = protocol
        self.status = status
        self.last_status: tuple[str | None, str, bool] | None = None
        self.last_command = "CONNECT"  # what the next reply answers, for its explanation (client.Sent's names)
        self.message: list[str] = []  # the lines of a message in transit, as the log has them
        self.messages = 0  # messages so far: each is numbered, for EventBus.body()
        # The state is first asked for at the first reply: the session is still being set up.
        bus.publish({"type": "open", "id": session_id, "protocol": protocol, "peer": peer, "time": time.time()})

    def line(self, direction: str, text: str) -> None:
        """A line of the dialogue as the log writes it (masked, escaped): direction "C:" or "S:"."""
        event: Event = {"type": "line", "id": self.id, "dir": direction[0], "text": text[:LINE_CHARS]}
        if direction == "C:":
            self.last_command = text.split(" ", 1)[0].upper()
        else:
            meaning = reply_meaning(self.protocol, text, self.last_command)
            if meaning:
                event["explain"] = meaning
        self.bus.publish(event)
        if direction == "S:":
            self.check_status()

    def message_line(self, text: str) -> None:
        """A line of a message in transit (DATA, RETR) as the log writes it; shown folded, bounded."""
        self.message.append(text[:BODY_LINE_CHARS])

    def message_end(self, direction: str, lines: int, octets: int) -> None:
        """The message in transit has ended: one folded arrow, its size, and the lines the log shows."""
        text, self.message = self.message, []
        if direction == "C:":
            self.last_command = "."  # the reply to come answers the message's end
        event = {"type": "message", "id": self.id, "n": self.messages, "dir": direction[0], "lines": lines}
        self.bus.publish({**event, "octets": octets}, body=text)
        self.messages += 1

    def delivered(self, sender: str, recipients: Iterable[tuple[str, str | None]], octets: int) -> None:
        """A message was accepted: each recipient address, with the account whose inbox got it (or None)."""
        inboxes = [{"address": address, "inbox": account} for address, account in recipients]
        self.bus.publish({"type": "delivery", "id": self.id, "sender": sender, "to": inboxes, "octets": octets})

    def check_status(self) -> None:
        """Publish the session's user, state and TLS if they changed."""
        status = self.status()
        if status != self.last_status:
            self.last_status = status
            user, state, tls = status
            self.bus.publish({"type": "state", "id": self.id, "user": user, "state": state, "tls": tls})

    def close(self) -> None:
        self.bus.publish({"type": "close", "id": self.id, "time": time.time()})


def encode(event: Event) -> str:
    """event as compact JSON; an event of strings, numbers and None (most are) without the json module's set-up."""
    try:
        return "{" + ",".join([f'"{key}":{_SCALARS[type(value)](value)}' for key, value in event.items()]) + "}"
    except KeyError:  # a list or a float: the general way
        return _ENCODER.encode(event)


def framed(event: Event) -> bytes:
    """event as one Server-Sent Event: a "data:" line, then a blank line (WHATWG HTML 9.2.6).

    JSON has no raw line break, so one line holds it all. Framed once, whatever the browsers.
    """
    return b"data: " + encode(event).encode() + b"\n\n"


def reply_meaning(protocol: str, text: str, command: str) -> str | None:
    """The --raw console's explanation of a reply's last line (client.py's one table), or None for other lines."""
    reply = DIALECTS[protocol].parse(text)
    if reply is None or not reply.final:
        return None
    return client.explain(reply.status, reply.text, command)
