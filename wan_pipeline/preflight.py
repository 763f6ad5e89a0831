"""Preflight: every stage of a preset checked before the first expensive step runs.

Users lost 44-minute renders to a mistake found at the end (a Wan 2.2 model paired with a Wan 2.1
VAE, a missing upscaler file). Before rendering, each stage's engine is checked
(:func:`wan_pipeline.engines.registry.check_engine`: its parameters validated; post-processing
weight files read for their tensor names and shapes, not loaded) and each diffusers checkpoint is
read from its configs and checked (present offline, every component there, safetensors only, VAE
latent channels matching the transformer) — without loading any weights. A render runs it once,
and :func:`story_problems` asks the per-scene engines about the story's scenes (e.g. a scene longer
than one generation that the clip model cannot continue).
"""

from __future__ import annotations

import contextlib

from wan_pipeline.errors import InputError
from wan_pipeline.preset import Preset

DIFFUSERS_ENGINES = ("wan_i2v", "diffusers_t2i", "wan_vace")


def preset_problems(preset: Preset, stages: tuple[str, ...] | None = None, ctx=None, build=None) -> list[str]:
    """Every problem that would stop ``stages`` of ``preset`` (default: every stage of the stage
    table), one line each (empty: ready). ctx: the engines' context (default: derived from the
    preset and the environment's storage root). build: ``build(stage)`` builds the stage's engine
    and keeps it for the render (a run's engine cache, so weights load once); default: check it
    with :func:`~wan_pipeline.engines.registry.check_engine` and keep nothing."""
    from wan_pipeline.engines.context import EngineContext
    from wan_pipeline.engines.registry import check_engine
    from wan_pipeline.stages import STAGES

    problems: list[str] = []
    try:
        ctx = EngineContext.for_preset(ctx or preset)
    except InputError as exc:
        return [f"device: {p}" for p in exc.problems]
    for stage in stages or STAGES.names():
        section = preset.stage(stage)
        if section.engine in DIFFUSERS_ENGINES and section.model:
            problems.extend(_checkpoint_problems(stage, section.model, ctx.storage_root))
        extension = section.params.get("extension_model")
        if section.engine == "wan_i2v" and isinstance(extension, str):
            problems.extend(_checkpoint_problems(stage, extension, ctx.storage_root, field="extension_model", vace=True))
        try:
            if build is not None:
                build(stage)
            else:
                check_engine(stage, section, ctx)
        except InputError as exc:
            where = f"{exc.file}: " if exc.file and exc.file != preset.source_path else ""
            problems.extend(p if p.startswith("stages.") and not where else f"stages.{stage}: {where}{p}" for p in exc.problems)
    return problems


def _checkpoint_problems(stage: str, model: str, root, field: str = "model", vace: bool = False) -> list[str]:
    """Problems of the checkpoint named by ``stages.<stage>.<field>``, read from its configs; with
    ``vace`` it must also be a Wan VACE checkpoint (the clip stage's ``extension_model``)."""
    from wan_pipeline.engines.diffusers_support import resolve_model_source
    from wan_pipeline.engines.vace import vace_checkpoint_problem
    from wan_pipeline.models import check_loadable, read_checkpoint
    from wan_pipeline.models.model_files import uses_single_file

    if uses_single_file(model):  # single files are checked when the engine is built (model_files.resolve_model_files)
        return []
    try:
        source = resolve_model_source(model, root)
        check_loadable(read_checkpoint(source))
        problem = vace_checkpoint_problem(source, f"stages.{stage}.{field}") if vace else None
    except InputError as exc:
        return [f"stages.{stage}.{field}: {str(exc)}"]
    return [problem] if problem else []


def check_preset(preset: Preset, stages: tuple[str, ...] | None = None, ctx=None, build=None) -> None:
    """Raise :class:`InputError` (the preset file, every problem and its fix) unless ``stages`` of
    ``preset`` (default: all) can run in ``ctx`` (``build``: see :func:`preset_problems`)."""
    problems = preset_problems(preset, stages, ctx, build)
    if problems:
        raise InputError(preset.source_path, problems)


def story_problems(story, preset: Preset, ctx=None, scene_ids: list[str] | None = None) -> list[str]:
    """Problems of ``story``'s scenes (``scene_ids``, default all) under ``preset`` that an engine
    can tell before loading any weight, one line each: every per-scene engine with a
    ``scene_problems(scenes, fps)`` method is built (no weights) and asked about the (scene id,
    duration in seconds) list at the preset's base frame rate. A stage whose engine cannot be
    built is left to :func:`preset_problems`."""
    from wan_pipeline.engines.context import EngineContext
    from wan_pipeline.engines.registry import built_engine, engine_class
    from wan_pipeline.stages import STAGES

    try:
        ctx = EngineContext.for_preset(ctx or preset)
    except InputError:
        return []
    scenes = [(s.id, s.duration_s) for s in story.scenes if scene_ids is None or s.id in scene_ids]
    problems: list[str] = []
    for stage in STAGES.scene_stages():
        section = preset.stage(stage)
        with contextlib.ExitStack() as stack:
            try:  # only building is excused: what scene_problems raises is the story's problem
                if not hasattr(engine_class(stage, section, ctx.source_path), "scene_problems"):
                    continue
                engine = stack.enter_context(built_engine(stage, section, ctx))
            except InputError:
                continue  # the engine cannot be built: preset_problems reports why
            problems.extend(f"stages.{stage}: {p}" for p in engine.scene_problems(scenes, ctx.base_fps))
    return problems


def check_story(story, preset: Preset, ctx=None, scene_ids: list[str] | None = None) -> None:
    """Raise :class:`InputError` naming the story file and every problem of :func:`story_problems`."""
    problems = story_problems(story, preset, ctx, scene_ids)
    if problems:
        raise InputError(story.source_path, problems)
