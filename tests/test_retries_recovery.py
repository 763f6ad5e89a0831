"""OOM retries, killed runs, device-lock release on termination, and atomic writes under SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from wan_pipeline.device_lock import hold_device
from wan_pipeline.engines.context import EngineContext
from wan_pipeline.models.memory import STRATEGIES, stronger_strategy
from wan_pipeline.stage_runner import EngineCache
from wan_pipeline.stages import STAGES

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


class FlakyClipEngine:
    """Raises torch.OutOfMemoryError on its first render with the weakest strategy."""

    name = "flaky"
    calls: list = []

    def __init__(self, params, preset):
        self.strategy = params["memory_strategy"]

    def describe(self):
        return {"engine": self.name, "model": None, "memory_strategy": self.strategy}

    def render(self, request):
        FlakyClipEngine.calls.append(self.strategy)
        if self.strategy == "full_gpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.zeros((2, 4, 4, 3), np.uint8)


def test_oom_rebuilds_with_the_next_stronger_strategy(monkeypatch):
    from wan_pipeline.preset import Preset

    monkeypatch.setitem(STAGES["clip"].engines, "flaky", f"{__name__}:FlakyClipEngine")
    preset = Preset.model_validate(
        {
            "name": "oomtest",
            "width": 16,
            "height": 16,
            "fps": 16,
            "stages": {
                st: {"engine": e}
                for st, e in [
                    ("keyframe", "image_or_procedural"),
                    ("interpolated", "optical_flow"),
                    ("upscaled", "lanczos"),
                    ("film", "concat"),
                ]
            }
            | {"clip": {"engine": "flaky", "memory_strategy": "full_gpu"}},
        }
    )
    cache = EngineCache()
    engine = cache.get("clip", preset, EngineContext.for_preset(preset, device="cpu"))
    FlakyClipEngine.calls.clear()
    out = engine.render(object())
    assert out.shape == (2, 4, 4, 3)
    assert FlakyClipEngine.calls == ["full_gpu", "model_cpu_offload"]
    assert engine.memory_record() == {"oom_retries": 1, "memory_strategy": "model_cpu_offload"}
    assert cache.close() == 1 and len(cache) == 0
    assert stronger_strategy(STRATEGIES[-1]) is None


def test_stage_step_retries_other_errors_but_not_bad_input_nor_interrupts(monkeypatch):
    """Stage steps retry transient errors by STAGE_RETRY_POLICY (here without the delay); bad input
    fails at once; an interrupt is not retried: the run ends CANCELED."""
    import assets.recovery as recovery
    from wan_pipeline.errors import InputError

    policy = recovery.STAGE_RETRY_POLICY
    assert policy.max_retries == 2 and policy.backoff == dg.Backoff.EXPONENTIAL
    monkeypatch.setattr(recovery, "STAGE_RETRY_POLICY", dg.RetryPolicy(max_retries=policy.max_retries, delay=0))
    calls = []

    def stage(name, error, failures):
        @dg.asset(name=name)
        @recovery.stage_step
        def _stage(context):
            calls.append(name)
            if calls.count(name) <= failures:
                raise error

        return _stage

    with dg.instance_for_test() as instance:
        flaky = dg.materialize([stage("flaky", RuntimeError("transient"), 2)], instance=instance)
        assert flaky.success and calls.count("flaky") == 3  # two retries
        bad = dg.materialize([stage("bad", InputError(None, "bad field"), 9)], instance=instance, raise_on_error=False)
        assert not bad.success and calls.count("bad") == 1
        assert instance.get_run_by_id(bad.run_id).status == dg.DagsterRunStatus.FAILURE
        stopped = dg.materialize([stage("stopped", KeyboardInterrupt(), 9)], instance=instance, raise_on_error=False)
        assert not stopped.success and calls.count("stopped") == 1
        assert instance.get_run_by_id(stopped.run_id).status == dg.DagsterRunStatus.CANCELED


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_terminated_stage_releases_the_device_lock(tmp_path, sig):
    code = f"from wan_pipeline.device_lock import hold_device\nimport time\nwith hold_device({str(tmp_path)!r}, 'cuda:0'):\n    print('held', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    proc.send_signal(sig)
    with hold_device(tmp_path, "cuda:0", timeout_s=10):
        waited = time.monotonic() - t0
    proc.wait(5)
    assert waited < 10


KILLED_RUN = textwrap.dedent("""
    import time, dagster as dg
    @dg.asset(pool="gpu")
    def slow_stage():
        print("running", flush=True)
        time.sleep(120)
    dg.materialize([slow_stage], instance=dg.DagsterInstance.get())
""")


@pytest.fixture
def database():
    from tests.conftest import fresh_database

    with fresh_database() as url:
        yield url


def test_killed_run_is_marked_failed_and_its_slot_freed(tmp_path, database):
    """On SQLite, or on PostgreSQL instance storage when the CI started a server (the instance
    that several machines share)."""
    from assets.recovery import find_killed_runs, recover_killed_runs

    yaml_text = "concurrency:\n  pools:\n    default_limit: 1\n"
    if database:
        from wan_pipeline.storage import database_url

        yaml_text += f"storage:\n  postgres:\n    postgres_url: {database_url(database)}\n"
    (tmp_path / "dagster.yaml").write_text(yaml_text)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen([PY, "-c", KILLED_RUN], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "running"
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        assert find_killed_runs(instance) == []  # alive: left alone
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        lines = []
        (rec,) = recover_killed_runs(instance, log=lines.append)
        assert rec.run_id == run.run_id and proc.pid in rec.pids
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        assert "marked failed" in lines[0]
        assert recover_killed_runs(instance) == []
    finally:
        instance.dispose()


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from fractions import Fraction
    from wan_pipeline.media.clip import Clip
    import wan_pipeline.media.video_io as vio
    import av
    real_encode = None
    frames = np.random.default_rng(0).integers(0, 255, (400, 96, 128, 3), dtype=np.uint8)
    orig = vio.av.VideoFrame.from_ndarray
    count = [0]
    def slow(*a, **k):
        count[0] += 1
        if count[0] == 20:
            print("writing", flush=True)
            import time; time.sleep(60)
        return orig(*a, **k)
    vio.av.VideoFrame.from_ndarray = slow
    vio.write_video(sys.argv[1], Clip(frames, Fraction(16)))
""")


def test_stage_killed_mid_write_leaves_previous_output_intact(tmp_path):
    """SIGKILL during write_video: the old file is byte-identical. The killed process cannot
    clean its temporary ``.<stem>.*.part.mp4``; it is left beside the target and the next write
    uses its own temporary name (leftovers are hidden files, never read as outputs)."""
    from fractions import Fraction

    from wan_pipeline.media.clip import Clip
    from wan_pipeline.media.video_io import read_video, write_video

    target = tmp_path / "clip.mp4"
    write_video(target, Clip(np.full((5, 48, 64, 3), 90, np.uint8), Fraction(16)))
    before = target.read_bytes()
    proc = subprocess.Popen(
        [PY, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.stdout.readline().strip() == "writing"
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".clip.")]
    assert partial and partial[0].suffix == ".mp4"
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    assert target.read_bytes() == before
    assert read_video(target).num_frames == 5
    leftovers = [p for p in tmp_path.iterdir() if p.name != "clip.mp4"]
    assert all(p.name.startswith(".clip.") and ".part" in p.name for p in leftovers)
