"""The stage runner: one stage of one scene (or the film) on a device, measured and recorded.

Dagster-free, so the assets (through the thin ``resources.GPUResource`` adapter) and the CLI's
one-stage tools (``wan-pipeline interpolate`` / ``upscale``) run stages the same way:

* a device slot's cross-process file lock is held for the stage (``storage/locks/<machine>``), and the engine is
  built inside it when given as a factory, so loading weights onto the device is guarded too;
* :class:`~wan_pipeline.telemetry.StageMonitor` measures time, peak VRAM and peak RSS;
* the telemetry record of the contract (../shared/DESIGN.md) is assembled from the engine's
  ``describe()``, the stage body's facts and the output file's own figures, and written as the
  output's JSON sidecar, with a preview made from the frames the stage already holds (a sample);
* :class:`EngineCache` builds engines once per render and retries a stage method that ran out of
  device memory with the next stronger memory strategy (:class:`OOMRetryingEngine`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np

from wan_pipeline import progress
from wan_pipeline.device_lock import lease_slot, record_model
from wan_pipeline.devices import free_device_memory
from wan_pipeline.media.video_io import VideoInfo, probe_video
from wan_pipeline.previews import AnimatedPreview, write_animated_preview, write_preview
from wan_pipeline.storage import StorageLayout, machine_name
from wan_pipeline.telemetry import CONTRACT_KEYS, StageMonitor, write_sidecar

_LOG = logging.getLogger("wan_pipeline")
STEP_LOG_INTERVAL_S = 5.0
"""Seconds between two step lines of one stage in the log (the progress bars see every step)."""


@dataclass
class StageRun:
    """Filled in by the stage body: ``output`` (the file written), ``output_info`` (the
    :class:`~wan_pipeline.media.video_io.VideoInfo` the writer measured from that file, so it is
    not opened again), ``meta`` (engine facts) and ``preview`` (what the body already holds of the
    output: an image uint8 (H, W, 3), or frames uint8 (n, H, W, 3) — the whole video, or a bounded
    sample of it (the few the contact sheet shows, kept while the frames streamed into the file) —
    so the preview needs no second decode); ``animation``: the
    :class:`~wan_pipeline.previews.AnimatedPreview` filled while a streamed output was written (its
    own bounded sample spread over the whole video); ``preview_scene_lengths``: a film's scene
    lengths, so its animated preview samples every scene. ``record`` is the telemetry record once
    the stage ended."""

    stage: str
    scene: str | None
    device: str
    seed: int | None
    engine_info: dict
    output: Path | None = None
    output_info: VideoInfo | None = None
    meta: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    preview: np.ndarray | None = None
    slot: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    preview_scene_lengths: list[float] | None = None
    animation: AnimatedPreview | None = None
    log: object = None
    engine: object = None
    _logged_tenth: int = -1
    _last_log: float = field(default_factory=time.monotonic)

    def step(self, done: int, total: int) -> None:
        """Progress callback for engines: ``done`` of ``total`` steps (denoising steps, frames …).

        Goes to the progress reporter (CLI bars) on every call and to the log at each tenth of the
        way once :data:`STEP_LOG_INTERVAL_S` passed since the stage began or its last step line, so
        a long model stage shows progress in the run's log while a short stage does not fill the
        event log (every line is a row of the Dagster event log)."""
        progress.reporter().stage_step(self.stage, self.scene, done, total)
        tenth = (10 * done) // max(total, 1)
        now = time.monotonic()
        if self.log is not None and total > 1 and tenth > self._logged_tenth and now - self._last_log >= STEP_LOG_INTERVAL_S:
            self._logged_tenth, self._last_log = tenth, now
            where = f"{self.stage}[{self.scene}]" if self.scene else self.stage
            self.log.info(f"{where}: step {done}/{total}")


def measure_output(path: Path, info: VideoInfo | None = None) -> dict:
    """frames, fps, width, height measured from the output file (image: 1 frame, fps null; its
    header is read). info: what the video writer already measured from this file."""
    if path.suffix.lower() == ".png":
        from PIL import Image

        with Image.open(path) as img:
            width, height = img.size
        return {"frames": 1, "fps": None, "width": int(width), "height": int(height)}
    info = info if info is not None and Path(info.path) == Path(path).resolve() else probe_video(path)
    return {
        "frames": info.frames,
        "fps": float(info.fps),
        "fps_exact": str(info.fps),
        "width": info.width,
        "height": info.height,
        "video_duration_s": round(info.duration_s, 4),
        "has_audio": info.has_audio,
    }


def output_identity(path: Path) -> dict:
    """``size_bytes`` and ``sha256`` (hex) of the output file as written: ``status`` and
    ``render --stale`` compare them with the file on disk, so a deleted or replaced output is
    rendered again (:func:`wan_pipeline.status.output_problem`)."""
    from wan_pipeline.fingerprint import file_sha256

    return {"size_bytes": path.stat().st_size, "sha256": file_sha256(path)}


def plain(value):
    """``value`` with fractions as floats and paths as strings, recursively (JSON-ready)."""
    if isinstance(value, Fraction):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _torch_loaded() -> bool:
    return "torch" in sys.modules


def utc_now() -> str:
    """Now as ISO 8601 UTC with milliseconds (``2026-12-01T23:30:00.123+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _build(factory, device: str):
    """Call an engine factory: with the leased device when it takes an argument."""
    try:
        takes_device = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        takes_device = False
    return factory(device) if takes_device else factory()


class StageRunner:
    """Runs stages on a storage root's devices.

    layout: the storage root (``locks/<machine>/`` holds this machine's slot locks); lock_timeout_s:
    seconds to wait for a device slot (−1: forever); slots: the device slots a stage may lease
    (:func:`wan_pipeline.device_lock.resolve_slots`; None: one slot, the device each stage names).
    """

    def __init__(self, layout: StorageLayout, lock_timeout_s: float = -1, slots: tuple[str, ...] | None = None):
        self.layout = layout
        self.lock_timeout_s = lock_timeout_s
        self.slots = tuple(slots) if slots else None

    @contextlib.contextmanager
    def stage(
        self,
        log,
        *,
        stage: str,
        engine,
        device: str,
        scene: str | None = None,
        seed: int | None = None,
        model_key: str | None = None,
    ) -> Iterator[StageRun]:
        """Run one stage for one scene (or the film) on a leased device slot, inside the monitor.

        log: a logger with ``info``/``warning``; engine: the stage engine (built for ``device``:
        only that device's slots are leased), or a factory called inside the lease with the leased
        device (or without arguments) — weights load under the lock, measured with the stage;
        ``run.engine`` is the engine, its ``describe()`` goes into the record; ``run.device`` and
        ``run.slot`` say where it ran. model_key: the model the stage loads; a free slot where this
        process ran it last is preferred (model affinity). The body
        writes its output and sets ``run.output``, ``run.meta`` and, when it holds the frames,
        ``run.preview``; on exit ``run.record`` holds the telemetry record (also written as the
        output's JSON sidecar). If the body raises, nothing is recorded and the error propagates.
        Raises ``RuntimeError`` when the body set no output.
        """
        log = log or _LOG
        run = StageRun(stage=stage, scene=scene, device=device, seed=seed, engine_info={}, log=log)
        where = f"{stage}[{scene}]" if scene else stage
        factory = not hasattr(engine, "describe")
        slots = self.slots or (device,)
        only = None
        if not factory:  # a built engine lives on its device: only that device's slots will do
            slots, only = (slots, device) if device in slots else ((device,), None)

        def waiting(path):
            log.info(f"{where}: waiting for a free device slot in {path} (every slot of {', '.join(slots)} is busy)")

        progress.reporter().stage_started(stage, scene)
        with lease_slot(self.layout.machine_locks(), slots, model_key, self.lock_timeout_s, on_wait=waiting, only=only) as lease:
            run.device, run.slot = lease.device, lease.slot
            monitor = StageMonitor(lease.device)
            run.started_at = utc_now()
            try:
                with monitor:
                    if factory:
                        engine = _build(engine, lease.device)  # weights load under the lock, measured with the stage
                    run.engine = engine
                    yield run
                    run.engine_info = dict(engine.describe())  # after the body: tile sizes, strategies chosen
                if model_key is not None:
                    record_model(self.layout.machine_locks(), slots, lease.slot, model_key)
            finally:
                run.finished_at = utc_now()
                if _torch_loaded():  # a preset without torch engines never imports it
                    free_device_memory()
        waited = lease.waited_s
        if run.output is None:
            raise RuntimeError(f"{where}: the stage body did not set run.output")
        run.record = self._record(run, engine, monitor, waited)
        # the materialization carries the whole record; one line for a terminal, not the event log
        _LOG.debug(
            f"{where}: {run.record['frames']} frame(s) {run.record['width']}x{run.record['height']} "
            f"in {monitor.result.duration_s:.2f}s → {run.record['path']}"
        )
        progress.reporter().stage_finished(stage, scene, run.record)

    def _record(self, run: StageRun, engine, monitor: StageMonitor, waited: float) -> dict:
        memory = dict(getattr(engine, "memory_record", dict)())  # oom_retries, memory_strategy (OOM retries)
        if run.meta.get("memory_strategy"):
            memory.pop("memory_strategy", None)  # what the engine applied beats the preset's request ("auto")
        run.meta.update(memory)
        m = monitor.result
        record = {k: None for k in CONTRACT_KEYS}
        record.update(plain(run.engine_info))
        record.update(plain(run.meta))
        record.update(
            stage=run.stage,
            scene=run.scene,
            engine=run.engine_info.get("engine"),
            model=run.meta.get("model", run.engine_info.get("model")),
            device=run.device,
            device_slot=run.slot,
            host=machine_name(),
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration_s=m.duration_s,
            gpu_wait_s=waited,
            peak_vram_mb=m.peak_vram_mb,
            device_vram_used_mb=m.device_vram_used_mb,
            peak_rss_mb=m.peak_rss_mb,
            seed=run.seed,
            path=str(Path(run.output).resolve()),
        )
        record.update(measure_output(Path(run.output), run.output_info))
        record.update(output_identity(Path(run.output)))
        try:
            record["preview_path"] = str(write_preview(run.output, frames=run.preview)[0])
        except Exception as exc:  # a preview never fails a good render
            run.log.warning(f"{run.stage}: no preview ({exc})")
        if record.get("fps") is not None:  # a video: an animated preview too
            record["animation_path"] = _animation(run, record)
        write_sidecar(run.output, record)
        return record


def _animation(run: StageRun, record: dict) -> str | None:
    """Write the animated preview of a video output: the one filled while the output streamed
    (``run.animation``), else from the frames the stage holds when they are the whole video, else
    from the file in one streaming pass; its path, or None (with a warning) when it cannot be
    made — a preview never fails a good render."""
    fps = Fraction(record["fps_exact"]) if record.get("fps_exact") else record["fps"]
    whole = run.preview is not None and run.preview.ndim == 4 and len(run.preview) == record.get("frames")
    try:
        if run.animation is not None:
            path, _ = write_animated_preview(run.output, animation=run.animation.finish())
        else:
            path, _ = write_animated_preview(run.output, run.preview if whole else None, fps, scene_lengths=run.preview_scene_lengths)
    except Exception as exc:
        run.log.warning(f"{run.stage}: no animated preview ({exc})")
        return None
    return str(path)


class OOMRetryingEngine:
    """An engine whose stage calls survive out-of-memory errors.

    On ``torch.OutOfMemoryError`` in a stage method (the ``method`` of any row of the stage table)
    the engine is closed and rebuilt by ``rebuild(strategy)`` with
    :func:`wan_pipeline.models.memory.stronger_strategy`, and the call repeated, until the ladder
    ends (then the error propagates). Engines whose preset section has no ``memory_strategy`` are
    not rebuilt. :meth:`memory_record` gives ``oom_retries`` (of the last call) and
    ``memory_strategy`` for the telemetry.
    """

    def __init__(self, engine, strategy: str | None, rebuild: Callable, log=None):
        self._engine = engine
        self._strategy = strategy
        self._rebuild = rebuild
        self._log = log
        self.oom_retries = 0

    @property
    def engine(self):
        return self._engine

    def memory_record(self) -> dict:
        return {"oom_retries": self.oom_retries, "memory_strategy": self._strategy} if self._strategy else {}

    def close(self) -> None:
        close = getattr(self._engine, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name):
        from wan_pipeline.stages import STAGES

        attr = getattr(self._engine, name)
        if name not in STAGES.stage_methods() or not callable(attr):
            return attr

        def call(*args, **kwargs):
            from wan_pipeline.models.memory import stronger_strategy
            from wan_pipeline.oom import is_oom

            self.oom_retries = 0
            while True:
                try:
                    return getattr(self._engine, name)(*args, **kwargs)
                except Exception as exc:
                    current = getattr(self._engine, "memory_strategy", None)
                    if isinstance(current, str) and current != "auto":
                        self._strategy = current  # the strategy "auto" resolved to
                    try:
                        nxt = stronger_strategy(self._strategy) if (self._strategy and is_oom(exc)) else None
                    except ValueError:
                        nxt = None
                    if nxt is None:
                        raise
                # out of the except block: the traceback no longer pins the failed call's tensors
                message = f"{getattr(self._engine, 'name', 'engine')}: out of memory with {self._strategy!r}; retrying with {nxt!r}"
                (self._log or _LOG.warning)(message)
                self.close()
                self._engine = None
                free_device_memory()
                self._engine = self._rebuild(nxt)
                self._strategy = nxt
                self.oom_retries += 1

        return call


class EngineCache:
    """Stage engines built once per render and reused across its scenes and steps.

    Built from an :class:`~wan_pipeline.engines.context.EngineContext` and a preset section
    (:func:`wan_pipeline.engines.registry.build_engine`), wrapped in :class:`OOMRetryingEngine`.
    :meth:`release` frees a stage's engine after its step (model stages give the device back);
    engines of stages marked ``keep_engine`` in the stage table (small post-processing weights the
    film reuses for its seams) stay until :meth:`close`.
    """

    def __init__(self):
        self._engines: dict[tuple, object] = {}

    def get(self, stage: str, preset, ctx):
        """The engine of ``stage`` for ``preset`` (its section) in ``ctx``, built on first use."""
        from wan_pipeline.engines.registry import build_engine

        config = preset.stage(stage)
        key = (stage, preset.content_sha, ctx)
        if key not in self._engines:
            strategy = config.params.get("memory_strategy")
            self._engines[key] = OOMRetryingEngine(
                build_engine(stage, config, ctx),
                strategy,
                lambda s: build_engine(stage, config.model_copy(update={"memory_strategy": s}), ctx),
            )
        return self._engines[key]

    def release(self, stage: str | None = None, *, keep_marked: bool = True) -> int:
        """Close and drop the cached engines of ``stage`` (all when None), except those of stages
        marked ``keep_engine`` while ``keep_marked``; returns how many were closed."""
        from wan_pipeline.stages import STAGES

        keys = [
            k
            for k in self._engines
            if (stage is None or k[0] == stage) and not (keep_marked and k[0] in STAGES and STAGES[k[0]].keep_engine)
        ]
        for k in keys:
            self._engines.pop(k).close()
        if keys and _torch_loaded():
            free_device_memory()
        return len(keys)

    def close(self) -> int:
        """Close every engine (the render ended)."""
        return self.release(None, keep_marked=False)

    def __len__(self) -> int:
        return len(self._engines)
