"""Two ``wan-pipeline render`` at once on one storage root.

Same story: the second waits for the first (``locks/render-<story>.lock``), then renders only
what is stale or missing — here nothing: no second run, no partition rendered twice. Two stories:
both complete with their films (the device lock and the ``gpu`` pool share the device)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import REPO, write_preset, write_story
from tests.render_process import RenderProcess


@pytest.fixture
def project(tmp_path):
    """Stories ``alpha`` (3 scenes) and ``beta`` (2 scenes), the small preset, a storage root that
    does not exist yet."""
    write_preset(tmp_path / "workflows")
    write_story(tmp_path / "stories", story_id="alpha")
    beta = [
        {"id": "x", "prompt": "a cat", "duration_s": 1.0, "keyframe": {"image": "images/chelsea.png"}, "transition": "handoff"},
        {"id": "y", "prompt": "a cup", "duration_s": 1.0, "keyframe": {"image": "images/coffee.png"}},
    ]
    write_story(tmp_path / "stories", beta, story_id="beta")
    storage = tmp_path / "storage"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(WAN_PIPELINE_WORKFLOWS=str(tmp_path / "workflows"), WAN_PIPELINE_STORAGE=str(storage), PYTHONPATH=str(REPO))
    return env, tmp_path / "stories", storage


def _instance(storage: Path):
    os.environ["DAGSTER_HOME"] = str(storage)
    try:
        return dg.DagsterInstance.get()
    finally:
        del os.environ["DAGSTER_HOME"]


@pytest.mark.slow
def test_same_story_twice_at_once_renders_once(project):
    env, stories, storage = project
    first = RenderProcess(env, stories / "alpha.yaml")
    first.wait_for("✓ keyframe[")
    os.kill(first.proc.pid, signal.SIGSTOP)  # hold the first render mid-way, whatever the machine's speed
    try:
        second = RenderProcess(env, stories / "alpha.yaml")
        second.wait_for("another render of 'alpha' is running")
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    (rc1, out1), (rc2, out2) = first.finish(), second.finish()
    film = storage / "outputs" / "alpha" / "small" / "film.mp4"  # the take: the preset's name
    assert rc1 == 0, first.err
    assert rc2 == 0, second.err
    assert out1.strip().splitlines()[-1] == out2.strip().splitlines()[-1] == str(film)
    assert "nothing to render" in second.err and "✓" not in second.err  # the second rendered nothing itself
    with _instance(storage) as instance:
        (run,) = instance.get_runs()  # one run: the first render's
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for stage in ("keyframe", "upscaled"):
            for sid in ("one", "two", "three"):
                flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey(["alpha", stage]), asset_partitions=[sid])
                assert len(instance.fetch_materializations(flt, limit=10).records) == 1, (stage, sid)


@pytest.mark.slow
def test_two_stories_at_once_both_make_their_films(project):
    env, stories, storage = project
    renders = {sid: RenderProcess(env, stories / f"{sid}.yaml") for sid in ("alpha", "beta")}
    for story_id, render in renders.items():
        rc, out = render.finish()
        assert rc == 0, render.err
        film = storage / "outputs" / story_id / "small" / "film.mp4"
        assert out.strip().splitlines()[-1] == str(film) and film.stat().st_size > 0
    with _instance(storage) as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["wan_pipeline/story"] for r in runs) == ["alpha", "beta"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
