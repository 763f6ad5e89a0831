"""The `tiny` preset through Dagster: real diffusers Wan pipelines, RIFE and Real-ESRGAN on
random-weight miniatures, on CPU."""

from __future__ import annotations

import shutil
from fractions import Fraction

import dagster as dg
import numpy as np
import pytest

from assets.story_assets import build_story_assets
from resources import default_resources
from tests.conftest import REPO, write_story
from wan_pipeline.media import probe_video, read_video
from wan_pipeline.models.tiny import ensure_tiny_models
from wan_pipeline.story import load_story


@pytest.fixture(scope="module")
def tiny_render(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("tiny")
    (root / "workflows").mkdir()
    shutil.copyfile(REPO / "workflows" / "tiny.yaml", root / "workflows" / "tiny.yaml")
    scenes = [
        {"id": "one", "prompt": "a rocket", "duration_s": 0.5, "keyframe": {"image": "images/rocket.jpg"}, "transition": "handoff"},
        {"id": "two", "prompt": "an astronaut", "duration_s": 0.5, "transition": "cut"},  # text-to-image keyframe
        {"id": "three", "prompt": "a cat", "duration_s": 0.5, "keyframe": {"image": "images/chelsea.png"}},
    ]
    story = load_story(write_story(root / "stories", scenes, preset="tiny"))
    mp.setenv("WAN_PIPELINE_WORKFLOWS", str(root / "workflows"))
    mp.setenv("WAN_PIPELINE_STORAGE", str(root / "storage"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    ensure_tiny_models(root / "storage")  # the explicit step `render` takes for a preset of miniatures
    assets = build_story_assets(story)
    with dg.instance_for_test() as instance:
        tags = {"dagster/asset_partition_range_start": "one", "dagster/asset_partition_range_end": "three"}
        per_scene = dg.AssetSelection.assets(*[[story.id, s] for s in ("keyframe", "clip", "interpolated", "upscaled")])
        ok1 = dg.materialize(assets, selection=per_scene, instance=instance, resources=default_resources(), tags=tags).success
        ok2 = dg.materialize(
            assets, selection=dg.AssetSelection.assets([story.id, "film"]), instance=instance, resources=default_resources()
        ).success
        meta = {}
        for stage in ("keyframe", "clip", "interpolated", "upscaled", "film"):
            for r in instance.fetch_materializations(dg.AssetKey([story.id, stage]), limit=10).records:
                meta[(stage, r.asset_materialization.partition)] = {k: v.value for k, v in r.asset_materialization.metadata.items()}
        yield {"ok": (ok1, ok2), "meta": meta, "out": root / "storage" / "outputs" / story.id / "tiny"}
    mp.undo()


def test_tiny_story_renders_through_the_model_engines(tiny_render):
    assert tiny_render["ok"] == (True, True)
    m = tiny_render["meta"]
    assert m[("keyframe", "two")]["engine"] == "diffusers_t2i" and m[("keyframe", "two")]["source"] == "text-to-image"
    for scene in ("one", "two", "three"):
        clip = m[("clip", scene)]
        assert clip["engine"] == "wan_i2v" and clip["variant"] == "Wan2.1-FLF2V-miniature" and clip["memory_strategy"] == "cpu"
        assert clip["frames"] == 9 and clip["fps"] == 16.0 and (clip["width"], clip["height"]) == (64, 64)  # 0.5 s at 16 fps: 4k+1
        assert m[("interpolated", scene)]["engine"] == "rife" and m[("interpolated", scene)]["frames"] == 17
        up = m[("upscaled", scene)]
        assert up["engine"] == "realesrgan" and (up["width"], up["height"]) == (256, 256) and up["upscale_factor"] == 4.0
    assert m[("clip", "one")]["flf2v"] is True  # handoff: last frame conditioned on keyframe[two]
    assert m[("clip", "two")]["flf2v"] is False and m[("clip", "three")]["flf2v"] is False


def test_tiny_film_joins_with_vace_and_keeps_duration(tiny_render):
    film = tiny_render["meta"][("film", None)]
    assert film["engine"] == "wan_vace" and film["variant"] == "Wan2.1-VACE-miniature" and film["seams"] >= 1
    info = probe_video(tiny_render["out"] / "film.mp4")
    assert info.fps == Fraction(32) and (info.width, info.height) == (256, 256)
    assert abs(info.frames - 1.5 * 32) <= 3  # sum of durations within one frame per scene
    frames = read_video(tiny_render["out"] / "film.mp4").frames
    assert frames.std() > 5  # not a blank film
    assert np.isfinite(frames.astype(float)).all()
