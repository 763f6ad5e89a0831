"""Story files: every bad case is rejected with file, field path and what is allowed."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.conftest import IMAGES, write_story
from wan_pipeline.cli import main
from wan_pipeline.errors import InputError
from wan_pipeline.story import load_story


def _story(tmp_path, **scene_overrides):
    scene = {"id": "dawn", "prompt": "a lighthouse", "duration_s": 2.0, "keyframe": {"image": "images/rocket.jpg"}}
    scene.update(scene_overrides)
    return write_story(tmp_path, [scene, {"id": "dusk", "prompt": "night", "duration_s": 1.0}], preset="preview")


def _error(path) -> str:
    with pytest.raises(InputError) as exc:
        load_story(path)
    return str(exc.value)


def test_valid_story_loads_with_defaults(tmp_path):
    story = load_story(_story(tmp_path))
    assert story.scene_ids == ["dawn", "dusk"]
    dusk = story.scene("dusk")
    assert dusk.camera == "static" and dusk.transition == "handoff" and dusk.keyframe is None
    assert story.handoff_target("dawn").id == "dusk" and story.handoff_target("dusk") is None
    assert story.image_path(story.scene("dawn")) == (tmp_path / "images" / "rocket.jpg").resolve()
    # a derived seed is stable and differs between scenes
    assert story.seed(dusk) == load_story(_story(tmp_path)).seed(dusk) != story.seed(story.scene("dawn"))


def test_unknown_field_names_path_and_allowed_fields(tmp_path):
    msg = _error(_story(tmp_path, camra="zoom_in"))
    assert "scenes[0].camra" in msg and "unknown field" in msg and "camera" in msg and str(tmp_path) in msg


def test_unknown_nested_field(tmp_path):
    msg = _error(_story(tmp_path, keyframe={"image": "images/rocket.jpg", "strength": 1}))
    assert "scenes[0].keyframe.strength" in msg and "image" in msg and "prompt" in msg


def test_duplicate_scene_ids(tmp_path):
    path = write_story(tmp_path, [{"id": "a", "prompt": "x", "duration_s": 1}, {"id": "a", "prompt": "y", "duration_s": 1}])
    msg = _error(path)
    assert "scenes" in msg and "'a'" in msg and "unique" in msg


def test_missing_image(tmp_path):
    msg = _error(_story(tmp_path, keyframe={"image": "images/nope.png"}))
    assert "scenes[0].keyframe" in msg and "nope.png" in msg and "not found" in msg


def test_image_outside_story_folder(tmp_path):
    inner = tmp_path / "story"
    path = _story(inner, keyframe={"image": "../outside.png"})
    shutil.copyfile(IMAGES / "coffee.png", tmp_path / "outside.png")
    msg = _error(path)
    assert "scenes[0].keyframe" in msg and "outside the story's folder" in msg


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(tmp_path, prompt):
    msg = _error(_story(tmp_path, prompt=prompt))
    assert "scenes[0].prompt" in msg and "empty" in msg


@pytest.mark.parametrize("duration", [0, -1.5])
def test_non_positive_duration(tmp_path, duration):
    msg = _error(_story(tmp_path, duration_s=duration))
    assert "scenes[0].duration_s" in msg and "greater than 0" in msg


def test_bad_enum_lists_allowed_values(tmp_path):
    msg = _error(_story(tmp_path, camera="dolly", transition="wipe"))
    assert "scenes[0].camera" in msg and "zoom_in" in msg and "pan_down" in msg
    assert "scenes[0].transition" in msg and "'handoff'" in msg and "'cut'" in msg


def test_bad_ids(tmp_path):
    path = write_story(tmp_path, [{"id": "Scene 1", "prompt": "x", "duration_s": 1}], story_id="ok")
    assert "scenes[0].id" in _error(path)


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nscenes:\n  - id: a\n    prompt: [unclosed\n    duration_s: 1\n")
    msg = _error(path)
    assert str(path) in msg and "YAML syntax error" in msg and "line " in msg and "column " in msg


def test_json_story_and_json_syntax_error(tmp_path):
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"id": "js", "scenes": [{"id": "a", "prompt": "p", "duration_s": 1}]}))
    assert load_story(good).scene_ids == ["a"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "js",\n "scenes": [}\n')
    msg = _error(bad)
    assert "JSON syntax error at line 2, column" in msg


def test_validate_command_exit_codes_and_no_traceback(tmp_path, capsys):
    good = _story(tmp_path / "good")
    assert main(["validate", str(good)]) == 0
    assert "ok:" in capsys.readouterr().out
    bad = _story(tmp_path / "bad", duration_s=0, prompt="")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "scenes[0].duration_s" in err and "scenes[0].prompt" in err and "Traceback" not in err


def test_validate_rejects_unknown_preset(tmp_path, capsys):
    path = write_story(tmp_path, [{"id": "a", "prompt": "p", "duration_s": 1}], preset="nonexistent")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no preset named 'nonexistent'" in err and "preview" in err


def test_demo_story_is_valid_and_uses_both_transitions():
    from tests.conftest import REPO

    story = load_story(REPO / "stories" / "launch_day.yaml")
    assert len(story.scenes) >= 4
    assert {s.transition for s in story.scenes[:-1]} == {"handoff", "cut"}
    assert all(story.image_path(s) and story.image_path(s).is_file() for s in story.scenes)
    assert yaml.safe_load((REPO / "stories" / "launch_day.yaml").read_text())["preset"] == "preview"
