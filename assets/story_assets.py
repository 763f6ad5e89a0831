"""The asset factory: one asset group per story, partitioned by scene.

    scene_spec ─► keyframe ─► clip ─► interpolated ─► upscaled ─┐
                      │        ▲                                 ├─► film
      keyframe[next] ─┴────────┘ (FLF2V handoff)                 │
                 (every scene's upscaled, and its clip for the seams) ─┘

Every stage asset is in the pool ``gpu``, runs each partition inside ``GPUResource.stage`` and
records the telemetry contract on its materialization. Assets read their inputs from the
deterministic output paths (no IO manager); a single-run backfill renders many scenes in one step
with one engine load.
"""

import dagster as dg
from dagster import AssetExecutionContext

from assets.recovery import STAGE_RETRY_POLICY, fail_fast
from assets.render_context import keep_unplanned, render_context
from assets.stage_labels import made_by, stage_kinds
from resources import EngineCache, GPUResource
from resources.gpu import to_dagster_metadata
from wan_pipeline.engines.base import ClipRequest, FilmRequest, FilmScene, KeyframeRequest
from wan_pipeline.errors import InputError, StageError
from wan_pipeline.fingerprint import current_fingerprints, scene_fingerprint  # noqa: F401 (scene_fingerprint: re-export)
from wan_pipeline.media.image_io import read_image, write_image
from wan_pipeline.media.video_io import probe_video, read_video, write_video
from wan_pipeline.preflight import check_preset
from wan_pipeline.report import write_run_summary
from wan_pipeline.story import Story


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


def _missing(story: Story, stage: str, scene_id: str) -> InputError:
    return InputError(None, f"{stage} of scene {scene_id!r} is missing: materialize {story.id}/{stage} partition {scene_id!r} first")


