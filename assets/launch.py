"""Rendering a story from the command line: plan the runs, materialize them on the instance.

``wan-pipeline render`` is a thin shell over :func:`render_story`: the preset is resolved once
(:class:`~wan_pipeline.run_config.RunConfig`) and its content travels in every run's tags; the
assets run exactly as from the Dagster UI, on the storage root's instance, so runs,
materializations and telemetry show up there. A full render is ONE run (every stage over the whole
scene range, the film and the render report): one resource lifecycle, so post-processing weights
load once; the pre-render check runs once, before the first run, reading weight files' tensor
shapes only, and the runs are tagged so their steps skip it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import dagster as dg

from assets.recovery import BAD_INPUT_KEY
from wan_pipeline import progress
from wan_pipeline.errors import InputError
from wan_pipeline.fingerprint import REPORT
from wan_pipeline.preflight import check_preset
from wan_pipeline.run_config import CHECKED_TAG, RunConfig
from wan_pipeline.stages import STAGES
from wan_pipeline.story import Story


@dataclass
class RenderOutcome:
    """How a render ended: ``ok``; on failure the message and whether the cause was bad input."""

    ok: bool
    message: str = ""
    bad_input: bool = False
    run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedRun:
    """One Dagster run of a render: a label, the asset selection, its tags; ``needs_all_scenes``:
    launched only once every scene's last per-scene output exists (the film after a subset)."""

    label: str
    selection: dg.AssetSelection
    tags: dict
    needs_all_scenes: bool = False


def _contiguous_ranges(ordered: list[str], chosen: set[str]) -> list[tuple[str, str]]:
    ranges, start, prev = [], None, None
    for sid in ordered:
        if sid in chosen:
            start = start or sid
            prev = sid
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return ranges


def range_tags(start: str, end: str) -> dict:
    """The run tags of a partition range."""
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


def _story_selection(story: Story) -> dg.AssetSelection:
    keys = [[story.id, name] for name in STAGES.story_stages()] + [[story.id, REPORT]]
    return dg.AssetSelection.assets(*keys)


def plan_render(story: Story, config: RunConfig, scenes: list[str] | None = None) -> list[PlannedRun]:
    """The runs that render ``scenes`` (default: all) of ``story``.

    All scenes: one run over the whole range with every stage, the film and the report. A subset:
    first the keyframes their handoffs read that are not rendered yet, then one run per contiguous
    range of the chosen scenes, then the film and the report once every scene is rendered.
    """
    order = story.scene_ids
    chosen = set(scenes or order)
    per_scene = dg.AssetSelection.assets(*[[story.id, s] for s in STAGES.scene_stages()])
    if chosen == set(order):
        return [PlannedRun(f"all {len(order)} scenes and the film", per_scene | _story_selection(story), range_tags(order[0], order[-1]))]
    targets = {t.id for sid in chosen if (t := story.handoff_target(sid)) is not None} - chosen
    missing = {t for t in targets if not config.output("keyframe", t).is_file()}
    keyframe = dg.AssetSelection.assets([story.id, "keyframe"])
    runs = [PlannedRun(f"keyframe {a}..{b} (handoff targets)", keyframe, range_tags(a, b)) for a, b in _contiguous_ranges(order, missing)]
    runs += [PlannedRun(f"scenes {a}..{b}", per_scene, range_tags(a, b)) for a, b in _contiguous_ranges(order, chosen)]
    runs.append(PlannedRun("film", _story_selection(story), {}, needs_all_scenes=True))
    return runs


def _failure(result) -> tuple[str, bool]:
    lines, bad = [], False
    for ev in result.get_step_failure_events():
        data = ev.step_failure_data
        err = data.error
        cause = err
        while cause is not None and cause.cause is not None and "DagsterExecutionStepExecutionError" in (cause.cls_name or ""):
            cause = cause.cause
        meta = (data.user_failure_data.metadata if data.user_failure_data else None) or {}
        if BAD_INPUT_KEY in meta:
            bad = True
            msg = (data.user_failure_data.description or "").strip()
        else:
            msg = (cause.message if cause else str(err)).strip()
        lines.append(f"step {ev.step_key} failed: {msg}")
    return "\n".join(lines) or "the run failed (see the Dagster UI for its logs)", bad


