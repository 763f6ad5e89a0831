"""Preview film engine: the scenes in story order, seams joined without changing the duration.

Every scene clip covers its ``duration_s`` with both ends included, so consecutive scenes share
one instant. At a handoff the next scene's first frame duplicates the previous scene's last one
and is dropped. At a cut the previous scene's last frame is dropped and ``crossfade_frames``
frames around the cut dissolve from one scene into the other (each side held on its edge frame),
so the film lasts the sum of the scenes' durations.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import FilmRequest, FilmScene, parse_params
from wan_pipeline.errors import StageError
from wan_pipeline.media.stream import FrameStream, as_stream, check_window


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    crossfade_frames: int = Field(8, ge=0, le=240)
    crf: int = Field(18, ge=0, le=51, description="H.264 constant rate factor of the delivery file")


def crossfade(tail: np.ndarray, head: np.ndarray, a_edge: np.ndarray, b_edge: np.ndarray) -> np.ndarray:
    """Dissolve across a cut without adding frames.

    tail: uint8 (m, H, W, 3), the last m kept frames of scene A; head: uint8 (m, H, W, 3), the
    first m frames of scene B; a_edge / b_edge: A's dropped last frame and B's first frame, which
    stand in for the other side. Returns uint8 (2m, H, W, 3) replacing tail + head.
    """
    m = tail.shape[0]
    out = np.empty((2 * m,) + tail.shape[1:], dtype=np.uint8)
    for j in range(2 * m):
        alpha = (j + 0.5) / (2 * m)
        a = tail[j] if j < m else a_edge
        b = b_edge if j < m else head[j - m]
        out[j] = np.clip(np.rint((1 - alpha) * a.astype(np.float32) + alpha * b.astype(np.float32)), 0, 255).astype(np.uint8)
    return out


def check_compatible(scenes) -> None:
    """All scenes must share fps and size; raises :class:`StageError` naming the odd scene."""
    first = scenes[0].upscaled
    for s in scenes[1:]:
        c = s.upscaled
        if c.fps != first.fps or (c.width, c.height) != (first.width, first.height):
            raise StageError(
                f"scene {s.scene_id!r} is {c.width}x{c.height} at {c.fps} fps but {scenes[0].scene_id!r} is "
                f"{first.width}x{first.height} at {first.fps} fps: re-render the scenes with one preset"
            )


def held_back(frames: Iterator[np.ndarray], count: int, tail: list) -> Iterator[np.ndarray]:
    """Yield ``frames`` except the last ``count``, which end up in ``tail`` (a list the caller
    passes in, filled when ``frames`` is exhausted). Holds ``count`` frames at most."""
    buffer: deque[np.ndarray] = deque()
    for frame in frames:
        buffer.append(frame)
        if len(buffer) > count:
            yield buffer.popleft()
    tail.extend(buffer)


class ConcatFilm:
    """Film engine ``concat``: see the module docstring. meta: ``seams`` (one row per seam),
    ``seam_frames`` (frames changed around cuts).

    The film streams: each scene is read once, in order; at a cut the last ``crossfade_frames / 2``
    frames of the left scene are held back until the right scene's first ones arrive.
    """

    name = "concat"

    def __init__(self, params: dict, preset):
        self.params = parse_params(_Params, params, preset, "film")
        self.source = getattr(preset, "source_path", None)

    def describe(self) -> dict:
        return {"engine": self.name, "model": None, "crossfade_frames": self.params.crossfade_frames, "crf": self.params.crf}

    def join(self, request: FilmRequest) -> FrameStream:
        """The film as a stream: uint8 (H, W, 3) frames at the scenes' fps, as many as the scenes'
        durations (see the module docstring). Raises :class:`StageError` for no scenes or scenes
        of different sizes or rates."""
        scenes = [FilmScene(s.scene_id, as_stream(s.upscaled), s.native, s.transition, s.prompt) for s in request.scenes]
        if not scenes:
            raise StageError("the film needs at least one scene")
        check_compatible(scenes)
        last_i = len(scenes) - 1
        drop_first = [i > 0 and scenes[i - 1].transition == "handoff" for i in range(len(scenes))]
        drop_last = [i < last_i and s.transition == "cut" for i, s in enumerate(scenes)]
        kept = [s.upscaled.num_frames - drop_first[i] - drop_last[i] for i, s in enumerate(scenes)]
        # frames dissolved on each side of the cut after scene i
        fade = [
            min(self.params.crossfade_frames // 2, kept[i], kept[i + 1]) if drop_last[i] and self.params.crossfade_frames else 0
            for i in range(last_i)
        ] + [0]
        first = scenes[0].upscaled
        check_window(2 * max(fade) + 2, first.width, first.height, "stages.film.crossfade_frames", self.source)
        seams = [
            {"after": scenes[i - 1].scene_id, "before": s.scene_id, "transition": scenes[i - 1].transition}
            for i, s in enumerate(scenes)
            if i > 0
        ]
        meta = {"seams": seams, "seam_frames": 2 * sum(fade)}

        def frames():
            tail: list[np.ndarray] = []  # the left scene's held-back frames at a cut
            edge = None  # the left scene's dropped last frame at a cut
            for i, s in enumerate(scenes):
                n = s.upscaled.num_frames
                carry: list[np.ndarray] = []

                def kept_frames(s=s, n=n, i=i, carry=carry):
                    for j, frame in enumerate(s.upscaled):
                        if j == 0 and drop_first[i]:
                            continue
                        if j == n - 1 and drop_last[i]:
                            carry.append(frame)
                            continue
                        yield frame

                part = kept_frames()
                m = fade[i - 1] if i > 0 else 0
                if m:  # the cut before this scene: dissolve the held-back tail into this scene's head
                    head = np.stack([next(part) for _ in range(m)])
                    mixed = crossfade(np.stack(tail), head, edge, head[0])
                    yield from mixed[:m]
                    part = itertools.chain(mixed[m:], part)
                new_tail: list[np.ndarray] = []
                yield from held_back(part, fade[i], new_tail)
                tail, edge = new_tail, (carry[0] if carry else None)
                request.progress(i + 1, len(scenes))

        return FrameStream(frames, sum(kept), first.fps, first.width, first.height, meta=meta)
