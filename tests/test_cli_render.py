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
