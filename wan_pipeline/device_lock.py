"""The cross-process device lock: one stage at a time on a device, across processes.

Dagster's ``gpu`` pool already serialises steps of runs it launches; this file lock guards the
device also where the pool is not enforced (in-process ``materialize()``, scripts, tests).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock


def lock_path(lock_dir: str | Path, device: str) -> Path:
    """``storage/locks/gpu-<index>.lock`` for ``cuda:<index>``; ``gpu-cpu.lock`` for the CPU."""
    name = device.split(":")[1] if device.startswith("cuda:") else ("0" if device == "cuda" else device)
    return Path(lock_dir) / f"gpu-{name}.lock"


@contextlib.contextmanager
def hold_device(lock_dir: str | Path, device: str, timeout_s: float = -1, on_wait=None) -> Iterator[float]:
    """Hold the device's file lock for the body; yields the seconds spent waiting for it.

    timeout_s: give up after this many seconds (``filelock.Timeout``); −1 waits forever.
    on_wait: called once with the lock path if the lock is busy (to log "waiting for GPU").
    The lock is released when the body ends or the process dies (the OS drops ``flock``).
    """
    path = lock_path(lock_dir, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), thread_local=False, is_singleton=False)
    t0 = time.perf_counter()
    try:
        lock.acquire(timeout=0)
    except Exception:
        if on_wait is not None:
            on_wait(path)
        lock.acquire(timeout=timeout_s)
    waited = time.perf_counter() - t0
    try:
        yield round(waited, 3)
    finally:
        lock.release()
