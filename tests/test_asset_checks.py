"""Asset checks pass on a good render and fail on planted bad clips (black frames, a seam jump)."""

import dagster as dg
import numpy as np
import pytest

from assets.checks import (
    check_black_frozen,
    check_film_duration,
    check_interpolated,
    check_seams,
    check_segment_colour,
    check_upscaled,
)
from assets.status import status_for
from tests.automation_helpers import make_env, render_all
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.video_io import read_video, write_video
from wan_pipeline.preset import load_preset
from wan_pipeline.storage import StorageLayout
from wan_pipeline.story import load_story


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("checks")
    mp = pytest.MonkeyPatch()
    path = make_env(tmp, mp)
    with dg.instance_for_test() as instance:
        result = render_all(instance, path)
        yield instance, load_story(path), StorageLayout.default(), result
    mp.undo()


def test_checks_pass_on_a_good_render(good):
    instance, story, layout, result = good
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {
        "seam_continuity",
        "no_black_or_frozen_frames",
        "segment_colour_shift",
        "fps_and_frame_count",
        "resolution",
        "duration",
    }
    assert all(e.passed for e in evaluations.values())
    seams = evaluations["seam_continuity"].metadata["scenes"].value
    assert [r["scene"] for r in seams] == ["s1", "s2"] and all(r["ssim"] > 0.99 for r in seams)
    preset = load_preset("tiny")
    for check in (check_interpolated, check_upscaled, check_film_duration):
        assert check(story, preset, layout, "tiny").passed


def test_black_clip_and_seam_jump_fail(good):
    instance, story, layout, _ = good
    preset = load_preset("tiny")
    clip2 = layout.output(story.id, "s2", "clip", take="tiny")
    original = read_video(clip2)
    try:
        black = Clip(np.zeros_like(original.frames), original.fps)
        write_video(clip2, black)
        outcome = check_black_frozen(story, preset, layout, "tiny")
        assert not outcome.passed and outcome.failed == ["s2"]
        seams = check_seams(story, preset, layout, "tiny")  # s1 → black s2 → s3: both handoff seams jump
        assert not seams.passed and seams.failed == ["s1", "s2"]
        # also through Dagster: the failed check shows in `status`
        from assets.checks import build_story_checks
        from assets.story_assets import build_story_assets
        from resources import default_resources

        res = dg.materialize(
            [*build_story_assets(story), *build_story_checks(story)],
            selection=dg.AssetSelection.checks_for_assets(dg.AssetKey([story.id, "clip"])),
            instance=instance,
            resources=default_resources(),
            raise_on_error=False,
        )
        failed = {e.check_name for e in res.get_asset_check_evaluations() if not e.passed}
        assert failed == {"seam_continuity", "no_black_or_frozen_frames"}
        rows = {(p.stage, p.scene): p for p in status_for(instance, story)}
        assert sorted(rows[("clip", "s2")].failed_checks) == ["no_black_or_frozen_frames", "seam_continuity"]
        assert rows[("clip", "s1")].failed_checks == ["seam_continuity"]
        assert rows[("clip", "s3")].failed_checks == []
    finally:
        write_video(clip2, original)
    # a jump with no black frames: s2 starts with an unrelated, shifted picture
    try:
        shifted = Clip(np.ascontiguousarray(255 - original.frames), original.fps)
        write_video(clip2, shifted)
        seams = check_seams(story, preset, layout, "tiny")
        assert not seams.passed and seams.failed == ["s1", "s2"]
        assert check_black_frozen(story, preset, layout, "tiny").passed
    finally:
        write_video(clip2, original)


def test_frame_count_and_duration_checks_fail_on_wrong_files(good):
    instance, story, layout, _ = good
    preset = load_preset("tiny")
    path = layout.output(story.id, "s3", "interpolated", take="tiny")
    original = read_video(path)
    try:
        write_video(path, Clip(original.frames[:-3], original.fps))
        out = check_interpolated(story, preset, layout, "tiny")
        assert not out.passed and out.failed == ["s3"]
    finally:
        write_video(path, original)
    film = layout.film(story.id, take="tiny")
    saved = read_video(film)
    try:
        write_video(film, Clip(saved.frames[: saved.num_frames // 2], saved.fps), lossless=False)
        assert not check_film_duration(story, preset, layout, "tiny").passed
    finally:
        write_video(film, saved, lossless=False)


def test_seam_check_says_why_it_skips_a_clip_without_flf2v(good):
    """A clip rendered without its end frame (TI2V: ``flf2v: false`` in its record) is not held to
    seam continuity; the check says so instead of failing on the jump."""
    import json

    from wan_pipeline.telemetry import sidecar_path

    instance, story, layout, _ = good
    preset = load_preset("tiny")
    clip2 = layout.output(story.id, "s2", "clip", take="tiny")
    side1 = sidecar_path(layout.output(story.id, "s1", "clip", take="tiny"))
    original, record = read_video(clip2), side1.read_text()
    try:
        side1.write_text(json.dumps({**json.loads(record), "flf2v": False}))
        write_video(clip2, Clip(np.ascontiguousarray(255 - original.frames), original.fps))
        seams = check_seams(story, preset, layout, "tiny")
        assert seams.failed == ["s2"]  # s2 (flf2v true) → s3 still jumps
        row = next(r for r in seams.rows if r["scene"] == "s1")
        assert row["ok"] and "flf2v false" in row["skipped"] and "s1: skipped" in seams.summary
    finally:
        write_video(clip2, original)
        side1.write_text(record)


def test_segment_colour_shift_is_bounded(good):
    """A long scene's recorded colour jump between segments passes within the preset's bound and
    fails above it; scenes rendered in one segment are not checked."""
    import json

    from wan_pipeline.telemetry import sidecar_path

    instance, story, layout, _ = good
    preset = load_preset("tiny")
    assert check_segment_colour(story, preset, layout, "tiny").rows == []  # 0.5 s scenes: one segment each
    side = sidecar_path(layout.output(story.id, "s2", "clip", take="tiny"))
    record = side.read_text()
    try:
        side.write_text(json.dumps({**json.loads(record), "segment_colour_shift": 1.5}))
        assert check_segment_colour(story, preset, layout, "tiny").passed
        side.write_text(json.dumps({**json.loads(record), "segment_colour_shift": 25.0}))
        out = check_segment_colour(story, preset, layout, "tiny")
        assert not out.passed and out.failed == ["s2"] and "25.0 levels" in out.summary
    finally:
        side.write_text(record)
