"""Ctrl-C and SIGTERM stop ``wan-pipeline render`` within seconds: exit 130 / 143, the Dagster run
canceled, the device lock and the ``gpu`` pool slot free, no temporary file left; the next render
completes. Stage retries are requested by the stage step, never for an interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.small_story import make_small_project
from wan_pipeline.device_lock import hold_device

ROOT = Path(__file__).resolve().parents[1]


def _start_render(env: dict, story: Path) -> tuple[subprocess.Popen, list[str], threading.Event]:
    """Start a render; its stderr lines are collected; the event is set at the first finished clip."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan_pipeline.cli", "render", str(story)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, clip_done = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "✓ clip[" in line:
                clip_done.set()

    threading.Thread(target=read, daemon=True).start()
    return proc, lines, clip_done


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_render_then_next_render_completes(tmp_path, sig):
    env = {**os.environ, **make_small_project(tmp_path, duration_s=2.0), "PYTHONPATH": str(ROOT)}
    story = Path(env["WAN_PIPELINE_STORIES"]) / "launch_day.yaml"
    storage = Path(env["WAN_PIPELINE_STORAGE"])
    film = storage / "outputs" / "launch_day" / "preview" / "film.mp4"  # the take: the preset's name

    proc, lines, clip_done = _start_render(env, story)
    assert clip_done.wait(180), "".join(lines)[-3000:]
    proc.send_signal(sig)
    t0 = time.monotonic()
    rc = proc.wait(60)
    stopped_s = time.monotonic() - t0
    out = proc.stdout.read()
    assert rc == 128 + sig, "".join(lines)[-3000:]
    assert stopped_s < 15, stopped_s  # a few seconds on a loaded 2-core machine
    assert f"interrupted ({signal.Signals(sig).name})" in "".join(lines)
    assert not film.exists() and out.strip() == ""
    assert list(storage.rglob("*.part*")) == []  # no temporary file left behind
    with hold_device(storage / "locks", "cpu", timeout_s=0):  # the device lock is free
        pass

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(storage))
        with dg.DagsterInstance.get() as instance:
            (run,) = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.CANCELED
            assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []

    proc, lines, _ = _start_render(env, story)
    assert proc.wait(300) == 0, "".join(lines)[-3000:]
    assert Path(proc.stdout.read().strip().splitlines()[-1]) == film and film.stat().st_size > 0
