"""What the asset graph says about a stage: which preset, engine and model make it, and its kinds.

Descriptions and kinds are fixed when the code location loads, from the story's own preset and the
stage table; a run that picks another preset (``wan-pipeline render --preset``) records the preset
it used in the ``preset``/``engine``/``model`` metadata.
"""

from __future__ import annotations

from wan_pipeline.errors import InputError
from wan_pipeline.preset import Preset, load_preset
from wan_pipeline.stages import STAGES
from wan_pipeline.story import Story


def story_preset(story: Story) -> Preset | None:
    """The story's own preset, or None when it cannot be loaded (the run will say why)."""
    try:
        return load_preset(story.preset)
    except InputError:
        return None


def made_by(story: Story, stage: str, preset: Preset | None = None) -> str:
    """A sentence for the asset description: ``Made by preset `preview`: engine `lanczos`.``"""
    preset = preset or story_preset(story)
    if preset is None:
        return f" Preset {story.preset!r} (not loadable now)."
    cfg = preset.stage(stage)
    model = f", model `{cfg.model}`" if cfg.model else ""
    return f" Made by preset `{preset.name}`: engine `{cfg.engine}`{model} (a run tagged `wan_pipeline/preset` may use another; see its metadata)."


def stage_kinds(story: Story, stage: str, preset: Preset | None = None) -> set[str]:
    """Kinds tags of a stage asset (at most 3, Dagster's limit): what it produces (the stage
    table's ``kind``: ``image`` or ``video``) and what computes it (``pytorch`` for a model engine,
    ``opencv`` for the classical engines of the preview preset)."""
    preset = preset or story_preset(story)
    kinds = {STAGES[stage].kind}
    if preset is not None:
        kinds.add("pytorch" if preset.stage(stage).model else "opencv")
    return kinds
