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


class _Sampler(threading.Thread):
    """Samples process RSS (with children) and NVML device memory every ``interval`` seconds,
    keeping the maxima, so short peaks between start and end are not missed."""

    def __init__(self, gpu_index: int | None, interval: float = 0.05):
        super().__init__(daemon=True)
        self.gpu_index = gpu_index
        self.interval = interval
        self.peak_rss = 0.0
        self.peak_device = None
        self._halt = threading.Event()
        self._proc = psutil.Process(os.getpid())

    def sample(self) -> None:
        try:
            rss = self._proc.memory_info().rss
            for child in self._proc.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            rss = 0
        self.peak_rss = max(self.peak_rss, rss / MIB)
        if self.gpu_index is not None:
            used = _nvml_used_mb(self.gpu_index)
            if used is not None:
                self.peak_device = used if self.peak_device is None else max(self.peak_device, used)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)
        self.sample()


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
        self.result.peak_rss_mb = round(self._sampler.peak_rss, 1)
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
