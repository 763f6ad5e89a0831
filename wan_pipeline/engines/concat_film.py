"""Preview film engine: the scenes in story order, seams joined without changing the duration.

Every scene clip covers its ``duration_s`` with both ends included, so consecutive scenes share
one instant. At a handoff the next scene's first frame duplicates the previous scene's last one
and is dropped. At a cut the previous scene's last frame is dropped and ``crossfade_frames``
frames around the cut dissolve from one scene into the other (each side held on its edge frame),
so the film lasts the sum of the scenes' durations.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import FilmRequest, parse_params
from wan_pipeline.errors import StageError
from wan_pipeline.media.clip import Clip


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


class ConcatFilm:
    """Film engine ``concat``: see the module docstring. meta: ``seams`` (one row per seam),
    ``seam_frames`` (frames changed around cuts)."""

    name = "concat"

    def __init__(self, params: dict, preset):
        self.params = parse_params(_Params, params, preset, "film")

    def describe(self) -> dict:
        return {"engine": self.name, "model": None, "crossfade_frames": self.params.crossfade_frames, "crf": self.params.crf}

    def join(self, request: FilmRequest) -> Clip:
        scenes = request.scenes
        if not scenes:
            raise StageError("the film needs at least one scene")
        check_compatible(scenes)
        parts: list[np.ndarray] = []
        seams = []
        changed = 0
        carry_edge = None  # A's dropped last frame, at a cut
        for i, s in enumerate(scenes):
            frames = s.upscaled.frames
            if i > 0 and scenes[i - 1].transition == "handoff":
                frames = frames[1:]
            last = i == len(scenes) - 1
            if not last and s.transition == "cut":
                carry = frames[-1]
                frames = frames[:-1]
            else:
                carry = None
            if i > 0 and scenes[i - 1].transition == "cut" and self.params.crossfade_frames:
                prev = parts[-1]
                m = min(self.params.crossfade_frames // 2, prev.shape[0], frames.shape[0])
                if m:
                    mixed = crossfade(prev[-m:], frames[:m], carry_edge, frames[0])
                    parts[-1] = np.concatenate([prev[:-m], mixed[:m]])
                    frames = np.concatenate([mixed[m:], frames[m:]])
                    changed += 2 * m
            if i > 0:
                seams.append({"after": scenes[i - 1].scene_id, "before": s.scene_id, "transition": scenes[i - 1].transition})
            parts.append(frames)
            carry_edge = carry
            request.progress(i + 1, len(scenes))
        film = np.concatenate(parts)
        return Clip(film, scenes[0].upscaled.fps, meta={"seams": seams, "seam_frames": changed})
