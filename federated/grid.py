"""The server's side of the messaging: every exchange with the clients goes through `ServerGrid`.

It waits for replies in short polls, so a stop request (Ctrl-C, SIGTERM: `Stop`) ends a wait within
`POLL_SECONDS` instead of after `--client-timeout`; it sends a message again to a client whose reply
was an error, while the timeout lasts; and every reply passes the privacy audit (federated/privacy.py)
before anyone reads it. What to do with a round or query that nobody answered is the caller's
decision (federated/server_app.py fails the run).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from flwr.app import Message

from federated.privacy import Audit

POLL_SECONDS = 0.2  # how often a wait looks for replies and for a stop request
RETRIES = 1  # times a message is sent again to a client that answered it with an error


class Interrupted(Exception):
    """The run was asked to stop (Ctrl-C or SIGTERM) while the server was working."""


class Stop:
    """A stop request, set once from a signal handler; the server checks it before every write and in
    every wait. `set` waits for a write in progress, so once it returns nothing more is written."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._writing = threading.RLock()  # reentrant: a handler may run in the thread that is writing

    def set(self) -> None:
        with self._writing:
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Interrupted("stopped on request")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold off a stop request for one write (files stay whole); refuse to start one after a stop."""
        with self._writing:
            self.check()
            yield


def _copy(message: Message) -> Message:
    """The same request again (a sent message carries its id; a new one gets a new id)."""
    metadata = message.metadata
    return Message(content=message.content, dst_node_id=metadata.dst_node_id, message_type=metadata.message_type,
                   group_id=metadata.group_id)


class ServerGrid:
    """A Flower Grid for the server's code and Flower's strategies: audited, interruptible, retrying."""

    def __init__(self, grid, audit: Audit, stop: Stop | None = None) -> None:
        self._grid = grid
        self.audit = audit
        self.stop = stop or Stop()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Send `messages` and collect one reply per message until all are in or `timeout` seconds have
        passed; a client that replied with an error is asked again (RETRIES times) while time is left, and
        its last reply counts. Raises Interrupted as soon as a stop is requested."""
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        self.stop.check()
        originals = list(messages)
        pending = dict(zip(self._grid.push_messages(originals), ((m, RETRIES) for m in originals)))
        replies: dict[int, Message] = {}  # position in `originals` -> latest reply
        positions = {id(m): i for i, m in enumerate(originals)}
        while pending:
            self.stop.check()
            for reply in self.audit.check(self._grid.pull_messages(list(pending))):
                message, retries = pending.pop(reply.metadata.reply_to_message_id)
                replies[positions[id(message)]] = reply
                if reply.has_error() and retries > 0 and time.monotonic() < deadline:
                    again = _copy(message)
                    positions[id(again)] = positions[id(message)]
                    (new_id,) = self._grid.push_messages([again])
                    pending[new_id] = (again, retries - 1)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        return [replies[i] for i in sorted(replies)]

    def __getattr__(self, name):
        return getattr(self._grid, name)
