"""The asset factory: one asset group per story, partitioned by scene, one asset per stage.

    scene_spec ─► keyframe ─► clip ─► interpolated ─► upscaled ─┐
                      │        ▲                                 ├─► film ─► render_report
      keyframe[next] ─┴────────┘ (FLF2V handoff)                 │
                 (every scene's upscaled, and its clip for the seams) ─┘

Every asset derives from a row of the stage table (:mod:`wan_pipeline.stages`): its key, deps
(a ``[next]`` read becomes the handoff partition mapping), partitioning, kinds and description.
Each step renders its partitions through the library (:func:`wan_pipeline.stage_work.render_partition`
on the ``gpu`` resource's stage runner) and records the telemetry contract on each
materialization. Assets read their inputs from the deterministic output paths (no IO manager);
a single-run backfill renders many scenes in one step with one engine load.
"""

import dagster as dg
from dagster import AssetExecutionContext

from assets.recovery import stage_step
from assets.render_context import current_story, keep_unplanned, run_config
from assets.stage_labels import made_by, stage_kinds, story_preset
from resources import EngineCache, GPUResource
from resources.gpu import to_dagster_metadata
from wan_pipeline.fingerprint import current_fingerprints
from wan_pipeline.fingerprint import scene_fingerprint as scene_fingerprint  # re-export for callers of this module
from wan_pipeline.report import write_run_summary
from wan_pipeline.run_config import CHECKED_TAG
from wan_pipeline.stage_work import StageJob, render_partition
from wan_pipeline.stages import STAGES, Stage, StageTable
from wan_pipeline.story import Story

GPU_POOL = "gpu"
"""The Dagster concurrency pool of every stage asset; its limit is the machine's device slots."""


def handoff_mapping(story: Story) -> dg.StaticPartitionMapping:
    """keyframe partition → clip partitions that read it: its own scene, and the previous scene
    when that one hands off (FLF2V last frame)."""
    mapping: dict[str, list[str]] = {}
    for i, s in enumerate(story.scenes):
        targets = [s.id]
        if i > 0 and story.scenes[i - 1].transition == "handoff":
            targets.insert(0, story.scenes[i - 1].id)
        mapping[s.id] = targets
    return dg.StaticPartitionMapping(mapping)


def _deps(story: Story, row: Stage, table: StageTable, scene_spec) -> list:
    if not row.upstream():
        return [scene_spec] if row.per_scene else []
    deps = []
    for up in row.upstream_stages():
        key = dg.AssetKey([story.id, up])
        on_next = any(name == up and nxt for name, nxt in row.upstream())
        if row.per_scene and table[up].per_scene and on_next:
            deps.append(dg.AssetDep(key, partition_mapping=handoff_mapping(story)))
        else:
            deps.append(dg.AssetDep(key))
    return deps


def _preflight(context, config, engines: EngineCache, row: Stage, table: StageTable) -> None:
    """Check this stage and every stage after it before the expensive step, once per run (the
    run's engine cache keeps what it built, so the stages reuse it) — unless the launcher checked
    this very preset before the run (``wan-pipeline render``: run tag ``wan_pipeline/checked``)."""
    if context.run.tags.get(CHECKED_TAG) == config.preset.content_sha:
        return
    names = table.names()
    engines.preflight(config, names[names.index(row.name) :])


def backfill_policy(story: Story) -> dg.BackfillPolicy:
    """One run for a whole backfill on a one-slot machine (models load once); with N device slots
    (``WAN_PIPELINE_DEVICES``) runs of ⌈scenes / N⌉ partitions, which the run queue starts side by
    side (the ``gpu`` pool admits N stage steps) — the backfill daemon starts a clip's run only
    once the keyframes it reads (FLF2V) are materialized."""
    import math
    import os

    from wan_pipeline.device_lock import DEVICES_ENV, parse_slots

    slots = len(parse_slots(os.environ.get(DEVICES_ENV)) or ())
    if slots <= 1:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=math.ceil(len(story.scene_ids) / slots))


def _stage_asset(story: Story, row: Stage, table: StageTable, scene_spec, partitions, preset) -> dg.AssetsDefinition:
    prefix = story.id
    extra = dict(partitions_def=partitions, backfill_policy=backfill_policy(story)) if row.per_scene else {}

    @dg.asset(
        key=[prefix, row.name],
        deps=_deps(story, row, table, scene_spec),
        group_name=prefix,
        pool=GPU_POOL,
        kinds=stage_kinds(story, row.name, preset),
        description=row.description + made_by(story, row.name, preset),
        **extra,
    )
    @stage_step
    def _asset(context: AssetExecutionContext, gpu: GPUResource, engines: EngineCache) -> None:
        config = run_config(context, story, gpu)
        _preflight(context, config, engines, row, table)
        runner = gpu.runner(config.device)
        keys = context.partition_keys if row.per_scene else [None]
        try:
            for pk in keys:
                if pk is not None and keep_unplanned(context, row.name, pk, config.output(row.name, pk)):
                    continue
                job = StageJob(
                    config, row, pk, engine_of=lambda name, device: engines.get(name, config.on_device(device)), log=context.log.info
                )
                record = render_partition(job, runner, lambda device: engines.get(row.name, config.on_device(device)), log=context.log)
                for warning in record.get("warnings") or []:
                    context.log.warning(f"{row.name}[{pk}]: {warning}")
                meta = to_dagster_metadata(record)
                if pk is None:
                    meta["run_summary"] = dg.MetadataValue.path(str(write_run_summary(config.layout, config.story, config.take)))
                    context.add_output_metadata(meta)
                else:
                    context.add_asset_metadata(meta, partition_key=pk)
        finally:
            engines.release(row.name)

    return _asset


def build_story_assets(story: Story, table: StageTable = STAGES) -> list:
    """All asset definitions of one story: ``<id>/scene_spec``, one asset per row of ``table``
    and ``<id>/render_report`` after the last story stage (the film)."""
    partitions = dg.StaticPartitionsDefinition(story.scene_ids)
    preset = story_preset(story)

    @dg.observable_source_asset(
        key=[story.id, "scene_spec"],
        partitions_def=partitions,
        group_name=story.id,
        description=f"The scenes of {story.title or story.id} as written in {story.source_path}; data version = scene fingerprint.",
    )
    def scene_spec(context) -> dg.DataVersionsByPartition:
        current = current_story(story)
        return dg.DataVersionsByPartition({sid: dg.DataVersion(fp) for sid, fp in current_fingerprints(current).items()})

    stage_assets = [_stage_asset(story, row, table, scene_spec, partitions, preset) for row in table]
    out = [scene_spec, *stage_assets]
    story_stages = [a for a, row in zip(stage_assets, table) if not row.per_scene]
    if story_stages:
        from assets.render_report import build_render_report

        out.append(build_render_report(story, story_stages[-1]))
    return out
