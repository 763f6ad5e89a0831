"""The cyclic garbage collector around a render.

Importing Dagster and opening its instance make a few hundred thousand objects (modules, classes,
definitions) that live as long as the process. CPython's full collections rescan all of them, so
a ``wan-pipeline render`` of the demo story spent 0.6 CPU-s collecting against 0.03 for the same
engines called without Dagster (measured with ``gc.callbacks``). :func:`paused` keeps the collector
off while those objects are made, :func:`long_lived_frozen` moves them out of its scans while the
stages run (``gc.freeze``) and hands them back afterwards, and :func:`skip_final_collection` spares
the interpreter's last full collection when the command is about to exit.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside the block (set-up that only makes long-lived objects);
    the collector's previous state afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Inside the block the collector runs, but never scans the objects alive when it began
    (``gc.freeze``); they are collectable again afterwards (``gc.unfreeze``), so a long-lived
    process (tests, the code location) still frees them. The collector's state is restored."""
    was_enabled = gc.isenabled()
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()
        if not was_enabled:
            gc.disable()


def skip_final_collection() -> None:
    """Freeze every object just before the process exits, so that the interpreter's final full
    collection does not rescan them (0.17 CPU-s after a demo render); the operating system frees
    the memory. Call it only on the way out of a command-line entry point."""
    gc.freeze()
