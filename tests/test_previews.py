"""Previews: thumbnails, contact sheets, their size budget, and what a stage materialization shows."""

from __future__ import annotations

import base64
import io
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import read_image
from wan_pipeline.media.video_io import write_video
from wan_pipeline.previews import (
    MAX_PREVIEW_BYTES,
    SHEET_GAP,
    contact_sheet,
    encode_jpeg,
    markdown_image,
    preview_path,
    read_frames,
    sample_indices,
    thumbnail,
    write_preview,
)

PHOTOS = Path(__file__).resolve().parent.parent / "stories" / "images"


def _decode_markdown_jpeg(markdown: str) -> Image.Image:
    m = re.search(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert m, markdown[:200]
    img = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    assert img.format == "JPEG"
    return img


def _coloured_clip(n: int, h: int = 64, w: int = 96) -> Clip:
    """Frame i is a flat grey of level 10 + 14·i, so a tile's colour tells which frame it shows."""
    frames = np.stack([np.full((h, w, 3), 10 + 14 * i, np.uint8) for i in range(n)])
    return Clip(frames, Fraction(16))


def test_thumbnail_of_a_real_photo_keeps_aspect_and_longest_side():
    photo = read_image(PHOTOS / "astronaut.png")
    thumb = thumbnail(photo, max_side=160)
    assert max(thumb.shape[:2]) == 160
    assert thumb.dtype == np.uint8 and thumb.shape[2] == 3
    assert abs(thumb.shape[1] / thumb.shape[0] - photo.shape[1] / photo.shape[0]) < 0.02
    small = photo[:50, :40]
    assert thumbnail(small, max_side=160).shape == small.shape  # never upscaled


def test_sample_indices_spread_first_to_last():
    assert sample_indices(33, 6) == [0, 6, 13, 19, 26, 32]
    assert sample_indices(4, 6) == [0, 1, 2, 3]
    assert sample_indices(0, 6) == []


def test_contact_sheet_tiles_frames_in_order(tmp_path):
    clip = _coloured_clip(17)
    path = write_video(tmp_path / "clip.mp4", clip, lossless=True).path
    frames, idx = read_frames(path, n=6)
    assert idx == sample_indices(17, 6) and frames.shape == (6, 64, 96, 3)
    sheet = contact_sheet(frames, columns=3, tile_width=48, gap=SHEET_GAP)
    th = 32  # 64 · 48 / 96
    assert sheet.shape == (2 * th + 3 * SHEET_GAP, 3 * 48 + 4 * SHEET_GAP, 3)
    for k, i in enumerate(idx):
        r, c = divmod(k, 3)
        y, x = SHEET_GAP + r * (th + SHEET_GAP) + th // 2, SHEET_GAP + c * (48 + SHEET_GAP) + 24
        assert abs(int(sheet[y, x, 0]) - (10 + 14 * i)) <= 3, (k, i, sheet[y, x])


def test_write_preview_beside_the_output_and_under_budget(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (240, 416, 3), dtype=np.uint8)
    clip = Clip(np.stack([noise] * 9), Fraction(16))
    video = write_video(tmp_path / "upscaled.mp4", clip, lossless=True).path
    target, jpeg = write_preview(video)
    assert target == tmp_path / "upscaled.sheet.jpg" and target.read_bytes() == jpeg
    assert len(jpeg) <= MAX_PREVIEW_BYTES
    assert Image.open(target).size[0] > 100
    png = tmp_path / "keyframe.png"
    Image.fromarray(read_image(PHOTOS / "coffee.png")).save(png)
    thumb, _ = write_preview(png)
    assert thumb == preview_path(png) == tmp_path / "keyframe.thumb.jpg"
    assert max(Image.open(thumb).size) == 320


def test_encode_jpeg_shrinks_until_it_fits():
    noise = np.random.default_rng(1).integers(0, 256, (800, 800, 3), dtype=np.uint8)
    jpeg = encode_jpeg(noise, max_bytes=20_000)
    assert len(jpeg) <= 20_000
    assert Image.open(io.BytesIO(jpeg)).size[0] < 800
    assert _decode_markdown_jpeg(markdown_image(jpeg)).size == Image.open(io.BytesIO(jpeg)).size


@pytest.fixture(scope="module")
def rendered_commander(tmp_path_factory):
    """keyframe and clip of scene `commander` (a cut: no handoff target) materialized through
    Dagster on a small copy of the demo story; returns (materializations by stage, storage)."""
    import os

    import dagster as dg

    from tests.small_story import make_small_project

    env = make_small_project(tmp_path_factory.mktemp("proj"), duration_s=0.5, width=128, height=80)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from assets.definitions import load_stories
        from assets.story_assets import build_story_assets
        from resources import default_resources

        (story,), _ = load_stories()
        assets = build_story_assets(story)
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                assets,
                selection=dg.AssetSelection.assets(["launch_day", "keyframe"], ["launch_day", "clip"]),
                partition_key="commander",
                instance=instance,
                resources=default_resources(),
            )
            assert result.success
            mats = {
                m.asset_key.path[-1]: m
                for m in result.asset_materializations_for_node("launch_day__keyframe")
                + result.asset_materializations_for_node("launch_day__clip")
            }
        yield mats, Path(env["WAN_PIPELINE_STORAGE"])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_stage_materialization_shows_preview_table_and_path(rendered_commander):
    import dagster as dg

    from wan_pipeline.telemetry import CONTRACT_KEYS

    mats, storage = rendered_commander
    clip = mats["clip"].metadata
    sheet = _decode_markdown_jpeg(clip["preview"].value)
    on_disk = Image.open(storage / "outputs" / "launch_day" / "preview" / "commander" / "clip.sheet.jpg")
    assert sheet.size == on_disk.size
    assert sheet.size == (3 * 128 + 4 * SHEET_GAP, 2 * 80 + 3 * SHEET_GAP)  # 6 tiles of 128×80
    assert len(clip["preview"].value) < 100_000
    table = clip["telemetry"]
    assert isinstance(table, dg.TableMetadataValue)
    keys = [r.data["key"] for r in table.records]
    assert [k for k in keys if k in CONTRACT_KEYS] == [k for k in CONTRACT_KEYS if k != "path"]
    by_key = {r.data["key"]: r.data for r in table.records}
    assert by_key["frames"]["value"] == str(clip["frames"].value) and by_key["width"]["value"] == "128"
    assert by_key["duration_s"]["unit"] == "s" and by_key["preset"]["value"] == "preview"
    assert by_key["engine"]["value"] == "camera_motion"
    assert isinstance(clip["path"], dg.PathMetadataValue) and Path(clip["path"].path).is_file()
    for key in CONTRACT_KEYS:
        assert key in clip, key

    key = mats["keyframe"].metadata
    thumb = _decode_markdown_jpeg(key["preview"].value)
    assert thumb.size == (128, 80)  # smaller than the thumbnail side: kept as is
    assert (storage / "outputs" / "launch_day" / "preview" / "commander" / "keyframe.thumb.jpg").is_file()
