"""Preflight: every stage of a preset checked before the first expensive step runs.

Users lost 44-minute renders to a mistake found at the end (a Wan 2.2 model paired with a Wan 2.1
VAE, a missing upscaler file). Before rendering, each stage's engine is built (its parameters are
validated; small post-processing weights are loaded and released) and each diffusers checkpoint
is read from its configs and checked (present offline, every component there, safetensors only,
VAE latent channels matching the transformer) — without loading any diffusion weights.
"""

from __future__ import annotations

from wan_pipeline.errors import InputError
from wan_pipeline.preset import STAGES, Preset

DIFFUSERS_ENGINES = ("wan_i2v", "diffusers_t2i", "wan_vace")


def preset_problems(preset: Preset, stages: tuple[str, ...] = STAGES) -> list[str]:
    """Every problem that would stop ``stages`` of ``preset``, one line each (empty: ready)."""
    from wan_pipeline.engines.registry import build_engine

    problems: list[str] = []
    for stage in stages:
        section = preset.stage(stage)
        if section.engine in DIFFUSERS_ENGINES and section.model:
            problems.extend(_checkpoint_problems(stage, section.model))
        try:
            engine = build_engine(stage, section, preset)
        except InputError as exc:
            where = f"{exc.file}: " if exc.file and exc.file != preset.source_path else ""
            problems.extend(p if p.startswith("stages.") and not where else f"stages.{stage}: {where}{p}" for p in exc.problems)
            continue
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    return problems


def _checkpoint_problems(stage: str, model: str) -> list[str]:
    from wan_pipeline.engines.diffusers_support import resolve_model_source
    from wan_pipeline.models import check_loadable, read_checkpoint
    from wan_pipeline.models.model_files import uses_single_file

    if uses_single_file(model):  # single files are checked when the engine is built (model_files.resolve_model_files)
        return []
    try:
        check_loadable(read_checkpoint(resolve_model_source(model)))
    except InputError as exc:
        return [f"stages.{stage}.model: {str(exc)}"]
    return []


def check_preset(preset: Preset, stages: tuple[str, ...] = STAGES) -> None:
    """Raise :class:`InputError` (the preset file, every problem and its fix) unless ``stages`` of
    ``preset`` can run."""
    problems = preset_problems(preset, stages)
    if problems:
        raise InputError(preset.source_path, problems)
