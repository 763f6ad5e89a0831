"""The `tiny-fast` preset through Dagster: the speed levers (fused distill-format LoRA, 4 steps,
guidance 1.0, first-block cache, fp8 weight storage) on the miniatures, with the lever telemetry
on every model-stage materialization."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from assets.story_assets import build_story_assets
from resources import default_resources
from tests.conftest import REPO, write_story
from wan_pipeline.models.tiny import make_all_tiny_models
from wan_pipeline.story import load_story


@pytest.fixture(scope="module")
def fast_render(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("tiny_fast")
    (root / "workflows").mkdir()
    shutil.copyfile(REPO / "workflows" / "tiny-fast.yaml", root / "workflows" / "tiny-fast.yaml")
    make_all_tiny_models(root / "storage" / "models" / "tiny")  # checkpoints and the distill LoRA, written explicitly
    scenes = [
        {"id": "one", "prompt": "a rocket", "duration_s": 0.5, "keyframe": {"image": "images/rocket.jpg"}, "transition": "handoff"},
        {"id": "two", "prompt": "an astronaut", "duration_s": 0.5, "transition": "cut"},  # text-to-image keyframe
        {"id": "three", "prompt": "a cat", "duration_s": 0.5, "keyframe": {"image": "images/chelsea.png"}},
    ]
    story = load_story(write_story(root / "stories", scenes, preset="tiny-fast"))
    mp.setenv("WAN_PIPELINE_WORKFLOWS", str(root / "workflows"))
    mp.setenv("WAN_PIPELINE_STORAGE", str(root / "storage"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    assets = build_story_assets(story)
    with dg.instance_for_test() as instance:
        tags = {"dagster/asset_partition_range_start": "one", "dagster/asset_partition_range_end": "three"}
        per_scene = dg.AssetSelection.groups(story.id) - dg.AssetSelection.assets([story.id, "film"])
        ok1 = dg.materialize(assets, selection=per_scene, instance=instance, resources=default_resources(), tags=tags).success
        ok2 = dg.materialize(
            assets, selection=dg.AssetSelection.assets([story.id, "film"]), instance=instance, resources=default_resources()
        ).success
        meta = {}
        for stage in ("keyframe", "clip", "film"):
            for r in instance.fetch_materializations(dg.AssetKey([story.id, stage]), limit=10).records:
                meta[(stage, r.asset_materialization.partition)] = {k: v.value for k, v in r.asset_materialization.metadata.items()}
        yield {"ok": (ok1, ok2), "meta": meta}
    mp.undo()


def test_every_clip_carries_the_lever_telemetry(fast_render):
    assert fast_render["ok"] == (True, True)
    m = fast_render["meta"]
    for scene in ("one", "two", "three"):
        clip = m[("clip", scene)]
        assert clip["engine"] == "wan_i2v" and clip["frames"] == 9 and clip["segments"] == 1
        assert clip["steps"] == 4 and clip["guidance_scale"] == 1.0 and clip["cache"] == "first_block"
        assert clip["cache_params"] == {"threshold": 0.1}
        # guidance 1.0: one transformer pass per step; the cache may skip blocks after the first step
        assert clip["transformer_forward_calls"] == 4 and clip["transformer_blocks_total"] == 8
        assert 4 <= clip["transformer_blocks_run"] <= 8
        assert clip["storage_dtype"] == "float8_e4m3fn" and clip["attention_backend"] == "default" and clip["compile"] == "none"
        assert clip["preset_loras"][0]["path"] == "models/tiny/loras/wan21-i2v-distill-4step.safetensors"
        assert clip["preset_loras"][0]["into"] == ["transformer"]
        assert 0 < clip["planned_vram_mib"] <= clip["planned_vram_plain_mib"]
    assert m[("clip", "one")]["flf2v"] is True


def test_keyframe_and_film_record_their_levers(fast_render):
    m = fast_render["meta"]
    t2i = m[("keyframe", "two")]
    assert t2i["source"] == "text-to-image" and t2i["cache"] == "first_block" and t2i["storage_dtype"] == "float8_e4m3fn"
    assert t2i["transformer_forward_calls"] == 4
    film = m[("film", None)]
    assert film["engine"] == "wan_vace" and film["seams"] >= 1 and film["cache"] == "first_block"
    assert film["storage_dtype"] == "float8_e4m3fn" and film["transformer_forward_calls"] == 4 * film["seams"]
