"""Tiny stories for the automation tests: 3 scenes of 0.5 s on a 64x48 copy of the preview preset."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

SCENES = [
    {
        "id": "s1",
        "prompt": "a rocket at dawn",
        "duration_s": 0.5,
        "seed": 1,
        "keyframe": {"image": "images/rocket.jpg"},
        "camera": "zoom_in",
        "transition": "handoff",
    },
    {
        "id": "s2",
        "prompt": "an astronaut portrait",
        "duration_s": 0.5,
        "seed": 2,
        "keyframe": {"image": "images/astronaut.png"},
        "camera": "pan_right",
        "transition": "handoff",
    },
    {
        "id": "s3",
        "prompt": "a cat on a windowsill",
        "duration_s": 0.5,
        "seed": 3,
        "keyframe": {"image": "images/chelsea.png"},
        "camera": "zoom_out",
        "transition": "cut",
    },
]


def make_env(tmp_path: Path, monkeypatch, scenes=None) -> Path:
    """Preset ``tiny`` in tmp/workflows, story ``tiny_story`` in tmp/stories, storage in tmp/storage.
    Returns the story file."""
    wf = tmp_path / "workflows"
    wf.mkdir()
    preset = yaml.safe_load((ROOT / "workflows" / "preview.yaml").read_text())
    preset.update(name="tiny", width=64, height=48)
    (wf / "tiny.yaml").write_text(yaml.safe_dump(preset))
    stories = tmp_path / "stories"
    (stories / "images").mkdir(parents=True)
    for name in ("rocket.jpg", "astronaut.png", "chelsea.png"):
        shutil.copy(ROOT / "stories" / "images" / name, stories / "images" / name)
    monkeypatch.setenv("WAN_PIPELINE_WORKFLOWS", str(wf))
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("WAN_PIPELINE_STORIES", str(stories))
    return write_story(stories / "tiny_story.yaml", scenes or SCENES)


def write_story(path: Path, scenes, title: str = "Tiny", comment: str = "") -> Path:
    doc = {"id": "tiny_story", "title": title, "preset": "tiny", "scenes": scenes}
    path.write_text((f"# {comment}\n" if comment else "") + yaml.safe_dump(doc, sort_keys=False))
    return path


def edit_scene(path: Path, scene_id: str, **changes) -> None:
    doc = yaml.safe_load(path.read_text())
    for s in doc["scenes"]:
        if s["id"] == scene_id:
            s.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def render_all(instance, story_path: Path):
    """Render the whole story (one run: every stage and the film) on ``instance``; returns the result."""
    import dagster as dg

    from assets.checks import build_story_checks
    from assets.status import observe_fingerprints
    from assets.story_assets import build_story_assets
    from resources import default_resources
    from wan_pipeline.story import load_story

    story = load_story(story_path)
    observe_fingerprints(instance, story)
    result = dg.materialize(
        [*build_story_assets(story), *build_story_checks(story)],
        selection=dg.AssetSelection.groups(story.id) - dg.AssetSelection.assets([story.id, "scene_spec"]),
        instance=instance,
        resources=default_resources(),
        tags={"dagster/asset_partition_range_start": story.scene_ids[0], "dagster/asset_partition_range_end": story.scene_ids[-1]},
    )
    assert result.success
    return result
