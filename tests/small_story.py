"""A small copy of the demo story and of the ``preview`` preset for fast tests.

The copy lives in a temporary folder (story, its images and the preset), so that tests point
``WAN_PIPELINE_STORIES`` / ``WAN_PIPELINE_WORKFLOWS`` / ``WAN_PIPELINE_STORAGE`` at it and render in
seconds without touching ``storage/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def make_small_project(folder: Path, duration_s: float = 0.5, width: int = 128, height: int = 80) -> dict[str, str]:
    """Write ``folder/stories/launch_day.yaml`` (the demo story, every scene ``duration_s``
    seconds long) with its images and ``folder/workflows/preview.yaml`` (the preview preset at
    ``width``×``height``); returns the environment variables that point the code at them and at
    ``folder/storage`` (also ``DAGSTER_HOME``)."""
    stories, workflows, storage = folder / "stories", folder / "workflows", folder / "storage"
    shutil.copytree(ROOT / "stories" / "images", stories / "images")
    workflows.mkdir(parents=True)
    storage.mkdir(parents=True)
    story = yaml.safe_load((ROOT / "stories" / "launch_day.yaml").read_text())
    for scene in story["scenes"]:
        scene["duration_s"] = duration_s
    (stories / "launch_day.yaml").write_text(yaml.safe_dump(story, sort_keys=False))
    preset = yaml.safe_load((ROOT / "workflows" / "preview.yaml").read_text())
    preset.update(width=width, height=height)
    (workflows / "preview.yaml").write_text(yaml.safe_dump(preset, sort_keys=False))
    shutil.copyfile(ROOT / "storage" / "dagster.yaml", storage / "dagster.yaml")
    return {
        "WAN_PIPELINE_STORIES": str(stories),
        "WAN_PIPELINE_WORKFLOWS": str(workflows),
        "WAN_PIPELINE_STORAGE": str(storage),
        "DAGSTER_HOME": str(storage),
    }
