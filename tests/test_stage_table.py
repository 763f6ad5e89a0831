"""The stage table is the one declaration of a stage: a new per-scene stage is a row, an engine
class and a preset section — all in this module — and it renders through Dagster, shows up in the
fingerprint graph, the status and the report, with no other module touched."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
import yaml

from wan_pipeline.engines.base import Upscaler
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream, map_frames
from wan_pipeline.stages import STAGES, Stage


class NegativeGrade:
    """A trivial colour grade: the negative of every frame (a stage engine for this test)."""

    name = "negative"

    def __init__(self, params: dict, ctx):
        self.strength = float(params.get("strength", 1.0))

    def describe(self) -> dict:
        return {"engine": self.name, "model": None, "strength": self.strength}

    def grade(self, clip: Clip | FrameStream) -> Clip | FrameStream:
        return map_frames(clip, lambda frame: 255 - frame, {"graded": "negative"})


@pytest.fixture
def graded():
    row = STAGES.add(
        Stage(
            name="graded",
            reads=("upscaled",),
            per_scene=True,
            protocol=Upscaler,
            method="grade",
            output="graded.mp4",
            kind="video",
            telemetry=("graded",),
            engines={"negative": f"{__name__}:NegativeGrade"},
            work="wan_pipeline.stage_work:video_work",
            colour="#222222",
            description="The upscaled scene, colour graded.",
        )
    )
    yield row
    STAGES.remove("graded")
    assert "graded" not in STAGES


def test_the_table_refuses_duplicates_and_unknown_upstreams():
    with pytest.raises(ValueError, match="already in the stage table"):
        STAGES.add(STAGES["clip"])
    with pytest.raises(ValueError, match="not in the stage table"):
        STAGES.add(Stage("x", ("nothing",), True, Upscaler, "upscale", "x.mp4", "video", (), {}, "m:f"))


def test_a_new_per_scene_stage_renders_through_dagster(graded, workspace):
    from assets.story_assets import build_story_assets
    from resources import default_resources
    from wan_pipeline.fingerprint import affected_by_edit, downstream_partitions
    from wan_pipeline.media.video_io import read_video
    from wan_pipeline.report import report_rows
    from wan_pipeline.run_config import RunConfig
    from wan_pipeline.storage import StorageLayout
    from wan_pipeline.story import load_story

    preset_file = workspace["workflows"] / "small.yaml"
    data = yaml.safe_load(preset_file.read_text())
    data["stages"]["graded"] = {"engine": "negative"}  # the preset section
    preset_file.write_text(yaml.safe_dump(data))
    story = load_story(workspace["story"])
    config = RunConfig.resolve(story, "small", StorageLayout(workspace["storage"]))
    assets = build_story_assets(story)
    assert dg.AssetKey([story.id, "graded"]) in {a.key for a in assets}
    scene_stages = dg.AssetSelection.assets(*[[story.id, s] for s in STAGES.scene_stages()])
    tags = {**config.tags(), "dagster/asset_partition_range_start": "one", "dagster/asset_partition_range_end": "three"}
    with dg.instance_for_test() as instance:
        result = dg.materialize(assets, selection=scene_stages, instance=instance, resources=default_resources(), tags=tags)
        assert result.success
        records = instance.fetch_materializations(dg.AssetKey([story.id, "graded"]), limit=10).records
        meta = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
    assert set(meta) == {"one", "two", "three"}
    for scene in story.scene_ids:
        graded_frames = read_video(config.output("graded", scene)).frames
        upscaled = read_video(config.output("upscaled", scene)).frames
        assert graded_frames.shape == upscaled.shape and np.array_equal(graded_frames, 255 - upscaled)
        m = meta[scene]
        assert m["stage"].value == "graded" and m["engine"].value == "negative" and m["graded"].value == "negative"
        assert m["frames"].value == len(upscaled) and m["width"].value == upscaled.shape[2]
    # derived everywhere: the edit graph, the plan of an edit, the report
    assert ("graded", "two") in downstream_partitions(story, "upscaled", "two")
    assert affected_by_edit(story, ["two"]).scenes["graded"] == ("one", "two")  # one hands off to two
    assert {r["stage"] for r in report_rows(config.layout, story, config.take)} >= {"graded"}
