"""Ctrl-C (SIGINT) and SIGTERM stop a render: the signal becomes :class:`Interrupted` in the main
thread, and the command exits with the shell's code for it (128 + signal number: 130, 143).

While Dagster executes a run in-process it installs its own SIGINT/SIGTERM handlers (it raises
its interrupt inside a step's code, or defers the signal between steps), so a handler of ours
would not see a signal arriving then. :func:`stop_on_signals` therefore also registers a wakeup
file descriptor (:func:`signal.set_wakeup_fd`), to which Python writes the number of every
signal that reaches any Python-level handler: after the run returns, :func:`raise_if_received`
turns a signal received meanwhile into :class:`Interrupted`. No Dagster import here.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

#: The signals that stop a render.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A render stopped by ``signum``; :attr:`exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Watch:
    def __init__(self, reader: socket.socket, signals: tuple[int, ...]):
        self.reader = reader
        self.signals = signals
        self.received: list[int] = []

    def drain(self) -> list[int]:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while data := self.reader.recv(512):
                self.received.extend(b for b in data if b in self.signals and b not in self.received)
        return self.received


_watch: _Watch | None = None


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """For the body, each of ``signals`` raises :class:`Interrupted` in the main thread and is
    recorded for :func:`raise_if_received` even while another library's handler is installed.
    The previous handlers and wakeup descriptor are restored afterwards. Outside the main
    thread (where Python allows no signal handlers) the body runs unchanged."""
    global _watch
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)

    def _raise(signum, _frame):
        raise Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in signals}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    outer, _watch = _watch, _Watch(reader, tuple(int(s) for s in signals))
    try:
        for s in signals:
            signal.signal(s, _raise)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_fd)
        _watch = outer
        reader.close()
        writer.close()


def received() -> list[int]:
    """The stop signals received since :func:`stop_on_signals` began (first first); [] outside it."""
    return list(_watch.drain()) if _watch is not None else []


def raise_if_received() -> None:
    """Raise :class:`Interrupted` for the first stop signal received, if any (e.g. after an
    in-process Dagster run returned: it was canceled, or ended as the signal came)."""
    got = received()
    if got:
        raise Interrupted(got[0])
