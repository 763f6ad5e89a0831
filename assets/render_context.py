"""What a stage asset needs at execution time: the current story file and the run configuration.

The story is re-read from its file when a step runs (a prompt edited after the code location
loaded is rendered as written); a story whose scene list no longer matches the partitions asks
for a code-location reload instead of rendering the wrong scenes. The preset is the one the run
was launched with (:meth:`wan_pipeline.run_config.RunConfig.from_tags`), never looked up again.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from wan_pipeline.errors import InputError
from wan_pipeline.run_config import PRESET_TAG, RunConfig
from wan_pipeline.story import Story, load_story

__all__ = ["PRESET_TAG", "current_story", "keep_unplanned", "run_config"]


def current_story(loaded: Story) -> Story:
    """Re-read ``loaded``'s file; raises a clear error when its scene list changed since load."""
    if not loaded.source_path:
        return loaded
    story = load_story(loaded.source_path)
    if story.id != loaded.id or story.scene_ids != loaded.scene_ids:
        raise InputError(
            loaded.source_path,
            f"the story's scenes changed since the code location loaded ({', '.join(loaded.scene_ids)} → "
            f"{', '.join(story.scene_ids)}): reload the code location (Dagster UI → Deployment → Reload, or `wan-pipeline reload`)",
        )
    return story


def run_config(context, loaded: Story, gpu) -> RunConfig:
    """The story as on disk now and the run's configuration: the preset in the run's tags (the one
    ``wan-pipeline render`` resolved), else the story's own; the device of the ``gpu`` resource."""
    story = current_story(loaded)
    device = None if gpu.device == "auto" else gpu.device
    return RunConfig.from_tags(story, dict(context.run.tags), gpu.layout(), device)


def keep_unplanned(context: dg.AssetExecutionContext, stage: str, partition_key: str, output) -> bool:
    """True when this run's plan (run tag ``wan_pipeline/render/<stage>``) leaves ``stage`` of
    ``partition_key`` as it is: it sits inside the run's partition range only because another
    stage renders it. The kept output's telemetry (its sidecar) is recorded again with
    ``reused: true``. False (render it) when the run has no plan tag for the stage.
    """
    from resources.gpu import to_dagster_metadata
    from wan_pipeline.fingerprint import PLAN_TAG_PREFIX, scenes_from_tag
    from wan_pipeline.telemetry import read_sidecar

    planned = scenes_from_tag(context.run.tags.get(PLAN_TAG_PREFIX + stage))
    if planned is None or partition_key in planned:
        return False
    if not Path(output).is_file():
        raise InputError(
            None,
            f"{stage}[{partition_key}] is not rendered but this run's plan keeps it: render it first (wan-pipeline render STORY --stale)",
        )
    record = dict(read_sidecar(output) or {"path": str(output)})
    record["reused"] = True
    context.log.info(f"{stage}[{partition_key}]: up to date, kept ({output})")
    context.add_asset_metadata(to_dagster_metadata(record), partition_key=partition_key)
    return True
