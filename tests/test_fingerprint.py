"""Scene fingerprints and the pure "what an edit affects" graph walk."""

import shutil

from tests.automation_helpers import SCENES, edit_scene, make_env, write_story
from wan_pipeline.fingerprint import affected_by_edit, current_fingerprints, downstream_closure, structure
from wan_pipeline.story import load_story


def fps(path):
    return current_fingerprints(load_story(path))


def test_prompt_edit_changes_only_that_scene(tmp_path, monkeypatch):
    path = make_env(tmp_path, monkeypatch)
    before = fps(path)
    edit_scene(path, "s2", prompt="an astronaut waving")
    after = fps(path)
    assert [s for s in after if after[s] != before[s]] == ["s2"]


def test_title_and_comment_change_nothing(tmp_path, monkeypatch):
    path = make_env(tmp_path, monkeypatch)
    before = fps(path)
    write_story(path, SCENES, title="Another title", comment="a comment")
    assert fps(path) == before


def test_image_bytes_seed_duration_and_preset_change_fingerprints(tmp_path, monkeypatch):
    path = make_env(tmp_path, monkeypatch)
    before = fps(path)
    shutil.copy(tmp_path / "stories/images/chelsea.png", tmp_path / "stories/images/rocket.jpg")
    assert fps(path)["s1"] != before["s1"] and fps(path)["s2"] == before["s2"]
    edit_scene(path, "s3", seed=99)
    assert fps(path)["s3"] != before["s3"]
    mid = fps(path)
    preset = tmp_path / "workflows/tiny.yaml"
    preset.write_text(preset.read_text().replace("motion_strength: 0.12", "motion_strength: 0.2"))
    assert all(fps(path)[s] != mid[s] for s in mid)


def test_edit_affects_keyframe_clip_previous_handoff_clip_and_film(tmp_path, monkeypatch):
    story = load_story(make_env(tmp_path, monkeypatch))
    plan = affected_by_edit(story, ["s2"])  # s1 hands off to s2
    assert plan.scenes == {"keyframe": ("s2",), "clip": ("s1", "s2"), "interpolated": ("s1", "s2"), "upscaled": ("s1", "s2")}
    assert plan.film
    plan = affected_by_edit(story, ["s3"])  # s2 hands off to s3
    assert plan.scenes["keyframe"] == ("s3",) and plan.scenes["clip"] == ("s2", "s3")
    plan = affected_by_edit(story, ["s1"])  # first scene: no previous clip
    assert plan.scenes["clip"] == ("s1",) and plan.scenes["upscaled"] == ("s1",)
    tags = affected_by_edit(story, ["s2"]).tags(story.scene_ids)
    assert tags["dagster/asset_partition_range_start"] == "s1" and tags["dagster/asset_partition_range_end"] == "s2"
    assert tags["wan_pipeline/render/keyframe"] == "s2" and tags["wan_pipeline/render/clip"] == "s1,s2"
    assert affected_by_edit(story, []).empty


def test_cut_stops_the_walk(tmp_path, monkeypatch):
    scenes = [dict(s, transition="cut") for s in SCENES]
    story = load_story(make_env(tmp_path, monkeypatch, scenes))
    nodes = downstream_closure(story, [("keyframe", "s2")])
    assert nodes == {("keyframe", "s2"), ("clip", "s2"), ("interpolated", "s2"), ("upscaled", "s2"), ("film", None)}
    assert structure(story)[1] == ("s2", "cut")
