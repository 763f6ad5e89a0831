"""The cross-process device locks: one stage at a time on a device slot, across processes.

A machine has device slots (``WAN_PIPELINE_DEVICES``: ``cuda:0,cuda:1``, or ``cpu,cpu`` for tests);
a stage leases one free slot (:func:`lease_slot`), preferring the slot where its model ran last in
this process (model affinity). Dagster's ``gpu`` pool (limit = number of slots) already limits the
steps of runs it launches; these file locks guard the slots also where the pool is not enforced
(in-process ``materialize()``, scripts, tests, several runs of one render).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------------------------
# device slots: several devices (or several stages on one device, e.g. CPU slots) leased one each

DEVICES_ENV = "WAN_PIPELINE_DEVICES"
"""Environment variable: the device slots of this machine, comma-separated (``cuda:0,cuda:1``,
``cpu,cpu``) or ``auto``; read by the CLI and the code location."""


def parse_slots(spec: str | list | tuple | None) -> tuple[str, ...] | None:
    """``'cuda:0, cuda:1'`` or a list → ``('cuda:0', 'cuda:1')``; ``None``, ``''`` or ``'auto'`` → None
    (let :func:`resolve_slots` decide). Raises :class:`~wan_pipeline.errors.InputError` for an
    entry that is not a device."""
    from wan_pipeline.errors import InputError

    if spec is None:
        return None
    items = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not items or items == ["auto"]:
        return None
    bad = [s for s in items if not (s == "cpu" or s == "cuda" or (s.startswith("cuda:") and s[5:].isdigit()))]
    if bad:
        raise InputError(
            None, f"{DEVICES_ENV} / devices: {', '.join(map(repr, bad))} is not a device; use auto or a list like cuda:0,cuda:1 or cpu,cpu"
        )
    return tuple("cuda:0" if s == "cuda" else s for s in items)


def resolve_slots(spec: str | list | tuple | None, preset_device: str) -> tuple[str, ...]:
    """The device slots stages lease: ``spec`` (a list or comma-separated string; None/empty: the
    ``WAN_PIPELINE_DEVICES`` environment variable), or for ``auto`` every visible CUDA device when
    the preset runs on CUDA, else one slot on the preset's device (``preset_device``, resolved)."""
    import os

    slots = parse_slots(spec) or parse_slots(os.environ.get(DEVICES_ENV))
    if slots:
        return slots
    if preset_device.startswith("cuda"):
        import torch

        return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count())) or (preset_device,)
    return (preset_device,)


def slot_count(spec: str | list | tuple | None = None) -> int:
    """How many device slots this machine has (the ``gpu`` pool limit): the explicit ``spec`` or
    ``WAN_PIPELINE_DEVICES``; for ``auto``, the number of visible CUDA devices (at least 1)."""
    import os

    slots = parse_slots(spec) or parse_slots(os.environ.get(DEVICES_ENV))
    if slots:
        return len(slots)
    return max(1, visible_gpu_count())


def visible_gpu_count() -> int:
    """NVIDIA GPUs this process may use, without importing torch: the entries of
    ``CUDA_VISIBLE_DEVICES`` when set, else NVML's device count; 0 without a driver."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return 0


def slot_lock_path(lock_dir: str | Path, slots: tuple[str, ...], index: int) -> Path:
    """The lock of slot ``index``: :func:`lock_path` of its device for the device's first slot (so
    the one-stage tools, which lock the device itself, exclude it), ``gpu-<name>-<k>.lock`` for
    its k-th further slot (``cpu,cpu``: ``gpu-cpu.lock``, ``gpu-cpu-1.lock``)."""
    device = slots[index]
    k = slots[:index].count(device)
    base = lock_path(lock_dir, device)
    return base if k == 0 else base.with_name(f"{base.stem}-{k}.lock")


@dataclass(frozen=True)
class Lease:
    """A held device slot: ``device`` (torch device), ``slot`` (index in the slot list), ``waited_s``."""

    device: str
    slot: int
    waited_s: float


def _affinity(path: Path) -> dict:
    try:
        return json.loads(path.with_suffix(".model").read_text())
    except (OSError, ValueError):
        return {}


def record_model(lock_dir: str | Path, slots: tuple[str, ...], index: int, model_key: str) -> None:
    """Note in slot ``index``'s ``.model`` file that this process (pid, host) ran ``model_key``
    there last (model affinity for the next lease; written while the slot is held)."""
    path = slot_lock_path(lock_dir, slots, index).with_suffix(".model")
    path.write_text(json.dumps({"model": model_key, "pid": os.getpid(), "host": socket.gethostname()}))  # pid is per host


def slot_order(lock_dir: str | Path, slots: tuple[str, ...], model_key: str | None) -> list[int]:
    """Slots in the order a stage tries them: those whose last model was ``model_key`` in this very
    process first (its engine cache still holds it), then those that ran ``model_key`` in another
    process, then the rest; ties by slot index."""
    me = (os.getpid(), socket.gethostname())

    def rank(i: int) -> int:
        seen = _affinity(slot_lock_path(lock_dir, slots, i))
        if model_key is None or seen.get("model") != model_key:
            return 2
        return 0 if (seen.get("pid"), seen.get("host")) == me else 1

    return sorted(range(len(slots)), key=lambda i: (rank(i), i))


@contextlib.contextmanager
def lease_slot(
    lock_dir: str | Path,
    slots: tuple[str, ...],
    model_key: str | None = None,
    timeout_s: float = -1,
    on_wait=None,
    poll_s: float = 0.05,
    only: str | None = None,
) -> Iterator[Lease]:
    """Hold one free device slot of ``slots`` for the body (its file lock); yields the :class:`Lease`.

    Free slots are tried in :func:`slot_order` (model affinity); when all are busy, ``on_wait`` is
    called once with the lock folder and the slots are tried again every ``poll_s`` seconds until
    ``timeout_s`` (−1: forever; then ``filelock.Timeout``). The OS drops the lock when the holder
    dies, so a killed stage frees its slot. only: lease only slots of this device (an engine
    already built on it). Raises ``ValueError`` for an empty slot list.
    """
    from filelock import Timeout

    if not slots:
        raise ValueError("no device slots")
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    warned = False
    while True:
        for i in slot_order(lock_dir, slots, model_key):
            if only is not None and slots[i] != only:
                continue
            lock = FileLock(str(slot_lock_path(lock_dir, slots, i)), thread_local=False, is_singleton=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield Lease(slots[i], i, round(time.perf_counter() - t0, 3))
            finally:
                lock.release()
            return
        if not warned and on_wait is not None:
            on_wait(Path(lock_dir))
        warned = True
        if 0 <= timeout_s < time.perf_counter() - t0:
            raise Timeout(str(slot_lock_path(lock_dir, slots, 0)))
        time.sleep(poll_s)