def build_story_assets(story: Story) -> list:
    """All asset definitions of one story: ``<id>/scene_spec … <id>/film``."""
    prefix = story.id
    partitions = dg.StaticPartitionsDefinition(story.scene_ids)
    common = dict(
        partitions_def=partitions,
        group_name=prefix,
        pool="gpu",
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=STAGE_RETRY_POLICY,
    )

    @dg.observable_source_asset(
        key=[prefix, "scene_spec"],
        partitions_def=partitions,
        group_name=prefix,
        description=f"The scenes of {story.title or story.id} as written in {story.source_path}; data version = scene fingerprint.",
    )
    def scene_spec(context) -> dg.DataVersionsByPartition:
        from assets.render_context import current_story

        current = current_story(story)
        return dg.DataVersionsByPartition({sid: dg.DataVersion(fp) for sid, fp in current_fingerprints(current).items()})

    @dg.asset(
        key=[prefix, "keyframe"],
        deps=[scene_spec],
        kinds=stage_kinds(story, "keyframe"),
        description="The scene's first frame (PNG): the scene's own image fitted to the preset size, or text-to-image from its prompt."
        + made_by(story, "keyframe"),
        **common,
    )
    @fail_fast
    def keyframe(context: AssetExecutionContext, gpu: GPUResource, engines: EngineCache) -> None:
        rc = render_context(context, story)
        layout, engine = gpu.layout(), lambda: engines.get("keyframe", rc.preset)
        device = gpu.resolve_device(rc.preset.device)
        try:
            for pk in context.partition_keys:
                if keep_unplanned(context, "keyframe", pk, layout.output(rc.story.id, pk, "keyframe")):
                    continue
                scene = rc.story.scene(pk)
                image_path = rc.story.image_path(scene)
                seed = rc.story.seed(scene)
                with gpu.stage(context.log, stage="keyframe", engine=engine, device=device, scene=pk, seed=seed) as run:
                    image = run.engine.render(
                        KeyframeRequest(
                            scene_id=pk,
                            prompt=rc.story.keyframe_prompt(scene),
                            negative_prompt=scene.negative_prompt,
                            seed=seed,
                            width=rc.preset.width,
                            height=rc.preset.height,
                            image=read_image(image_path) if image_path else None,
                            progress=run.step,
                            log=context.log.info,
                        )
                    )
                    run.output = write_image(layout.output(rc.story.id, pk, "keyframe"), image)
                    run.meta.update(source="image" if image_path else "text-to-image", preset=rc.preset.name)
                    run.meta.update(fingerprint=scene_fingerprint(rc.story, pk, rc.preset))
                context.add_asset_metadata(to_dagster_metadata(run.record), partition_key=pk)
        finally:
            engines.release("keyframe")

    @dg.asset(
        key=[prefix, "clip"],
        deps=[dg.AssetDep(keyframe, partition_mapping=handoff_mapping(story))],
        kinds=stage_kinds(story, "clip"),
        description="The scene's clip at the model's native size and fps (MP4, lossless). With a handoff its last frame is conditioned on the next scene's keyframe (FLF2V)."
        + made_by(story, "clip"),
        **common,
    )
    @fail_fast
    def clip(context: AssetExecutionContext, gpu: GPUResource, engines: EngineCache) -> None:
        rc = render_context(context, story)
        check_preset(rc.preset, ("clip", "interpolated", "upscaled", "film"))  # before the expensive step
        layout, engine = gpu.layout(), lambda: engines.get("clip", rc.preset)
        device = gpu.resolve_device(rc.preset.device)
        try:
            for pk in context.partition_keys:
                if keep_unplanned(context, "clip", pk, layout.output(rc.story.id, pk, "clip")):
                    continue
                scene = rc.story.scene(pk)
                first_path = layout.output(rc.story.id, pk, "keyframe")
                if not first_path.is_file():
                    raise _missing(rc.story, "keyframe", pk)
                target = rc.story.handoff_target(pk)
                last = None
                if target is not None:
                    last_path = layout.output(rc.story.id, target.id, "keyframe")
                    if not last_path.is_file():
                        raise _missing(rc.story, "keyframe", target.id)
                    last = read_image(last_path)
                first = read_image(first_path)
                for name, img in (("keyframe", first), ("next keyframe", last)):
                    if img is not None and img.shape[:2] != (rc.preset.height, rc.preset.width):
                        raise StageError(
                            f"clip[{pk}]: the {name} is {img.shape[1]}x{img.shape[0]} but preset {rc.preset.name!r} renders "
                            f"{rc.preset.width}x{rc.preset.height}: re-materialize {rc.story.id}/keyframe with the same preset"
                        )
                seed = rc.story.seed(scene)
                with gpu.stage(context.log, stage="clip", engine=engine, device=device, scene=pk, seed=seed) as run:
                    out = run.engine.render(
                        ClipRequest(
                            scene_id=pk,
                            prompt=scene.prompt,
                            negative_prompt=scene.negative_prompt,
                            seed=seed,
                            width=rc.preset.width,
                            height=rc.preset.height,
                            fps=rc.preset.base_fps,
                            duration_s=scene.duration_s,
                            first=first,
                            last=last,
                            camera=scene.camera,
                            guidance_scale=scene.guidance_scale,
                            steps=scene.steps,
                            loras=tuple(_resolved_loras(rc.story, scene)),
                            progress=run.step,
                            log=context.log.info,
                        )
                    )
                    run.output = write_video(layout.output(rc.story.id, pk, "clip"), out, lossless=True).path
                    run.meta.update(out.meta)
                    run.meta.update(flf2v=out.meta.get("flf2v", last is not None), handoff_to=target and target.id, preset=rc.preset.name)
                for warning in run.record.get("warnings") or []:
                    context.log.warning(f"clip[{pk}]: {warning}")
                context.add_asset_metadata(to_dagster_metadata(run.record), partition_key=pk)
        finally:
            engines.release("clip")

    def _post_stage(stage: str, upstream: str, method: str, description: str):
        @dg.asset(
            key=[prefix, stage],
            deps=[dg.AssetKey([prefix, upstream])],
            kinds=stage_kinds(story, stage),
            description=description + made_by(story, stage),
            **common,
        )
        @fail_fast
        def _asset(context: AssetExecutionContext, gpu: GPUResource, engines: EngineCache) -> None:
            rc = render_context(context, story)
            layout, engine = gpu.layout(), lambda: engines.get(stage, rc.preset)
            device = gpu.resolve_device(rc.preset.device)
            try:
                for pk in context.partition_keys:
                    if keep_unplanned(context, stage, pk, layout.output(rc.story.id, pk, stage)):
                        continue
                    src = layout.output(rc.story.id, pk, upstream)
                    if not src.is_file():
                        raise _missing(rc.story, upstream, pk)
                    source = read_video(src)
                    with gpu.stage(
                        context.log, stage=stage, engine=engine, device=device, scene=pk, seed=rc.story.seed(rc.story.scene(pk))
                    ) as run:
                        out = getattr(run.engine, method)(source)
                        run.output = write_video(layout.output(rc.story.id, pk, stage), out, lossless=True).path
                        run.meta.update(out.meta)
                        run.meta.update(input_frames=source.num_frames, input_fps=float(source.fps), preset=rc.preset.name)
                        if source.audio:  # the input had an audio stream: say whether it came through
                            kept = probe_video(run.output).has_audio
                            run.meta["audio"] = "kept" if kept else f"dropped: the {run.engine.name} engine returned no audio"
                    context.add_asset_metadata(to_dagster_metadata(run.record), partition_key=pk)
            finally:
                engines.release(stage)

        return _asset

    interpolated = _post_stage(
        "interpolated",
        "clip",
        "interpolate",
        "The clip at a higher frame rate (frame interpolation: optical flow or RIFE), lossless MP4.",
    )
    upscaled = _post_stage(
        "upscaled",
        "interpolated",
        "upscale",
        "The interpolated clip at a higher resolution (Lanczos or Real-ESRGAN), lossless MP4.",
    )

    @dg.asset(
        key=[prefix, "film"],
        deps=[upscaled, clip],
        group_name=prefix,
        pool="gpu",
        retry_policy=STAGE_RETRY_POLICY,
        kinds=stage_kinds(story, "film"),
        description="The whole story as one delivery MP4 (H.264 4:2:0): every scene's upscaled clip in story order, seams joined."
        + made_by(story, "film"),
    )
    @fail_fast
    def film(context: AssetExecutionContext, gpu: GPUResource, engines: EngineCache) -> dg.MaterializeResult:
        rc = render_context(context, story)
        layout, engine = gpu.layout(), lambda: engines.get("film", rc.preset)
        device = gpu.resolve_device(rc.preset.device)
        scenes = []
        for s in rc.story.scenes:
            paths = {st: layout.output(rc.story.id, s.id, st) for st in ("clip", "upscaled")}
            for st, p in paths.items():
                if not p.is_file():
                    raise _missing(rc.story, st, s.id)
            scenes.append(
                FilmScene(
                    scene_id=s.id,
                    upscaled=read_video(paths["upscaled"]),
                    native=read_video(paths["clip"]),
                    transition=s.transition,
                    prompt=s.prompt,
                )
            )
        try:
            with gpu.stage(context.log, stage="film", engine=engine, device=device, scene=None, seed=None) as run:
                out = run.engine.join(
                    FilmRequest(
                        scenes=scenes,
                        interpolator=engines.get("interpolated", rc.preset),
                        upscaler=engines.get("upscaled", rc.preset),
                        progress=run.step,
                        log=context.log.info,
                    )
                )
                crf = int(run.engine.describe().get("crf", 18))
                run.output = write_video(layout.film(rc.story.id), out, lossless=False, crf=crf).path
                run.meta.update(out.meta)
                run.meta.update(
                    scenes=len(scenes),
                    preset=rc.preset.name,
                    expected_duration_s=round(sum(s.duration_s for s in rc.story.scenes), 4),
                )
        finally:
            engines.release()
        summary = write_run_summary(layout, rc.story)  # the scenes' sidecars and the film's, just written
        meta = to_dagster_metadata(run.record)
        meta["run_summary"] = dg.MetadataValue.path(str(summary))
        return dg.MaterializeResult(metadata=meta)

    from assets.render_report import build_render_report

    return [scene_spec, keyframe, clip, interpolated, upscaled, film, build_render_report(story, film)]


def _resolved_loras(story: Story, scene) -> list:
    """The scene's LoRAs with paths resolved against the story folder."""
    from wan_pipeline.story import LoraSpec

    out = []
    for lora in scene.loras:
        path = (story.base_dir / lora.path).resolve()
        out.append(LoraSpec(path=str(path), strength=lora.strength))
    return out
