"""The jobs of one story: each story gets its own, so stories with different scene lists (different
partitions) never share a job, a sensor target or a schedule.

* ``<story>_scenes``: every per-scene stage (partitioned by scene; single-run backfills);
* ``<story>_film``: the story stages (the film) and the render report;
* ``<story>_render``: everything of the story — the per-scene stages (one partitions definition:
  the story's scene ids), the film and the report — the target of the story sensor's and the
  nightly schedule's runs, which select a subset of it per request.
"""

from __future__ import annotations

import dagster as dg

from wan_pipeline.stages import STAGES
from wan_pipeline.story import Story


def render_job_name(story_id: str) -> str:
    """The name of the job a story's automation (sensor, schedule) launches."""
    return f"{story_id}_render"


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
    """``<story>_film``: the story stages (the film) and the render report."""
    return dg.define_asset_job(
        f"{story.id}_film",
        selection=dg.AssetSelection.assets(*[[story.id, name] for name in STAGES.story_stages()], [story.id, "render_report"]),
        tags=take_tags(story),
        description=f"Join the rendered scenes of {story.title or story.id} into the film, then its render report.",
    )


def render_job(story: Story) -> dg.UnresolvedAssetJobDefinition:
    """``<story>_render``: every materializable asset of the story's group (with its checks); runs
    choose their subset (asset selection) and scene range (partition range tags)."""
    return dg.define_asset_job(
        render_job_name(story.id),
        selection=dg.AssetSelection.groups(story.id).materializable(),
        description=f"Render {story.title or story.id}: the stages the request selects over its scene range, the film, the report.",
    )
