"""``GPUResource``: the only way a stage touches a device.

It holds the device's cross-process file lock for the stage, measures it (``StageMonitor``) and
turns the measurement, the engine's description and the output file's own figures into the
telemetry record of the contract (../shared/DESIGN.md): Dagster metadata on the materialization
and a JSON sidecar next to the output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import dagster as dg
from pydantic import Field

from wan_pipeline import progress
from wan_pipeline.device_lock import hold_device
from wan_pipeline.devices import free_device_memory, pick_device
from wan_pipeline.media.image_io import read_image
from wan_pipeline.media.video_io import probe_video
from wan_pipeline.previews import write_preview
from wan_pipeline.storage import StorageLayout, storage_root
from wan_pipeline.telemetry import CONTRACT_KEYS, StageMonitor, write_sidecar


@dataclass
class StageRun:
    """Filled in by the stage body: ``output`` (the file written) and ``meta`` (engine facts)."""

    stage: str
    scene: str | None
    device: str
    seed: int | None
    engine_info: dict
    output: Path | None = None
    meta: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    log: object = None
    engine: object = None
    _logged_tenth: int = -1

    def step(self, done: int, total: int) -> None:
        """Progress callback for engines: ``done`` of ``total`` steps (denoising steps, frames …).

        Goes to the progress reporter (CLI bars) on every call and to the Dagster log (``log``) at
        each tenth of the way, so a long model stage shows progress in the run's log."""
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


def _plain(value):
    if isinstance(value, Fraction):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_dagster_metadata(record: dict) -> dict:
    """Telemetry record → Dagster metadata values (null stays null, ``path`` is a path value,
    lists and dicts become JSON), plus ``preview`` (the output's thumbnail or contact sheet as a
    Markdown image, when the record has a ``preview_path``) and ``telemetry`` (the record as a
    key/value/unit table) for people reading the UI."""
    from resources.presentation import preview_markdown, telemetry_table

    out = {}
    preview = preview_markdown(record)
    if preview is not None:
        out["preview"] = preview
    out["telemetry"] = telemetry_table(record)
    for key, value in record.items():
        if value is None:
            out[key] = dg.MetadataValue.null()
        elif key in ("path", "preview_path"):
            out[key] = dg.MetadataValue.path(str(value))
        elif isinstance(value, (dict, list)):
            out[key] = dg.MetadataValue.json(value)
        elif isinstance(value, bool):
            out[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, (int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


class GPUResource(dg.ConfigurableResource):
    """One stage at a time on the device, measured.

    storage_root: the storage root (empty: ``WAN_PIPELINE_STORAGE`` or ``<checkout>/storage``);
    device: ``auto`` lets the preset decide, or force ``cpu`` / ``cuda:N``;
    lock_timeout_s: seconds to wait for the device lock (−1: forever).
    """

    storage_root: str = Field("", description="storage root; empty = $WAN_PIPELINE_STORAGE or <checkout>/storage")
    device: str = Field("auto", description="auto (the preset's device) | cpu | cuda:N")
    lock_timeout_s: float = Field(-1, description="seconds to wait for the device lock; -1 waits forever")

    def layout(self) -> StorageLayout:
        return StorageLayout(Path(self.storage_root).resolve() if self.storage_root else storage_root())

    def resolve_device(self, preset_device: str | None) -> str:
        return pick_device(preset_device if self.device == "auto" else self.device)

    @contextlib.contextmanager
    def stage(self, log, *, stage: str, engine, device: str, scene: str | None = None, seed: int | None = None) -> Iterator[StageRun]:
        """Run one stage for one scene (or the film) inside the device lock and the monitor.

        log: a logger with ``info``/``warning`` (``context.log``); engine: the stage engine, or a
        zero-argument factory called inside the device lock (so loading weights onto the device is
        guarded and measured too); ``run.engine`` is the engine, its ``describe()`` goes into the record. The body writes its output and sets ``run.output``
        and ``run.meta``; on exit ``run.record`` holds the telemetry record (also written as the
        output's JSON sidecar). If the body raises, nothing is recorded and the error propagates.
        """
        layout = self.layout()
        run = StageRun(stage=stage, scene=scene, device=device, seed=seed, engine_info={}, log=log)
        where = f"{stage}[{scene}]" if scene else stage

        def waiting(path):
            log.info(f"{where}: waiting for the device lock {path} (another stage is using {device})")

        progress.reporter().stage_started(stage, scene)
        with hold_device(layout.locks, device, self.lock_timeout_s, on_wait=waiting) as waited:
            monitor = StageMonitor(device)
            try:
                with monitor:
                    if not hasattr(engine, "describe"):
                        engine = engine()  # a factory: weights load under the lock, measured with the stage
                    run.engine = engine
                    yield run
                    run.engine_info = dict(engine.describe())  # after the body: tile sizes, strategies chosen
            finally:
                free_device_memory()
        if run.output is None:
            raise RuntimeError(f"{where}: the stage body did not set run.output")
        memory = dict(getattr(engine, "memory_record", dict)())  # oom_retries, memory_strategy (OOM retries)
        if run.meta.get("memory_strategy"):
            memory.pop("memory_strategy", None)  # what the engine applied beats the preset's request ("auto")
        run.meta.update(memory)
        m = monitor.result
        record = {k: None for k in CONTRACT_KEYS}
        record.update(_plain(run.engine_info))
        record.update(_plain(run.meta))
        record.update(
            stage=stage,
            scene=scene,
            engine=run.engine_info.get("engine"),
            model=run.meta.get("model", run.engine_info.get("model")),
            device=device,
            duration_s=m.duration_s,
            gpu_wait_s=waited,
            peak_vram_mb=m.peak_vram_mb,
            device_vram_used_mb=m.device_vram_used_mb,
            peak_rss_mb=m.peak_rss_mb,
            seed=seed,
            path=str(Path(run.output).resolve()),
        )
        record.update(measure_output(Path(run.output)))
        try:
            record["preview_path"] = str(write_preview(run.output)[0])
        except Exception as exc:  # a preview never fails a good render
            log.warning(f"{where}: no preview ({exc})")
        write_sidecar(run.output, record)
        run.record = record
        log.info(f"{where}: {record['frames']} frame(s) {record['width']}x{record['height']} in {m.duration_s:.2f}s → {record['path']}")
        progress.reporter().stage_finished(stage, scene, record)
