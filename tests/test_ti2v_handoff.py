"""A TI2V handoff through Dagster: the clip asset records the engine's ``flf2v`` (false: TI2V has
no last-frame conditioning in diffusers), and the seam check says why it skips that seam."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from assets.checks import check_seams
from assets.story_assets import build_story_assets
from resources import default_resources
from tests.conftest import REPO, write_story
from wan_pipeline.preset import load_preset
from wan_pipeline.storage import StorageLayout
from wan_pipeline.story import load_story
from wan_pipeline.telemetry import read_sidecar


def test_ti2v_handoff_is_recorded_without_flf2v_and_its_seam_check_says_why(tmp_path):
    mp = pytest.MonkeyPatch()
    (tmp_path / "workflows").mkdir()
    preset = yaml.safe_load((REPO / "workflows" / "tiny.yaml").read_text())
    preset["stages"]["keyframe"] = {"engine": "image_or_procedural"}
    preset["stages"]["clip"].update(model="models/tiny/wan22-ti2v", max_frames=17)
    (tmp_path / "workflows" / "tiny.yaml").write_text(yaml.safe_dump(preset))
    scenes = [
        {"id": "one", "prompt": "a rocket", "duration_s": 0.5, "keyframe": {"image": "images/rocket.jpg"}, "transition": "handoff"},
        {"id": "two", "prompt": "a cat", "duration_s": 0.5, "keyframe": {"image": "images/chelsea.png"}},
    ]
    story = load_story(write_story(tmp_path / "stories", scenes, preset="tiny"))
    mp.setenv("WAN_PIPELINE_WORKFLOWS", str(tmp_path / "workflows"))
    mp.setenv("WAN_PIPELINE_STORAGE", str(tmp_path / "storage"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        from wan_pipeline.models.tiny import ensure_tiny_models

        ensure_tiny_models(tmp_path / "storage")  # the run checks every stage from the keyframe on
        assets = build_story_assets(story)
        selection = dg.AssetSelection.assets([story.id, "scene_spec"], [story.id, "keyframe"], [story.id, "clip"])
        tags = {"dagster/asset_partition_range_start": "one", "dagster/asset_partition_range_end": "two"}
        with dg.instance_for_test() as instance:
            result = dg.materialize(assets, selection=selection, instance=instance, resources=default_resources(), tags=tags)
        assert result.success
        layout = StorageLayout.default()
        record = read_sidecar(layout.output(story.id, "one", "clip", take="tiny"))
        assert record["flf2v"] is False and record["handoff_to"] == "two"
        assert any("TI2V" in w for w in record["warnings"])
        seams = check_seams(story, load_preset("tiny"), layout, "tiny")
        assert seams.passed and seams.rows[0]["skipped"].startswith("skipped: clip one was rendered without two's keyframe")
    finally:
        mp.undo()
