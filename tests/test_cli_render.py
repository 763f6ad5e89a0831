"""`wan-pipeline render` on a real (SQLite) instance: film path last, readable failures, --scenes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from tests.conftest import write_story
from wan_pipeline.cli import main
from wan_pipeline.media import probe_video


def test_render_prints_film_path_last_and_records_runs(workspace, capsys):
    assert main(["render", str(workspace["story"]), "--preset", "small"]) == 0
    out, err = capsys.readouterr()
    film = Path(out.strip().splitlines()[-1])
    assert film == workspace["storage"] / "outputs" / "tiny_tale" / "small" / "film.mp4" and film.is_file()
    assert probe_video(film).frames == 3 * 8 * 2 + 1
    for stage in ("keyframe[one]", "clip[three]", "interpolated[two]", "upscaled[one]", "film"):
        assert stage in err  # progress per stage and scene
    # the runs went to the storage root's instance, which was initialised with the project's dagster.yaml
    assert (workspace["storage"] / "dagster.yaml").read_text().count("default_limit: 1") == 1
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS  # a full render is one run
        assert runs[0].tags["wan_pipeline/preset_sha"] and '"name":"small"' in runs[0].tags["wan_pipeline/preset_config"]
        assert all(r.tags.get("wan_pipeline/preset") == "small" for r in runs)
        assert instance.get_materialized_partitions(dg.AssetKey(["tiny_tale", "upscaled"])) == {"one", "two", "three"}


def test_render_subset_renders_handoff_target_keyframe(workspace, capsys):
    assert main(["render", str(workspace["story"]), "--preset", "small", "--scenes", "one"]) == 1
    err = capsys.readouterr().err
    assert "not rendered yet: two, three" in err  # scene one rendered, the film needs all
    out = workspace["storage"] / "outputs" / "tiny_tale" / "small"
    assert (out / "one" / "upscaled.mp4").is_file()
    assert (out / "two" / "keyframe.png").is_file()  # FLF2V target of scene one
    assert not (out / "two" / "clip.mp4").exists()


def test_render_failure_is_readable_and_keeps_good_outputs(workspace, capsys):
    story = workspace["story"]
    assert main(["render", str(story), "--preset", "small"]) == 0
    good = workspace["storage"] / "outputs" / "tiny_tale" / "small" / "one" / "keyframe.png"
    before = good.read_bytes()
    (story.parent / "images" / "rocket.jpg").write_bytes(b"this is not a jpeg")
    capsys.readouterr()
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        runs_before = len(instance.get_runs())
    # the image content is checked when the story loads: exit 2 with the field, before any run
    assert main(["render", str(story), "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "scenes[0].keyframe" in err and "rocket.jpg" in err and "cannot be read as an image" in err
    assert "Traceback" not in err
    assert good.read_bytes() == before
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        assert len(instance.get_runs()) == runs_before
        assert not [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.FAILURE]


def test_render_bad_input_exits_2(tmp_path, capsys):
    path = write_story(tmp_path, [{"id": "a", "prompt": "x", "duration_s": 1}], preset="preview")
    assert main(["render", str(path), "--scenes", "zzz"]) == 2
    assert "--scenes: unknown scene id(s) zzz" in capsys.readouterr().err


def test_a_long_scene_the_flf2v_model_cannot_continue_is_refused_before_any_stage(workspace, capsys):
    """The tiny preset without `extension_model` and a 2.75 s scene (two segments of the FLF2V
    miniature): `render` (which makes the miniatures first) and then `validate` exit 2 naming the
    story file, the scene and the option, before a keyframe is made or a weight loaded."""
    import yaml

    from tests.conftest import REPO

    preset = yaml.safe_load((REPO / "workflows" / "tiny.yaml").read_text())
    del preset["stages"]["clip"]["extension_model"]
    custom = workspace["root"] / "no-extension.yaml"
    custom.write_text(yaml.safe_dump(preset, sort_keys=False))
    scenes = [
        {"id": "long", "prompt": "a rocket", "duration_s": 2.75, "keyframe": {"image": "images/rocket.jpg"}, "transition": "handoff"},
        {"id": "next", "prompt": "a cat", "duration_s": 0.5, "keyframe": {"image": "images/chelsea.png"}},
    ]
    story = write_story(workspace["stories"], scenes, story_id="too_long", preset="tiny", name="too_long.yaml")
    for command in (["render", str(story), "--preset", str(custom)], ["validate", str(story), "--preset", str(custom)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert "too_long.yaml" in err and "scene 'long': 45 frames need 2 segments" in err, err
        assert "stages.clip: " in err and "set stages.clip.extension_model" in err and "Traceback" not in err
    assert not (workspace["storage"] / "outputs" / "too_long").exists()  # nothing rendered


def test_render_long_flf2v_scene_through_the_vace_extension(workspace, capsys):
    """`render` with the tiny preset (FLF2V miniature, max_frames 41) and a 2.75 s scene: the clip
    is made in two VACE segments, the last one ending on the next scene's keyframe; the asset
    checks pass the recorded colour shift."""
    import json
    import shutil

    from tests.conftest import REPO
    from wan_pipeline.telemetry import sidecar_path

    shutil.copyfile(REPO / "workflows" / "tiny.yaml", workspace["workflows"] / "tiny.yaml")
    scenes = [
        {"id": "long", "prompt": "a rocket", "duration_s": 2.75, "keyframe": {"image": "images/rocket.jpg"}, "transition": "handoff"},
        {"id": "next", "prompt": "a cat", "duration_s": 0.5, "keyframe": {"image": "images/chelsea.png"}},
    ]
    story = write_story(workspace["stories"], scenes, story_id="long_take", preset="tiny", name="long.yaml")
    assert main(["render", str(story)]) == 0
    film = Path(capsys.readouterr().out.strip().splitlines()[-1])
    out = workspace["storage"] / "outputs" / "long_take" / "tiny"
    clip = json.loads(sidecar_path(out / "long" / "clip.mp4").read_text())
    assert probe_video(out / "long" / "clip.mp4").frames == clip["frames"] == 45  # 2.75 s at 16 fps: 4k+1
    assert clip["segments"] == 2 and clip["segment_frames"] == [25, 25] and clip["continuation"] == "vace_extension"
    assert clip["extension_model"] == "models/tiny/wan21-vace" and clip["flf2v"] is True
    assert isinstance(clip["segment_colour_shift"], float)
    short = json.loads(sidecar_path(out / "next" / "clip.mp4").read_text())
    assert short["segments"] == 1 and short["continuation"] is None and short["variant"] == "Wan2.1-FLF2V-miniature"
    assert film.is_file() and probe_video(film).frames > 0
    from assets.checks import check_segment_colour
    from wan_pipeline.preset import load_preset
    from wan_pipeline.storage import StorageLayout
    from wan_pipeline.story import load_story

    checked = check_segment_colour(load_story(story), load_preset("tiny"), StorageLayout.default(), "tiny")
    assert checked.passed and [r["scene"] for r in checked.rows] == ["long"], checked.rows
