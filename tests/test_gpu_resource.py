"""GPUResource.stage: the telemetry record, the sidecar, progress in the log, failures record nothing."""

from __future__ import annotations

import json

import pytest

from resources.gpu import GPUResource
from wan_pipeline.engines import KeyframeRequest
from wan_pipeline.engines.registry import build_engine
from wan_pipeline.media import write_image
from wan_pipeline.preset import load_preset
from wan_pipeline.telemetry import CONTRACT_KEYS


class ListLog:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)

    warning = info


@pytest.fixture
def engine():
    preset = load_preset("preview")
    return build_engine("keyframe", preset.stages.keyframe, preset)


def test_record_sidecar_and_step_log(tmp_path, engine, monkeypatch):
    monkeypatch.setattr("wan_pipeline.stage_runner.STEP_LOG_INTERVAL_S", 0.0)  # a long stage: log each tenth
    gpu, log = GPUResource(storage_root=str(tmp_path)), ListLog()
    with gpu.stage(log, stage="keyframe", engine=engine, device="cpu", scene="a", seed=3) as run:
        for i in range(1, 41):
            run.step(i, 40)
        image = engine.render(KeyframeRequest("a", "p", "", 3, 80, 48))
        run.output = write_image(tmp_path / "out" / "keyframe.png", image)
    rec = run.record
    assert all(k in rec for k in CONTRACT_KEYS)
    assert (rec["frames"], rec["width"], rec["height"], rec["fps"], rec["seed"], rec["device"]) == (1, 80, 48, None, 3, "cpu")
    assert rec["peak_vram_mb"] is None and rec["peak_rss_mb"] > 10 and rec["engine"] == "image_or_procedural"
    assert json.loads((tmp_path / "out" / "keyframe.json").read_text())["path"] == str(tmp_path / "out" / "keyframe.png")
    steps = [line for line in log.lines if line.startswith("keyframe[a]: step ")]
    assert steps[0] == "keyframe[a]: step 1/40" and steps[-1] == "keyframe[a]: step 40/40"
    assert len(steps) == 11  # the first step, then each tenth of the way: not every step


def test_failed_stage_writes_no_record(tmp_path, engine):
    gpu = GPUResource(storage_root=str(tmp_path))
    with pytest.raises(RuntimeError):
        with gpu.stage(ListLog(), stage="keyframe", engine=engine, device="cpu", scene="a") as run:
            raise RuntimeError("engine crashed")
    assert run.record == {} and not list(tmp_path.rglob("*.json"))
    # and the device lock was released: the next stage does not wait
    with gpu.stage(ListLog(), stage="keyframe", engine=engine, device="cpu", scene="b") as run:
        run.output = write_image(tmp_path / "b.png", engine.render(KeyframeRequest("b", "p", "", 1, 32, 32)))
    assert run.record["gpu_wait_s"] < 1


def test_engine_factory_is_built_inside_the_lock(tmp_path, engine):
    """Loading weights onto the device happens under the device lock: a factory is called only
    once the lock is held (here: while another process-free holder releases it)."""
    from wan_pipeline.device_lock import lock_path
    from wan_pipeline.storage import machine_name

    gpu, built = GPUResource(storage_root=str(tmp_path)), []

    def factory():
        from filelock import FileLock

        probe = FileLock(str(lock_path(tmp_path / "locks" / machine_name(), "cpu")), is_singleton=False, thread_local=False)
        try:
            probe.acquire(timeout=0)  # must fail: the stage holds the lock while building
            probe.release()
            built.append("unlocked")
        except Exception:
            built.append("locked")
        return engine

    with gpu.stage(ListLog(), stage="keyframe", engine=factory, device="cpu", scene="a") as run:
        assert run.engine is engine
        run.output = write_image(tmp_path / "a.png", engine.render(KeyframeRequest("a", "p", "", 1, 32, 32)))
    assert built == ["locked"] and run.record["engine"] == "image_or_procedural"


def test_the_memory_sampler_reads_only_this_process_and_rarely_its_children(monkeypatch):
    """Peak RSS comes from the kernel's high-water mark of this process; the child processes (a
    scan of the process table) are read once a second, not at every sample."""
    import time

    import psutil

    from wan_pipeline.telemetry import StageMonitor

    scans = []
    real = psutil.Process.children
    monkeypatch.setattr(psutil.Process, "children", lambda self, recursive=False: scans.append(1) or real(self, recursive))
    with StageMonitor("cpu") as mon:
        block = bytearray(64 * 1024 * 1024)  # a 64 MiB peak inside the stage
        del block
        time.sleep(0.5)
    assert len(scans) <= 3
    assert mon.result.peak_rss_mb >= 64
