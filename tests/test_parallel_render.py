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
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu,cpu")
    assert main(["render", str(workspace["story"]), "--preset", "small"]) == 0
    out, err = capsys.readouterr()
    film = Path(out.strip().splitlines()[-1])
    assert probe_video(film).frames == 3 * 8 * 2 + 1  # the whole film, every scene
    assert "clip[three]" in err and "upscaled[one]" in err  # progress from the worker processes reached the console
    assert "default_limit: 2" in (workspace["storage"] / "dagster.yaml").read_text()  # the gpu pool = two slots
    story_dir = workspace["storage"] / "outputs" / "tiny_tale"
    records = [json.loads(p.read_text()) for p in story_dir.glob("*/*.json")]
    assert len(records) == 3 * 4
    spans = {(r["stage"], r["scene"]): (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in records}
    for slot in (0, 1):  # never two stages on one slot
        mine = sorted(spans[(r["stage"], r["scene"])] for r in records if r["device_slot"] == slot)
        assert all(b[0] >= a[1] for a, b in zip(mine, mine[1:]))
    assert spans[("clip", "one")][0] >= spans[("keyframe", "two")][1]  # FLF2V: scene one's clip ends on scene two's keyframe
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        runs = instance.get_runs()
        assert len(runs) == 5 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)  # 2 keyframe ranges, 2 scene ranges, film
        ranges = [(r.tags.get("dagster/asset_partition_range_start"), r.tags.get("dagster/asset_partition_range_end")) for r in runs]
        assert ranges.count(("one", "two")) == 2 and ranges.count(("three", "three")) == 2
        assert instance.get_materialized_partitions(dg.AssetKey(["tiny_tale", "upscaled"])) == {"one", "two", "three"}
