"""How one partition of each stage calls its engine: read the inputs, call, write the output.

The ``work`` of a stage-table row (:mod:`wan_pipeline.stages`) is ``work(job, run)``: ``job``
(:class:`StageJob`) says which stage and scene under which run configuration, ``run``
(:class:`~wan_pipeline.stage_runner.StageRun`) holds the engine and receives the output path,
the stage's facts and the frames for the preview. :func:`render_partition` runs one partition
through the stage runner; the Dagster assets and the plain benchmark loop both call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from wan_pipeline.engines.base import ClipRequest, FilmRequest, FilmScene, KeyframeRequest
from wan_pipeline.errors import InputError, StageError
from wan_pipeline.media.image_io import read_image, write_image
from wan_pipeline.media.stream import as_stream
from wan_pipeline.media.video_io import open_video
from wan_pipeline.run_config import RunConfig
from wan_pipeline.stages import Stage


def _noop(message: str) -> None:
    return None


@dataclass
class StageJob:
    """One partition of one stage under a run configuration.

    engine_of: ``engine_of(stage_name, device)`` → that stage's engine on ``device`` (the leased
    device slot; the film reuses the scenes' interpolator and upscaler for its seams); log: info
    messages from engines.
    """

    config: RunConfig
    stage: Stage
    scene_id: str | None
    engine_of: Callable[[str, str], object]
    log: Callable[[str], None] = _noop

    @property
    def story(self):
        return self.config.story

    @property
    def preset(self):
        return self.config.preset

    @property
    def output_path(self) -> Path:
        return self.config.output(self.stage.name, self.scene_id)

    @property
    def seed(self) -> int | None:
        return self.story.seed(self.story.scene(self.scene_id)) if self.scene_id is not None else None

    def input_path(self, stage: str, scene_id: str) -> Path:
        """The output of ``stage`` for ``scene_id`` that this partition reads; raises
        :class:`InputError` saying what to materialize first when it is missing."""
        path = self.config.output(stage, scene_id)
        if not path.is_file():
            raise InputError(
                None, f"{stage} of scene {scene_id!r} is missing: materialize {self.story.id}/{stage} partition {scene_id!r} first"
            )
        return path


def model_key(job: StageJob) -> str:
    """What a stage loads, for model affinity of device slots: ``stage:engine:model``."""
    section = job.preset.stage(job.stage.name)
    return f"{job.stage.name}:{section.engine}:{section.model or ''}"


def render_partition(job: StageJob, runner, engine, log=None) -> dict:
    """Render ``job`` with ``runner`` (:class:`~wan_pipeline.stage_runner.StageRunner`) and
    ``engine`` (or a factory called inside the device lease with the leased device); returns the
    telemetry record. Inputs are checked before a device slot is leased; the stage body sees the
    run configuration on the leased device."""
    for stage, nxt in job.stage.upstream():
        scenes = _read_scenes(job, nxt) if job.stage.per_scene else job.story.scene_ids
        for sid in scenes:
            job.input_path(stage, sid)
    with runner.stage(
        log, stage=job.stage.name, engine=engine, device=job.config.device, scene=job.scene_id, seed=job.seed, model_key=model_key(job)
    ) as run:
        job = replace(job, config=job.config.on_device(run.device))
        job.stage.work_fn(job, run)
        run.meta.setdefault("preset", job.preset.name)
        run.meta.setdefault("preset_sha", job.preset.content_sha)
        run.meta.setdefault("take", job.config.take)
    return run.record


def _read_scenes(job: StageJob, on_handoff_target: bool) -> list[str]:
    if not on_handoff_target:
        return [job.scene_id]
    target = job.story.handoff_target(job.scene_id)
    return [target.id] if target is not None else []


# ---------------------------------------------------------------------------------------------
# the work of each stage


def keyframe_work(job: StageJob, run) -> None:
    """The scene's first frame: its own image fitted to the preset size, or text-to-image."""
    from wan_pipeline.fingerprint import scene_fingerprint

    story, preset, sid = job.story, job.preset, job.scene_id
    scene = story.scene(sid)
    image_path = story.image_path(scene)
    image = run.engine.render(
        KeyframeRequest(
            scene_id=sid,
            prompt=story.keyframe_prompt(scene),
            negative_prompt=scene.negative_prompt,
            seed=job.seed,
            width=preset.width,
            height=preset.height,
            image=read_image(image_path) if image_path else None,
            progress=run.step,
            log=job.log,
        )
    )
    run.output = write_image(job.output_path, image)
    run.preview = image
    run.meta.update(source="image" if image_path else "text-to-image", fingerprint=scene_fingerprint(story, sid, preset))


