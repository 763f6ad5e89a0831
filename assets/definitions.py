"""The code location: every story file in ``stories/`` (or ``$WAN_PIPELINE_STORIES``) as an asset group.

``workspace.yaml`` loads this module. A story that fails validation is logged and skipped; the
other stories still load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dagster as dg

from assets.checks import build_story_checks
from assets.recovery import recover_killed_runs_sensor
from assets.schedules import build_nightly_schedule
from assets.sensors import build_story_sensor
from assets.story_assets import build_story_assets
from resources import default_resources
from wan_pipeline.errors import InputError
from wan_pipeline.preset import project_root
from wan_pipeline.stages import STAGES
from wan_pipeline.story import Story, load_story, story_files

log = logging.getLogger("wan_pipeline")


def stories_dir() -> Path:
    env = os.environ.get("WAN_PIPELINE_STORIES")
    return Path(env).resolve() if env else project_root() / "stories"


def load_stories(folder: Path | None = None) -> tuple[list[Story], dict[str, str]]:
    """Valid stories in ``folder`` and, per invalid file, its error message. Duplicate story ids
    keep the first file and report the others."""
    stories, errors, seen = [], {}, {}
    for path in story_files(folder or stories_dir()):
        try:
            story = load_story(path)
        except InputError as exc:
            errors[str(path)] = str(exc)
            log.error("story not loaded: %s", exc)
            continue
        if story.id in seen:
            errors[str(path)] = f"{path}: id: story id {story.id!r} is already used by {seen[story.id]}; give this story another id"
            log.error("story not loaded: %s", errors[str(path)])
            continue
        seen[story.id] = str(path)
        stories.append(story)
    return stories, errors


def take_tags(story: Story) -> dict[str, str]:
    """Default run tags of a story's jobs: its own preset and take, shown (and editable) in the
    Launchpad — set ``wan_pipeline/take`` and ``wan_pipeline/preset`` there to render another take."""
    from assets.stage_labels import story_preset
    from wan_pipeline.run_config import PRESET_TAG, STORY_TAG, TAKE_TAG, default_take

    preset = story_preset(story)
    tags = {STORY_TAG: story.id, PRESET_TAG: story.preset}
    return {**tags, TAKE_TAG: default_take(preset)} if preset is not None else tags


def story_job(story: Story) -> dg.UnresolvedAssetJobDefinition:
    """``<story>_scenes``: every per-scene stage of the story (partitioned, single-run backfills);
    the stage table's per-scene rows, so neither the film nor the render report."""
    return dg.define_asset_job(
        f"{story.id}_scenes",
        selection=dg.AssetSelection.assets(*[[story.id, name] for name in STAGES.scene_stages()]),
        partitions_def=dg.StaticPartitionsDefinition(story.scene_ids),
        tags=take_tags(story),
        description=f"Render the scenes of {story.title or story.id} (keyframe → clip → interpolated → upscaled).",
    )


def film_job(story: Story) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        f"{story.id}_film",
        selection=dg.AssetSelection.assets(*[[story.id, name] for name in STAGES.story_stages()], [story.id, "render_report"]),
        tags=take_tags(story),
        description=f"Join the rendered scenes of {story.title or story.id} into the film, then its render report.",
    )


def build_definitions(folder: Path | None = None, stories: list[Story] | None = None) -> dg.Definitions:
    """Definitions for ``stories`` (default: every valid story file in ``folder``)."""
    if stories is None:
        stories, _ = load_stories(folder)
    assets, jobs, checks = [], [], []
    for story in stories:
        assets.extend(build_story_assets(story))
        checks.extend(build_story_checks(story))
        jobs.extend([story_job(story), film_job(story)])
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        resources=default_resources(),
        sensors=[build_story_sensor(stories, folder or stories_dir()), recover_killed_runs_sensor],
        schedules=[build_nightly_schedule(stories)] if stories else [],
    )


defs = build_definitions()
