"""One post-processing stage on any video file (``wan-pipeline interpolate`` / ``upscale``).

The same engines as the ``interpolated`` and ``upscaled`` stages, picked by the preset
(``preview`` → optical flow / Lanczos; a model preset → RIFE / Real-ESRGAN), with the factor,
frame rate or size overridden from the arguments. Output is a delivery MP4 that every player
opens (H.264 4:2:0, CRF :data:`DELIVERY_CRF` unless given), or with ``lossless=True`` the
pipeline's lossless intermediate format; either keeps the input's audio. The engine is built
(weights loaded) before any frame is decoded, and the output is written atomically, so a bad model
file never touches an existing output.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

from wan_pipeline.engines.registry import build_engine
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import as_fps
from wan_pipeline.media.stream import MAX_SIDE, as_stream
from wan_pipeline.media.video_io import VideoInfo, open_video, probe_video
from wan_pipeline.preset import Preset, StageConfig, load_preset
from wan_pipeline.previews import animation_for, write_sampled

#: Engines whose output scale is their own ``factor`` parameter (no fixed model scale).
FACTOR_SCALED_UPSCALERS = {"lanczos"}
#: x264 CRF of the delivery file: 18 is generally regarded as visually lossless (x264 / FFmpeg H.264 guide).
DELIVERY_CRF = 18


def _preset(preset: str | os.PathLike | Preset) -> Preset:
    return preset if isinstance(preset, Preset) else load_preset(preset)


def _section(preset: Preset, stage: str, overrides: dict, drop: tuple[str, ...] = ()) -> StageConfig:
    data = preset.stage(stage).model_dump()
    for key in drop:
        data.pop(key, None)
    data.update(overrides)
    if data.get("model") is None:
        data.pop("model", None)
    return StageConfig.model_validate(data)


def _run(
    stage: str, method: str, input, output, preset: Preset, config: StageConfig, lossless: bool = False, crf: int = DELIVERY_CRF
) -> VideoInfo:
    """Run ``stage`` on the video ``input`` through the stage runner (device lock, telemetry
    sidecar and preview beside ``output``, out-of-memory retry), exactly as the asset does; the
    output is H.264 4:2:0 at ``crf`` (delivery), or the lossless intermediate format."""
    import logging

    from wan_pipeline.engines.context import EngineContext
    from wan_pipeline.stage_runner import OOMRetryingEngine, StageRunner
    from wan_pipeline.storage import StorageLayout

    probe_video(input)  # a missing or unreadable input fails before the model loads
    ctx = EngineContext.for_preset(preset)
    strategy = config.params.get("memory_strategy")

    def build():
        return OOMRetryingEngine(
            build_engine(stage, config, ctx), strategy, lambda s: build_engine(stage, config.model_copy(update={"memory_strategy": s}), ctx)
        )

    runner = StageRunner(StorageLayout.default())
    engine = None
    try:
        with runner.stage(logging.getLogger("wan_pipeline"), stage=stage, engine=build, device=ctx.device) as run:
            engine = run.engine
            clip = open_video(input)  # streamed: decode → engine → encode, a window of frames at a time
            result = as_stream(getattr(engine, method)(clip))
            if result.audio is None and clip.audio is not None:
                result.audio = clip.audio
            if not lossless and (result.width % 2 or result.height % 2):
                raise InputError(
                    str(output),
                    f"H.264 4:2:0 needs an even width and height, the result is {result.width}x{result.height}: "
                    "pass --lossless (4:4:4 keeps any size) or choose an even output size",
                )
            run.animation = animation_for(result)
            info, run.preview = write_sampled(output, result, lossless=lossless, crf=crf, animation=run.animation)
            run.output, run.output_info = Path(info.path), info
            run.meta.update(result.meta)
            run.meta.update(input=str(Path(input).resolve()), input_frames=clip.num_frames, input_fps=float(clip.fps), preset=preset.name)
    finally:
        if engine is not None:
            engine.close()
    return info


def interpolate_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    factor: int | None = None,
    fps: float | str | Fraction | None = None,
    preset: str | os.PathLike | Preset = "preview",
    lossless: bool = False,
    crf: int = DELIVERY_CRF,
) -> VideoInfo:
    """Interpolate the video ``input`` to ``output`` (H.264 4:2:0 at ``crf``, or the lossless
    intermediate format with ``lossless``; audio kept).

    factor: frame multiplier (n frames → factor·(n−1)+1); fps: target frame rate (exact rational,
    e.g. ``"48000/1001"``); at most one of them, neither → the preset's own. The preset's
    ``interpolated`` engine does the work: an fps that is an integer multiple of the input's is
    passed as its ``factor``, any other as ``target_fps`` (engines without it reject it by name).
    Returns the output's measured :class:`VideoInfo`. Raises :class:`InputError` (also for an odd
    width or height without ``lossless``: 4:2:0 needs even sizes).
    """
    if factor is not None and fps is not None:
        raise InputError(None, "interpolate: give --factor or --fps, not both")
    p = _preset(preset)
    overrides: dict = {}
    drop: tuple[str, ...] = ()
    if factor is not None:
        overrides["factor"] = int(factor)
        drop = ("target_fps",)
    elif fps is not None:
        ratio = as_fps(fps) / probe_video(input).fps
        if ratio.denominator == 1 and ratio > 1:
            overrides["factor"] = int(ratio)  # every engine takes a factor; only some a target fps
            drop = ("target_fps",)
        else:
            overrides["target_fps"] = str(as_fps(fps))
            drop = ("factor",)
    return _run("interpolated", "interpolate", input, output, p, _section(p, "interpolated", overrides, drop), lossless, crf)


def upscale_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    scale: float | None = None,
    height: int | None = None,
    preset: str | os.PathLike | Preset = "preview",
    lossless: bool = False,
    crf: int = DELIVERY_CRF,
) -> VideoInfo:
    """Upscale the video ``input`` to ``output`` (H.264 4:2:0 at ``crf``, or the lossless
    intermediate format with ``lossless``; audio kept).

    scale: output size / input size (for Lanczos its ``factor``; for a model upscaler the model's
    own scale, or another value reached by a final Lanczos resize); height: output height in
    pixels (aspect kept, even width); at most one of them, neither → the preset's own.
    Returns the output's measured :class:`VideoInfo`. Raises :class:`InputError` (also for an odd
    width or height without ``lossless``: 4:2:0 needs even sizes).
    """
    if scale is not None and height is not None:
        raise InputError(None, "upscale: give --scale or --height, not both")
    if height is not None and not 16 <= height <= MAX_SIDE:
        raise InputError(None, f"upscale --height {height}: give 16 to {MAX_SIDE} pixels (8K is the largest output side)")
    p = _preset(preset)
    engine = p.stage("upscaled").engine
    overrides: dict = {}
    drop: tuple[str, ...] = ()
    if scale is not None:
        if engine in FACTOR_SCALED_UPSCALERS:
            overrides["factor"] = scale
        else:
            overrides["scale"] = scale
        drop = ("height",)
    elif height is not None:
        overrides["height"] = int(height)
        drop = ("scale",)
    return _run("upscaled", "upscale", input, output, p, _section(p, "upscaled", overrides, drop), lossless, crf)
