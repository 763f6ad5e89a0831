"""A 3-scene story materialized through Dagster on a temporary instance, end to end."""

from __future__ import annotations

import json
from fractions import Fraction

import dagster as dg
import numpy as np
import pytest

from assets.story_assets import build_story_assets
from resources import default_resources
from tests.conftest import dagster_test_instance
from wan_pipeline.media import probe_video, read_image, read_video
from wan_pipeline.previews import ANIM_MAX_WIDTH
from wan_pipeline.story import load_story
from wan_pipeline.telemetry import CONTRACT_KEYS

STAGES = ("keyframe", "clip", "interpolated", "upscaled")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    from tests.conftest import write_preset, write_story

    root = tmp_path_factory.mktemp("render")
    write_preset(root / "workflows")
    story = load_story(write_story(root / "stories"))
    storage = root / "storage"
    mp.setenv("WAN_PIPELINE_WORKFLOWS", str(root / "workflows"))
    mp.setenv("WAN_PIPELINE_STORAGE", str(storage))
    assets = build_story_assets(story)
    with dagster_test_instance() as instance:
        per_scene = dg.AssetSelection.groups(story.id) - dg.AssetSelection.assets([story.id, "film"])
        tags = {"dagster/asset_partition_range_start": story.scene_ids[0], "dagster/asset_partition_range_end": story.scene_ids[-1]}
        r1 = dg.materialize(assets, selection=per_scene, instance=instance, resources=default_resources(), tags=tags)
        r2 = dg.materialize(
            assets, selection=dg.AssetSelection.assets([story.id, "film"]), instance=instance, resources=default_resources()
        )
        events = {}
        for stage in STAGES + ("film",):
            key = dg.AssetKey([story.id, stage])
            records = instance.fetch_materializations(key, limit=100).records
            events[stage] = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
        yield {"story": story, "storage": storage, "events": events, "ok": (r1.success, r2.success)}
    mp.undo()


def test_runs_succeed_and_every_partition_is_materialized(rendered):
    assert rendered["ok"] == (True, True)
    for stage in STAGES:
        assert sorted(rendered["events"][stage]) == sorted(rendered["story"].scene_ids), stage
    assert list(rendered["events"]["film"]) == [None]


def test_every_partition_carries_the_telemetry_contract(rendered):
    for stage in STAGES:
        for scene, meta in rendered["events"][stage].items():
            missing = [k for k in CONTRACT_KEYS if k not in meta]
            assert not missing, (stage, scene, missing)
            assert meta["stage"].value == stage and meta["device"].value == "cpu"
            assert meta["peak_vram_mb"].value is None and meta["device_vram_used_mb"].value is None  # CPU: null
            assert meta["peak_rss_mb"].value > 50 and meta["duration_s"].value > 0 and meta["gpu_wait_s"].value >= 0
            path = meta["path"].value
            assert path.startswith(str(rendered["storage"])) and path.endswith(("keyframe.png", ".mp4"))
    clip_meta = rendered["events"]["clip"]
    assert clip_meta["one"]["flf2v"].value is True and clip_meta["two"]["flf2v"].value is False  # handoff vs cut
    assert rendered["events"]["interpolated"]["one"]["interp_factor"].value == 2.0
    assert rendered["events"]["upscaled"]["one"]["upscale_factor"].value == 2.0


def test_measured_figures_match_the_files(rendered):
    story, storage = rendered["story"], rendered["storage"]
    for scene in story.scene_ids:
        meta = rendered["events"]["upscaled"][scene]
        info = probe_video(meta["path"].value)
        assert (meta["frames"].value, meta["fps"].value, meta["width"].value, meta["height"].value) == (
            info.frames,
            float(info.fps),
            info.width,
            info.height,
        )
        # 1 s at 8 fps → 9 frames; ×2 → 17 frames at 16 fps; ×2 size → 192x128
        assert (info.frames, info.fps, info.width, info.height) == (17, Fraction(16), 192, 128)
        sidecar = json.loads((storage / "outputs" / story.id / "small" / scene / "upscaled.json").read_text())
        assert sidecar["frames"] == 17 and sidecar["path"] == meta["path"].value


def test_handoff_clip_ends_on_next_keyframe_on_disk(rendered):
    out = rendered["storage"] / "outputs" / rendered["story"].id / "small"
    clip = read_video(out / "one" / "clip.mp4")
    nxt = read_image(out / "two" / "keyframe.png")
    assert np.abs(clip.frames[-1].astype(float) - nxt).mean() <= 1.0


def test_film_duration_fps_and_run_summary(rendered):
    story, storage = rendered["story"], rendered["storage"]
    meta = rendered["events"]["film"][None]
    info = probe_video(storage / "outputs" / story.id / "small" / "film.mp4")
    total = sum(s.duration_s for s in story.scenes)
    assert info.fps == Fraction(16) and (info.width, info.height) == (192, 128) and info.pix_fmt == "yuv420p"
    assert abs(info.frames - total * 16) <= len(story.scenes)  # within one frame per scene
    assert meta["frames"].value == info.frames and meta["seam_frames"].value == 8  # one cut
    rows = json.loads((storage / "outputs" / story.id / "small" / "run-summary.json").read_text())
    assert len(rows) == 3 * 4 + 1
    assert {(r["stage"], r["scene"]) for r in rows} == {(st, sc) for st in STAGES for sc in story.scene_ids} | {("film", None)}
    for row in rows:
        assert all(k in row for k in CONTRACT_KEYS) and row["path"].startswith("/")


def _decoded_animation(markdown: str):
    import base64
    import io
    import re

    from PIL import Image

    match = re.search(r"^!\[.*\]\(data:(image/(?:webp|gif));base64,([A-Za-z0-9+/=]+)\)$", markdown)
    assert match, markdown[:80]
    data = base64.b64decode(match.group(2))
    return match.group(1), len(data), Image.open(io.BytesIO(data))


def test_every_video_materialization_plays_an_animated_preview_of_its_take(rendered):
    story, events = rendered["story"], rendered["events"]
    for stage in ("clip", "interpolated", "upscaled", "film"):
        for scene, meta in events[stage].items():
            assert meta["take"].value == "small" and meta["preset"].value == "small", (stage, scene)
            mime, size, image = _decoded_animation(meta["animation"].value)
            assert mime == "image/webp" and size <= 2_000_000 and image.width <= ANIM_MAX_WIDTH
            # a 1 s scene at 6 preview frames/s: 7 frames (the WebP encoder merges a static camera's
            # identical frames into one); the film samples each of its 3 scenes
            if scene is None:
                assert image.is_animated and image.n_frames >= len(story.scenes), (stage, image.n_frames)
            elif story.scene(scene).camera != "static":
                assert image.is_animated and image.n_frames == 7, (stage, scene, image.n_frames)
            assert image.size == (meta["width"].value, meta["height"].value)
            assert meta["animation_path"].path.endswith(f"/small/{scene + '/' if scene else ''}{stage}.anim.webp")
    assert "animation" not in events["keyframe"][story.scene_ids[0]]  # an image has its thumbnail only
