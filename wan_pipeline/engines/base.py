"""The stage interfaces every engine implements (classical preview engines and model engines).

Each engine is a plain object built once from its preset section and reused across scenes; it
never knows about Dagster or partitions. Engines report what they did in ``describe()`` (static
parameters: ``model``, ``steps``, ``interp_factor`` …) and, per output, in ``Clip.meta`` (measured
facts: ``flf2v``, ``scene_cuts`` …); the GPU resource merges both into the stage telemetry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol, runtime_checkable

import numpy as np

from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream

ProgressFn = Callable[[int, int], None]
"""progress(done, total): called by long engines after each step (denoising step, frame …)."""
LogFn = Callable[[str], None]


def _noop_progress(done: int, total: int) -> None:
    return None


def _noop_log(message: str) -> None:
    return None


@dataclass
class KeyframeRequest:
    """What the keyframe stage is asked for.

    image: the scene's own picture, uint8 (H, W, 3) at its file's size, or None (text-to-image).
    width, height: output size in pixels (the preset's base resolution).
    """

    scene_id: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    image: np.ndarray | None = None
    progress: ProgressFn = _noop_progress
    log: LogFn = _noop_log


@dataclass
class ClipRequest:
    """What the clip stage is asked for.

    first: uint8 (H, W, 3), the scene's keyframe (the clip's first frame).
    last: uint8 (H, W, 3) or None: the next scene's keyframe, the FLF2V end frame (handoff).
    duration_s: seconds of finished film; fps: the base frame rate (exact rational).
    stream: return a :class:`FrameStream` whose frames are made as they are read (a segment at a
        time for the clip model) instead of a :class:`Clip` in memory.
    """

    scene_id: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    fps: Fraction
    duration_s: float
    first: np.ndarray
    last: np.ndarray | None = None
    camera: str = "static"
    guidance_scale: float | None = None
    steps: int | None = None
    loras: tuple = ()
    progress: ProgressFn = _noop_progress
    log: LogFn = _noop_log
    stream: bool = False


@dataclass
class FilmScene:
    """One scene as the film stage sees it.

    upscaled: the finished scene (after interpolation and upscaling), in memory or as a stream
        (the film stage opens the files as streams and reads each once, in order).
    native: the scene's ``clip`` at the model's native size and fps (seam context for VACE; only
        the context frames around a seam are read).
    transition: how this scene joins the NEXT one: ``handoff`` | ``cut`` (ignored for the last).
    """

    scene_id: str
    upscaled: Clip | FrameStream
    native: Clip | FrameStream
    transition: str
    prompt: str = ""


@dataclass
class FilmRequest:
    """The film stage's input: the scenes in story order and the engines that made them.

    interpolator/upscaler: the scenes' own engines, for seam frames regenerated at native size.
    """

    scenes: list[FilmScene]
    interpolator: Interpolator | None = None
    upscaler: Upscaler | None = None
    seed: int = 0
    progress: ProgressFn = _noop_progress
    log: LogFn = _noop_log
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    name: str

    def describe(self) -> dict:
        """Static telemetry of this engine: ``engine``, ``model`` and stage parameters."""


class KeyframeEngine(Engine, Protocol):
    def render(self, request: KeyframeRequest) -> np.ndarray:
        """Return the keyframe, uint8 (request.height, request.width, 3)."""


class ClipEngine(Engine, Protocol):
    def render(self, request: ClipRequest) -> Clip | FrameStream:
        """Return the scene clip at the base fps (a stream when ``request.stream``); frame 0 ≈
        ``first``; with ``last``, the final frame ≈ ``last`` (FLF2V). ``meta`` carries ``flf2v``
        (bool) and model facts."""


class Interpolator(Engine, Protocol):
    def interpolate(self, clip: Clip | FrameStream) -> Clip | FrameStream:
        """Return the video at a higher frame rate, in the form given (a stream is computed pair
        by pair as it is read); ``meta['interp_factor']``."""


class Upscaler(Engine, Protocol):
    def upscale(self, clip: Clip | FrameStream) -> Clip | FrameStream:
        """Return the video at a higher resolution, in the form given (a stream is upscaled a
        batch at a time as it is read); ``meta['upscale_factor']``."""


class FilmJoiner(Engine, Protocol):
    def join(self, request: FilmRequest) -> FrameStream:
        """Return the whole film as a stream: every scene in order, seams joined, made as it is
        read (one scene's frames and one seam's at a time); ``meta['seam_frames']``, complete
        once the frames are consumed."""


def parse_params(model_cls, params: dict, preset, stage: str):
    """Validate an engine's preset parameters with the pydantic ``model_cls``.

    Raises :class:`~wan_pipeline.errors.InputError` naming the preset file and the field as
    ``stages.<stage>.<field>``.
    """
    from pydantic import ValidationError

    from wan_pipeline.config_files import validation_problems
    from wan_pipeline.errors import InputError

    try:
        return model_cls.model_validate(params)
    except ValidationError as err:
        problems = [f"stages.{stage}.{p}" for p in validation_problems(model_cls, err)]
        raise InputError(getattr(preset, "source_path", None), problems) from None
