"""The stage runner: one stage of one scene (or the film) on a device, measured and recorded.

Dagster-free, so the assets (through the thin ``resources.GPUResource`` adapter) and the CLI's
one-stage tools (``wan-pipeline interpolate`` / ``upscale``) run stages the same way:

* the device's cross-process file lock is held for the stage (``storage/locks``), and the engine is
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
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from wan_pipeline import progress
from wan_pipeline.device_lock import hold_device
from wan_pipeline.devices import free_device_memory
from wan_pipeline.media.image_io import read_image
from wan_pipeline.media.video_io import probe_video
from wan_pipeline.previews import write_preview
from wan_pipeline.storage import StorageLayout
from wan_pipeline.telemetry import CONTRACT_KEYS, StageMonitor, write_sidecar

_LOG = logging.getLogger("wan_pipeline")


@dataclass
class StageRun:
    """Filled in by the stage body: ``output`` (the file written), ``meta`` (engine facts) and
    ``preview`` (what the body already holds of the output: an image uint8 (H, W, 3) or a bounded
    sample of its frames uint8 (n, H, W, 3) — the few the contact sheet shows, kept while the
    frames streamed into the file — so the preview needs no second decode). ``record`` is the telemetry record
    once the stage ended."""

    stage: str
    scene: str | None
    device: str
    seed: int | None
    engine_info: dict
    output: Path | None = None
    meta: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    preview: np.ndarray | None = None
    log: object = None
    engine: object = None
    _logged_tenth: int = -1

    def step(self, done: int, total: int) -> None:
        """Progress callback for engines: ``done`` of ``total`` steps (denoising steps, frames …).

        Goes to the progress reporter (CLI bars) on every call and to the log at each tenth of the
        way, so a long model stage shows progress in the run's log."""
        progress.reporter().stage_step(self.stage, self.scene, done, total)
        tenth = (10 * done) // max(total, 1)
        if self.log is not None and total > 1 and tenth > self._logged_tenth:
            self._logged_tenth = tenth
            where = f"{self.stage}[{self.scene}]" if self.scene else self.stage
            self.log.info(f"{where}: step {done}/{total}")


def measure_output(path: Path) -> dict:
    """frames, fps, width, height measured from the output file (image: 1 frame, fps null)."""
    if path.suffix.lower() == ".png":
        img = read_image(path)
        return {"frames": 1, "fps": None, "width": int(img.shape[1]), "height": int(img.shape[0])}
    info = probe_video(path)
    return {
        "frames": info.frames,
        "fps": float(info.fps),
        "fps_exact": str(info.fps),
        "width": info.width,
        "height": info.height,
        "video_duration_s": round(info.duration_s, 4),
        "has_audio": info.has_audio,
    }


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


class StageRunner:
    """Runs stages on a storage root's devices.

    layout: the storage root (its ``locks/`` folder holds the device locks); lock_timeout_s:
    seconds to wait for a device lock (−1: forever).
    """

    def __init__(self, layout: StorageLayout, lock_timeout_s: float = -1):
        self.layout = layout
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def stage(self, log, *, stage: str, engine, device: str, scene: str | None = None, seed: int | None = None) -> Iterator[StageRun]:
        """Run one stage for one scene (or the film) inside the device lock and the monitor.

        log: a logger with ``info``/``warning``; engine: the stage engine, or a zero-argument
        factory called inside the device lock (weights load under the lock, measured with the
        stage); ``run.engine`` is the engine, its ``describe()`` goes into the record. The body
        writes its output and sets ``run.output``, ``run.meta`` and, when it holds the frames,
        ``run.preview``; on exit ``run.record`` holds the telemetry record (also written as the
        output's JSON sidecar). If the body raises, nothing is recorded and the error propagates.
        Raises ``RuntimeError`` when the body set no output.
        """
        log = log or _LOG
        run = StageRun(stage=stage, scene=scene, device=device, seed=seed, engine_info={}, log=log)
        where = f"{stage}[{scene}]" if scene else stage

        def waiting(path):
            log.info(f"{where}: waiting for the device lock {path} (another stage is using {device})")

        progress.reporter().stage_started(stage, scene)
        with hold_device(self.layout.locks, device, self.lock_timeout_s, on_wait=waiting) as waited:
            monitor = StageMonitor(device)
            try:
                with monitor:
                    if not hasattr(engine, "describe"):
                        engine = engine()  # a factory: weights load under the lock, measured with the stage
                    run.engine = engine
                    yield run
                    run.engine_info = dict(engine.describe())  # after the body: tile sizes, strategies chosen
            finally:
                if _torch_loaded():  # a preset without torch engines never imports it
                    free_device_memory()
        if run.output is None:
            raise RuntimeError(f"{where}: the stage body did not set run.output")
        run.record = self._record(run, engine, monitor, waited)
        log.info(
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
            duration_s=m.duration_s,
            gpu_wait_s=waited,
            peak_vram_mb=m.peak_vram_mb,
            device_vram_used_mb=m.device_vram_used_mb,
            peak_rss_mb=m.peak_rss_mb,
            seed=run.seed,
            path=str(Path(run.output).resolve()),
        )
        record.update(measure_output(Path(run.output)))
        try:
            record["preview_path"] = str(write_preview(run.output, frames=run.preview)[0])
        except Exception as exc:  # a preview never fails a good render
            run.log.warning(f"{run.stage}: no preview ({exc})")
        write_sidecar(run.output, record)
        return record


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