def _materialize(
    instance, story: Story, runs: list[PlannedRun], config: RunConfig, verbose: bool, with_checks: bool = False
) -> RenderOutcome:
    from assets.story_assets import build_story_assets
    from resources import default_resources

    assets = build_story_assets(story)
    if with_checks:
        from assets.checks import build_story_checks

        assets = [*assets, *build_story_checks(story)]
    resources = default_resources(config.layout.root)
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO" if verbose else "WARNING"}}}}
    outcome = RenderOutcome(ok=True)
    last_scene_stage = STAGES.scene_stages()[-1]
    for run in runs:
        if run.needs_all_scenes:
            not_ready = [s for s in story.scene_ids if not config.output(last_scene_stage, s).is_file()]
            if not_ready:
                message = f"the film needs every scene; not rendered yet: {', '.join(not_ready)} (run without --scenes)"
                return RenderOutcome(False, message, False, outcome.run_ids)
        result = dg.materialize(
            assets,
            selection=run.selection,
            instance=instance,
            resources=resources,
            tags={**config.tags(), CHECKED_TAG: config.preset.content_sha, **run.tags},
            run_config=run_config,
            raise_on_error=False,
        )
        outcome.run_ids.append(result.run_id)
        if not result.success:
            message, bad = _failure(result)
            return RenderOutcome(False, f"render failed ({run.label}, run {result.run_id}):\n{message}", bad, outcome.run_ids)
    return outcome


def init_instance(config: RunConfig) -> dg.DagsterInstance:
    """The storage root's Dagster instance (``DAGSTER_HOME``, set to the storage root unless set)."""
    os.environ.setdefault("DAGSTER_HOME", str(config.layout.init()))
    return dg.DagsterInstance.get()


def _is_story_preset(story: Story, config: RunConfig) -> bool:
    from wan_pipeline.preset import load_preset

    try:
        return load_preset(story.preset).content_sha == config.preset.content_sha
    except InputError:
        return False


def render_story(story: Story, config: RunConfig, reporter, scenes: list[str] | None = None, verbose: bool = False) -> RenderOutcome:
    """Render ``scenes`` (default: all) of ``story`` with ``config``; ``reporter`` receives the
    stage progress (:mod:`wan_pipeline.progress`). Raises :class:`InputError` for unknown scene ids."""
    if scenes is not None:
        unknown = [s for s in scenes if s not in story.scene_ids]
        if unknown:
            raise InputError(story.source_path, f"--scenes: unknown scene id(s) {', '.join(unknown)}; scenes: {', '.join(story.scene_ids)}")
    check_preset(config.preset, ctx=config.engine_context())  # once, before any run: every stage, no weights loaded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance = init_instance(config)
        runs = plan_render(story, config, scenes)
        progress.set_reporter(reporter)
        try:
            outcome = _materialize(instance, story, runs, config, verbose)
        finally:
            progress.set_reporter(None)
        if outcome.ok and (scenes is None or set(scenes) == set(story.scene_ids)):
            from assets.status import observe_fingerprints

            # the story sensor's baseline: these fingerprints are rendered (a never-observed scene
            # rendered with the story's own preset has it in its keyframe's record already)
            observe_fingerprints(instance, story, only_outdated=_is_story_preset(story, config))
    return outcome


def render_stale(story: Story, config: RunConfig, reporter, verbose: bool = False, announce=print) -> RenderOutcome | None:
    """ONE run of every stale or missing partition of ``story`` (and the film); None when
    everything is fresh. ``announce`` gets the plan in words before the run starts."""
    from assets.status import observe_fingerprints, status_for
    from wan_pipeline.status import stale_plan

    check_preset(config.preset, ctx=config.engine_context())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance = init_instance(config)
        observe_fingerprints(instance, story)
        plan = stale_plan(story, status_for(instance, story, config))
        if plan.empty:
            return None
        announce(f"rendering the stale or missing partitions of {story.id!r}, take {config.take!r}: {plan.describe()}")
        selection = dg.AssetSelection.assets(*[[story.id, name] for name in plan.assets])
        progress.set_reporter(reporter)
        try:
            run = PlannedRun(plan.describe(), selection, plan.tags(story.scene_ids))
            return _materialize(instance, story, [run], config, verbose, with_checks=True)
        finally:
            progress.set_reporter(None)
