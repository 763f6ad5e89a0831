"""Per-stage measurement: wall time, lock wait, peak VRAM, device VRAM, peak RSS.

Keys of the telemetry contract (../shared/DESIGN.md): ``stage, engine, model, device, duration_s,
gpu_wait_s, peak_vram_mb, device_vram_used_mb, peak_rss_mb, frames, fps, width, height, seed,
path`` plus per-stage keys. Values are measured, never copied from the plan: VRAM from the torch
allocator peak (reset before the stage) and from NVML sampled during the stage; RSS from psutil
sampled during the stage; frames/fps/size from the output file itself. Null where a value cannot
be measured (VRAM on a CPU).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from wan_pipeline.errors import InputError
from wan_pipeline.media.atomic import write_text_atomic

CONTRACT_KEYS = (
    "stage",
    "engine",
    "model",
    "device",
    "device_slot",
    "host",
    "started_at",
    "finished_at",
    "duration_s",
    "gpu_wait_s",
    "peak_vram_mb",
    "device_vram_used_mb",
    "peak_rss_mb",
    "frames",
    "fps",
    "width",
    "height",
    "seed",
    "path",
)
MIB = 1024 * 1024


def _nvml_used_mb(index: int) -> float | None:
    """Memory used on the whole device ``index`` (all processes), MiB, via NVML; None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
    except Exception:
        return None


def _read_peak_rss_mb() -> float | None:
    """The kernel's peak RSS of this process (``VmHWM``, MiB) since the last
    :func:`_reset_peak_rss`, or None where /proc does not have it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0: writing 5 to ``/proc/self/clear_refs``);
    False where that is not possible (then the sampler's maximum is used)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return _read_peak_rss_mb() is not None
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Samples this process's RSS every ``interval`` seconds, its child processes' RSS every
    ``children_every`` samples, and on a GPU the NVML device memory, keeping the maxima, so peaks
    between start and end are not missed. Only this process and its own children are read (never
    every process on the machine at the sampling rate); where the kernel keeps the peak RSS
    (``VmHWM``) that exact figure is used for this process."""

    def __init__(self, gpu_index: int | None, interval: float = 0.1, children_every: int = 10):
        super().__init__(daemon=True)
        self.gpu_index = gpu_index
        self.interval = interval
        self.children_every = children_every
        self.peak_rss = 0.0
        self.peak_children = 0.0
        self.peak_device = None
        self._samples = 0
        self._halt = threading.Event()
        self._proc = psutil.Process(os.getpid())
        self._kernel_peak = _reset_peak_rss()

    def sample(self, children: bool = False) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self._proc.memory_info().rss / MIB)
            if children or self._samples % self.children_every == 0:
                rss = 0
                for child in self._proc.children(recursive=True):
                    try:
                        rss += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_children = max(self.peak_children, rss / MIB)
        except psutil.Error:
            pass
        self._samples += 1
        if self.gpu_index is not None:
            used = _nvml_used_mb(self.gpu_index)
            if used is not None:
                self.peak_device = used if self.peak_device is None else max(self.peak_device, used)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)
        self.sample(children=True)
        if self._kernel_peak:
            self.peak_rss = max(self.peak_rss, _read_peak_rss_mb() or 0.0)

    @property
    def peak_total_rss(self) -> float:
        """Peak RSS of this process plus the peak of its children, MiB."""
        return self.peak_rss + self.peak_children


@dataclass
class StageMeasurement:
    """What :class:`StageMonitor` measured. Times in seconds, memory in MiB."""

    duration_s: float = 0.0
    peak_vram_mb: float | None = None
    device_vram_used_mb: float | None = None
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)


class StageMonitor:
    """Context manager measuring one stage on ``device`` (``cpu`` or ``cuda:N``).

    On entry the torch CUDA peak counters are reset; on exit ``result`` holds the duration, the
    allocator peak (``torch.cuda.max_memory_allocated``), the NVML device peak and the RSS peak.
    """

    def __init__(self, device: str):
        self.device = device
        self.gpu_index = None
        if device.startswith("cuda"):
            self.gpu_index = int(device.split(":")[1]) if ":" in device else 0
        self.result = StageMeasurement()

    def __enter__(self) -> StageMonitor:
        if self.gpu_index is not None:
            import torch

            torch.cuda.synchronize(self.gpu_index)
            torch.cuda.reset_peak_memory_stats(self.gpu_index)
        self._sampler = _Sampler(self.gpu_index)
        self._sampler.sample(children=True)
        self._sampler.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.gpu_index is not None:
            import torch

            torch.cuda.synchronize(self.gpu_index)
            self.result.peak_vram_mb = round(torch.cuda.max_memory_allocated(self.gpu_index) / MIB, 1)
        self.result.duration_s = round(time.perf_counter() - self._t0, 3)
        self._sampler.stop()
        self.result.peak_rss_mb = round(self._sampler.peak_total_rss, 1)
        if self._sampler.peak_device is not None:
            self.result.device_vram_used_mb = round(self._sampler.peak_device, 1)


def sidecar_path(output: str | os.PathLike) -> Path:
    """``…/clip.mp4`` → ``…/clip.json``: where a stage's telemetry record sits."""
    return Path(output).with_suffix(".json")


def write_sidecar(output: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` as the JSON sidecar of ``output`` (atomically); returns its path."""
    return write_text_atomic(sidecar_path(output), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def read_sidecar(output: str | os.PathLike) -> dict | None:
    """The telemetry record beside ``output``, or None when there is none.

    Raises :class:`InputError` naming the sidecar when it is not a JSON object (a damaged file).
    """
    p = sidecar_path(output)
    if not p.is_file():
        return None
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        record = exc
    if not isinstance(record, dict):
        raise InputError(str(p), "damaged telemetry record (not a JSON object): delete it and re-render this stage to write it again")
    return record
