"""`wan-pipeline render` with two device slots: the scenes render as one run per scene range, the
runs of a phase at the same time, never two stages on one slot, the FLF2V handoff order kept."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import dagster as dg

from wan_pipeline.cli import main
from wan_pipeline.media import probe_video


def test_two_slots_render_scene_ranges_in_parallel_runs(workspace, capsys, monkeypatch):
    """Scene two hands off to scene three, across the boundary of the ranges one..two and three:
    the keyframes of both ranges come first (their own phase), then the other stages, then the film."""
    import yaml

    story = yaml.safe_load(workspace["story"].read_text())
    story["scenes"][1]["transition"] = "handoff"
    workspace["story"].write_text(yaml.safe_dump(story, sort_keys=False))
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu,cpu")
    assert main(["render", str(workspace["story"]), "--preset", "small"]) == 0
    out, err = capsys.readouterr()
    film = Path(out.strip().splitlines()[-1])
    assert probe_video(film).frames == 3 * 8 * 2 + 1  # the whole film, every scene
    assert "clip[three]" in err and "upscaled[one]" in err  # progress from the worker processes reached the console
    assert "default_limit: 2" in (workspace["storage"] / "dagster.yaml").read_text()  # the gpu pool = two slots
    story_dir = workspace["storage"] / "outputs" / "tiny_tale" / "small"  # the take
    records = [json.loads(p.read_text()) for p in story_dir.glob("*/*.json")]
    assert len(records) == 3 * 4
    spans = {(r["stage"], r["scene"]): (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in records}
    for slot in (0, 1):  # never two stages on one slot
        mine = sorted(spans[(r["stage"], r["scene"])] for r in records if r["device_slot"] == slot)
        assert all(b[0] >= a[1] for a, b in zip(mine, mine[1:]))
    assert spans[("clip", "one")][0] >= spans[("keyframe", "two")][1]  # FLF2V: scene one's clip ends on scene two's keyframe
    assert spans[("clip", "two")][0] >= spans[("keyframe", "three")][1]  # ... and two's on three's, made by the other range's run
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        if workspace["database"]:  # .ci/run: the instance the render made is PostgreSQL, not SQLite
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        assert len(runs) == 5 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)  # 2 keyframe ranges, 2 scene ranges, film
        ranges = [(r.tags.get("dagster/asset_partition_range_start"), r.tags.get("dagster/asset_partition_range_end")) for r in runs]
        assert ranges.count(("one", "two")) == 2 and ranges.count(("three", "three")) == 2
        assert instance.get_materialized_partitions(dg.AssetKey(["tiny_tale", "upscaled"])) == {"one", "two", "three"}


def _story(tmp_path, transitions: list[str]):
    """A prompt-only story whose scenes s1.. end with ``transitions`` (the last scene's is unused)."""
    from tests.conftest import write_story
    from wan_pipeline.story import load_story

    scenes = [{"id": f"s{i + 1}", "prompt": f"shot {i + 1}", "duration_s": 1.0, "transition": t} for i, t in enumerate(transitions)]
    return load_story(write_story(tmp_path, scenes, story_id="cuts"))


def test_scene_ranges_end_at_a_nearby_cut_so_no_keyframe_phase_is_needed(tmp_path):
    from assets.launch import plan_parallel, split_at_cuts
    from wan_pipeline.stages import STAGES

    alternating = _story(tmp_path, ["handoff", "cut"] * 4)  # s2, s4, s6, s8 end with a cut
    assert split_at_cuts(alternating, 2) == [("s1", "s4"), ("s5", "s8")]
    phases = plan_parallel(alternating, 2)
    assert [[r.label for r in phase] for phase in phases] == [["scenes s1..s4", "scenes s5..s8"], ["film"]]
    assert phases[0][0].stages == tuple(STAGES.scene_stages())  # every per-scene stage in one run per range
    # the balanced boundary (after s4) hands off; the cut after s3 is a quarter range away
    shifted = _story(tmp_path, ["handoff", "handoff", "cut"] + ["handoff"] * 5)
    assert split_at_cuts(shifted, 2) == [("s1", "s3"), ("s4", "s8")] and len(plan_parallel(shifted, 2)) == 2
    # no cut near the boundary: the keyframes of every range first, then the rest, then the film
    handoffs = _story(tmp_path, ["handoff"] * 8)
    assert split_at_cuts(handoffs, 2) == [("s1", "s4"), ("s5", "s8")]
    phases = plan_parallel(handoffs, 2)
    assert [[r.label for r in phase] for phase in phases] == [
        ["keyframe s1..s4", "keyframe s5..s8"],
        ["scenes s1..s4", "scenes s5..s8"],
        ["film"],
    ]
    assert split_at_cuts(handoffs, 8) == [(f"s{i}", f"s{i}") for i in range(1, 9)]  # never an empty range


def test_ranges_that_end_at_a_cut_render_in_one_run_each(workspace, capsys, monkeypatch):
    """Scene two (the end of the range one..two) ends with a cut: each range renders all its stages
    in one run (no keyframe phase), the two runs side by side, and the film is complete."""
    import yaml

    assert yaml.safe_load(workspace["story"].read_text())["scenes"][1]["transition"] == "cut"
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu,cpu")
    assert main(["render", str(workspace["story"]), "--preset", "small"]) == 0
    film = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert probe_video(film).frames == 3 * 8 * 2 + 1
    records = [json.loads(p.read_text()) for p in (workspace["storage"] / "outputs" / "tiny_tale" / "small").glob("*/*.json")]
    assert len(records) == 3 * 4 and {r["device_slot"] for r in records} == {0, 1}
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        runs = instance.get_runs()
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)  # 2 scene ranges, film
        ranges = sorted(
            (r.tags.get("dagster/asset_partition_range_start", ""), r.tags.get("dagster/asset_partition_range_end", "")) for r in runs
        )
        assert ranges == [("", ""), ("one", "two"), ("three", "three")]


def test_a_render_killed_mid_stage_frees_its_slots_and_the_next_render_completes(workspace, capsys, monkeypatch):
    """The launcher and its worker processes die (SIGKILL, a machine lost) while scene stages run:
    the slot locks go with the processes, recovery marks the runs failed and frees their pool
    slots, and the next render completes the film."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from assets.recovery import recover_killed_runs
    from wan_pipeline.device_lock import lease_slot
    from wan_pipeline.storage import StorageLayout

    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu,cpu")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "wan_pipeline.cli", "render", str(workspace["story"]), "--preset", "small"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    story_dir = workspace["storage"] / "outputs" / "tiny_tale" / "small"  # the take
    deadline = time.monotonic() + 240
    while not list(story_dir.glob("*/clip.mp4")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the render ended before a clip was written: nothing to kill"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its worker processes
    proc.wait(10)
    assert not (story_dir / "film.mp4").exists()
    with lease_slot(StorageLayout(workspace["storage"]).machine_locks(), ("cpu", "cpu"), timeout_s=3) as a:
        with lease_slot(StorageLayout(workspace["storage"]).machine_locks(), ("cpu", "cpu"), timeout_s=3) as b:
            assert {a.slot, b.slot} == {0, 1}  # both slot locks were freed by the OS
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        recovered = recover_killed_runs(instance)
        assert recovered  # the killed runs were STARTED; now failed
        assert all(instance.get_run_by_id(r.run_id).status == dg.DagsterRunStatus.FAILURE for r in recovered)
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots  # pool slots freed
    assert main(["render", str(workspace["story"]), "--preset", "small"]) == 0
    film = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert probe_video(film).frames == 3 * 8 * 2 + 1
