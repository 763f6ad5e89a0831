"""Ctrl-C and SIGTERM stop ``wan-pipeline render`` within seconds: exit 130 / 143, the Dagster run
canceled, the device lock and the ``gpu`` pool slot free, no temporary file left; the next render
completes. Stage retries are requested by the stage step, never for an interrupt."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.render_process import RenderProcess
from tests.small_story import ROOT, make_small_project
from wan_pipeline.device_lock import hold_device


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_render_then_next_render_completes(tmp_path, sig):
    env = {**os.environ, **make_small_project(tmp_path, duration_s=2.0), "PYTHONPATH": str(ROOT)}
    story = Path(env["WAN_PIPELINE_STORIES"]) / "launch_day.yaml"
    storage = Path(env["WAN_PIPELINE_STORAGE"])
    film = storage / "outputs" / "launch_day" / "preview" / "film.mp4"  # the take: the preset's name

    render = RenderProcess(env, story)
    render.wait_for("✓ clip[")
    render.proc.send_signal(sig)
    t0 = time.monotonic()
    rc, out = render.finish(60)
    stopped_s = time.monotonic() - t0
    assert rc == 128 + sig, render.err
    assert stopped_s < 15, stopped_s  # a few seconds on a loaded 2-core machine
    assert f"interrupted ({signal.Signals(sig).name})" in "".join(render.lines)
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

    again = RenderProcess(env, story)
    rc, out = again.finish()
    assert rc == 0, again.err
    assert Path(out.strip().splitlines()[-1]) == film and film.stat().st_size > 0