def write_stream(job: StageJob, run, stream, *, crf: int = 18) -> None:
    """Encode ``stream`` into the stage's output as its frames are made, keeping its audio; sets
    ``run.output``, ``run.output_info`` (what the writer measured) and, as ``run.preview``, the
    few frames the contact sheet shows (a bounded sample, never the whole video:
    :func:`~wan_pipeline.previews.write_sampled`), and as ``run.animation`` the animated preview's
    own sample (spread over every scene of ``run.preview_scene_lengths`` when set)."""
    from wan_pipeline.previews import animation_for, write_sampled

    run.animation = animation_for(stream, getattr(run, "preview_scene_lengths", None))
    run.output_info, run.preview = write_sampled(job.output_path, stream, lossless=job.stage.lossless, crf=crf, animation=run.animation)
    run.output = Path(run.output_info.path)


def clip_work(job: StageJob, run) -> None:
    """The scene's clip from its keyframe and, for a handoff, the next scene's keyframe (FLF2V),
    written as the engine makes it (a segment at a time for the clip model)."""
    story, preset, sid = job.story, job.preset, job.scene_id
    scene = story.scene(sid)
    target = story.handoff_target(sid)
    first = read_image(job.input_path("keyframe", sid))
    last = read_image(job.input_path("keyframe", target.id)) if target is not None else None
    for name, img in (("keyframe", first), ("next keyframe", last)):
        if img is not None and img.shape[:2] != (preset.height, preset.width):
            raise StageError(
                f"clip[{sid}]: the {name} is {img.shape[1]}x{img.shape[0]} but preset {preset.name!r} renders "
                f"{preset.width}x{preset.height}: re-materialize {story.id}/keyframe with the same preset"
            )
    out = run.engine.render(
        ClipRequest(
            scene_id=sid,
            prompt=scene.prompt,
            negative_prompt=scene.negative_prompt,
            seed=job.seed,
            width=preset.width,
            height=preset.height,
            fps=preset.base_fps,
            duration_s=scene.duration_s,
            first=first,
            last=last,
            camera=scene.camera,
            guidance_scale=scene.guidance_scale,
            steps=scene.steps,
            loras=tuple(resolved_loras(story, scene)),
            progress=run.step,
            log=job.log,
            stream=True,
        )
    )
    write_stream(job, run, as_stream(out))
    run.meta.update(out.meta)
    run.meta.setdefault("flf2v", last is not None)  # the engine's own verdict wins (TI2V may ignore the end frame)
    run.meta.update(handoff_to=target.id if target else None)


def video_work(job: StageJob, run) -> None:
    """A video-to-video stage (interpolation, upscaling, …): the same scene's output of the stage
    it reads, streamed through the engine's stage method (decode → engine → encode, a window at a
    time), written losslessly with the input's audio."""
    upstream = job.stage.upstream_stages()[0]
    source = open_video(job.input_path(upstream, job.scene_id))
    out = as_stream(getattr(run.engine, job.stage.method)(source))
    write_stream(job, run, out)
    run.meta.update(out.meta)
    run.meta.update(input_frames=source.num_frames, input_fps=float(source.fps))
    if source.audio:  # the input had an audio stream: say whether it came through
        kept = run.output_info.has_audio
        run.meta["audio"] = "kept" if kept else f"dropped: the {run.engine.name} engine returned no audio"


def film_work(job: StageJob, run) -> None:
    """Every scene's upscaled clip in story order, seams joined (with the native clips as seam
    context and the scenes' own interpolator and upscaler for regenerated seam frames), streamed
    scene after scene into one encoder."""
    story = job.story
    scenes = [
        FilmScene(
            scene_id=s.id,
            upscaled=open_video(job.input_path("upscaled", s.id)),
            native=open_video(job.input_path("clip", s.id)),
            transition=s.transition,
            prompt=s.prompt,
        )
        for s in story.scenes
    ]
    out = run.engine.join(
        FilmRequest(
            scenes=scenes,
            interpolator=job.engine_of("interpolated", job.config.device),
            upscaler=job.engine_of("upscaled", job.config.device),
            progress=run.step,
            log=job.log,
        )
    )
    crf = int(run.engine.describe().get("crf", 18))
    run.preview_scene_lengths = [s.duration_s for s in story.scenes]  # the animated preview shows every scene
    write_stream(job, run, as_stream(out), crf=crf)
    run.meta.update(out.meta)
    run.meta.update(scenes=len(scenes), expected_duration_s=round(sum(s.duration_s for s in story.scenes), 4))


def resolved_loras(story, scene) -> list:
    """The scene's LoRAs with paths resolved against the story folder (an existing file inside it,
    else :class:`InputError`)."""
    from wan_pipeline.story import LoraSpec

    return [LoraSpec(path=str(story.lora_path(lora)), strength=lora.strength) for lora in scene.loras]  # inside the story folder
