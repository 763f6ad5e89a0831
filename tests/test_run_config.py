"""One resolved run configuration per render: a preset file anywhere on disk renders, and a later
run launched with the same tags (as the Dagster UI re-executes a run) uses exactly that preset;
a render loads each engine once, checks the preset once, reports once, and a preset without torch
engines never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import dagster as dg
import yaml

from tests.conftest import REPO, write_preset
from wan_pipeline.cli import main
from wan_pipeline.media import probe_video


def test_render_with_a_preset_file_outside_workflows_and_relaunch_from_its_tags(workspace, tmp_path, capsys):
    custom = write_preset(tmp_path / "elsewhere" / "folder", name="custom", width=80, height=48, fps=6)
    assert main(["render", str(workspace["story"]), "--preset", str(custom)]) == 0
    film = workspace["storage"] / "outputs" / "tiny_tale" / "custom" / "film.mp4"
    info = probe_video(film)
    assert (info.width, info.height, float(info.fps)) == (160, 96, 12.0)  # the file's size and rate, ×2 each
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        (run,) = instance.get_runs()
        tags = dict(run.tags)
    assert tags["wan_pipeline/preset"] == str(custom.resolve()) and tags["wan_pipeline/preset_file"] == str(custom.resolve())
    # the file changes (or moves) afterwards: a run launched from the UI with the run's tags still
    # renders with the content the render resolved
    data = yaml.safe_load(custom.read_text())
    data["width"] = 32
    custom.write_text(yaml.safe_dump(data))
    from assets.story_assets import build_story_assets
    from resources import default_resources
    from wan_pipeline.story import load_story

    story = load_story(workspace["story"])
    (workspace["storage"] / "outputs" / "tiny_tale" / "custom" / "two" / "keyframe.png").unlink()
    relaunch = {k: v for k, v in tags.items() if k.startswith("wan_pipeline/")} | {"dagster/partition": "two"}
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        assert dg.materialize(
            build_story_assets(story),
            selection=dg.AssetSelection.assets(["tiny_tale", "keyframe"]),
            partition_key="two",
            instance=instance,
            resources=default_resources(),
            tags=relaunch,
        ).success
    from wan_pipeline.media.image_io import read_image

    assert read_image(workspace["storage"] / "outputs" / "tiny_tale" / "custom" / "two" / "keyframe.png").shape == (48, 80, 3)


def test_a_tampered_preset_tag_is_refused(workspace):
    from wan_pipeline.errors import InputError
    from wan_pipeline.run_config import RunConfig
    from wan_pipeline.storage import StorageLayout
    from wan_pipeline.story import load_story

    story = load_story(workspace["story"])
    config = RunConfig.resolve(story, "small", StorageLayout(workspace["storage"]))
    tags = config.tags()
    assert RunConfig.from_tags(story, tags, config.layout).preset == config.preset
    tags["wan_pipeline/preset_config"] = tags["wan_pipeline/preset_config"].replace('"width":96', '"width":64')
    try:
        RunConfig.from_tags(story, tags, config.layout)
    except InputError as exc:
        assert "launch the render again" in str(exc)
    else:
        raise AssertionError("a preset whose content does not match its hash must be refused")


RENDER_AND_COUNT = textwrap.dedent("""
    import sys
    from collections import Counter
    calls = Counter()
    import wan_pipeline.preflight as preflight
    import wan_pipeline.engines.registry as registry
    real_check, real_build = preflight.check_preset, registry.build_engine
    def check(*a, **k):
        calls["check_preset"] += 1
        return real_check(*a, **k)
    def build(stage, *a, **k):
        calls["build:" + stage] += 1
        return real_build(stage, *a, **k)
    preflight.check_preset = check
    registry.build_engine = build
    from wan_pipeline.cli import main
    rc = main(["render", sys.argv[1], "--preset", "small"])
    print("torch" in sys.modules, dict(calls))
    sys.exit(rc)
""")


def test_a_preview_render_is_lean(workspace):
    """One run: the preset is checked once, every engine built once, the report made once after the
    film; no torch import for a preset of classical engines."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", RENDER_AND_COUNT, str(workspace["story"])], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    torch_loaded, calls = out.stdout.strip().splitlines()[-1].split(" ", 1)
    assert torch_loaded == "False"
    calls = eval(calls)  # a dict literal printed by the child
    assert calls.pop("check_preset") == 1
    assert calls == {f"build:{s}": 1 for s in ("keyframe", "clip", "interpolated", "upscaled", "film")}
    with dg.DagsterInstance.from_config(str(workspace["storage"])) as instance:
        (run,) = instance.get_runs()
        order = [e.dagster_event.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)]
        reports = instance.fetch_materializations(dg.AssetKey(["tiny_tale", "render_report"]), limit=10).records
    assert len(reports) == 1 and order[-1].endswith("render_report") and order[-2].endswith("film")
