"""The first Ctrl-C (or SIGTERM) stops a build gracefully; the second one exits at once.

While the oracle stages run, SIGINT and SIGTERM go to `on_first` through the event loop: the
build stops sending, waits for the calls already on the wire and records them (nothing paid for
is lost). The handlers are removed at that moment, so a second Ctrl-C raises KeyboardInterrupt
straight away (and a second SIGTERM terminates), leaving only what was already committed.
Outside the main thread (a build run from a worker thread) signals are not ours to take.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulInterrupt:
    """`with GracefulInterrupt(on_first):` inside a running event loop."""

    def __init__(self, on_first: Callable[[str], None]) -> None:
        self.on_first = on_first
        self.received: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> "GracefulInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._loop = asyncio.get_running_loop()
            for sig in SIGNALS:
                self._loop.add_signal_handler(sig, self._first, sig)
        return self

    def _first(self, sig: signal.Signals) -> None:
        self._remove()  # the next one is the default: KeyboardInterrupt (SIGINT) or termination (SIGTERM)
        self.received = signal.Signals(sig).name
        self.on_first(self.received)

    def _remove(self) -> None:
        if self._loop is not None:
            for sig in SIGNALS:
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def __exit__(self, *exc: object) -> None:
        self._remove()
