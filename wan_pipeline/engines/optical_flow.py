"""Preview interpolation engine: optical-flow frame synthesis with OpenCV DIS.

For each pair (I0, I1) both flows F01 and F10 are computed once; the frame at time t ∈ (0, 1) is
synthesised by backward-warping I0 and I1 with the intermediate flows of Jiang et al., "Super
SloMo" (CVPR 2018, eq. 4): F_t0 = −(1−t)·t·F01 + t²·F10 and F_t1 = (1−t)²·F01 − t(1−t)·F10,
then blending (1−t)·I0(warp) + t·I1(warp).

Frame arithmetic (×factor or a target fps, exact rational rates) and hard-cut handling (frames
inside a cut are copies of the nearer input frame) are shared with every interpolator:
:mod:`wan_pipeline.engines.interpolation`.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import parse_params
from wan_pipeline.engines.interpolation import interpolate_clip
from wan_pipeline.engines.scene_cuts import CutThresholds
from wan_pipeline.media.clip import Clip, as_fps
from wan_pipeline.media.stream import FrameStream

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: int | None = Field(None, description="frames per input interval; 2 or 4 (default 2 without target_fps)")
    target_fps: float | str | None = Field(None, description="output rate instead of a factor, e.g. 30 or '60000/1001'")
    dis_preset: str = Field("medium", pattern="^(ultrafast|fast|medium)$")
    scene_cut_threshold: float | None = Field(
        CutThresholds().correlation_below, description="histogram correlation under which a pair is a cut; null disables cut detection"
    )
    scene_cut_difference: float = Field(
        CutThresholds().difference_above, ge=0, le=1, description="mean abs difference (fraction of 255) over which a pair is a cut"
    )

    def model_post_init(self, __context) -> None:
        if self.factor is not None and self.target_fps is not None:
            raise ValueError("give factor or target_fps, not both")
        if self.factor is None and self.target_fps is None:
            self.factor = 2
        if self.factor is not None and self.factor not in (2, 4):
            raise ValueError("factor must be 2 or 4")
        if self.target_fps is not None:
            try:
                as_fps(self.target_fps)
            except (ValueError, ZeroDivisionError) as exc:
                raise ValueError(f"target_fps {self.target_fps!r} is not a positive rate ({exc})") from None


class FlowInterpolator:
    """Interpolator ``optical_flow``: ×factor frame rate by flow-based synthesis.

    interpolate(clip): n frames at fps → factor·(n−1)+1 frames at factor·fps (exact rational), or
    the frames of the input's time span at ``target_fps``; every input frame on the output grid is
    kept, the last one included. No frame is synthesised across a hard cut. Audio is carried
    through; meta: ``interp_factor``, ``scene_cuts``, ``duplicated_frames``, ``synthesised_frames``.
    """

    name = "optical_flow"

    def __init__(self, params: dict, preset):
        self.params = parse_params(_Params, params, preset, "interpolated")
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.params.dis_preset])
        p = self.params
        self.thresholds = (
            None
            if p.scene_cut_threshold is None
            else CutThresholds(correlation_below=p.scene_cut_threshold, difference_above=p.scene_cut_difference)
        )

    def describe(self) -> dict:
        p = self.params
        return {
            "engine": self.name,
            "model": None,
            "interp_factor": p.factor,
            "target_fps": str(as_fps(p.target_fps)) if p.target_fps is not None else None,
            "dis_preset": p.dis_preset,
            "scene_cut_threshold": p.scene_cut_threshold,
        }

    def flows(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward and backward flow between two frames uint8 (H, W, 3): float32 (H, W, 2) each,
        in pixels (F01 maps I0 pixels into I1)."""
        ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
        gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        return self._dis.calc(ga, gb, None), self._dis.calc(gb, ga, None)

    @staticmethod
    def synthesise(a: np.ndarray, b: np.ndarray, f01: np.ndarray, f10: np.ndarray, t: float, grid: np.ndarray) -> np.ndarray:
        """The frame at time t between a and b, uint8 (H, W, 3), from precomputed flows."""
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10
        w0 = cv2.remap(a, grid + ft0, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        w1 = cv2.remap(b, grid + ft1, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.addWeighted(w0, 1 - t, w1, t, 0)

    def interpolate(self, clip: Clip | FrameStream) -> Clip | FrameStream:
        """clip: a :class:`Clip` or a :class:`FrameStream` (uint8 (H, W, 3) frames); returns the
        same form, a stream computed pair by pair (see :func:`interpolate_clip`)."""
        h, w = clip.height, clip.width
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        grids: list[np.ndarray] = []

        def synthesise(jobs, src):
            if not grids:
                ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
                grids.append(np.dstack([xs, ys]))
            frames = []
            for a, t in jobs:
                if a not in cache:  # jobs arrive in pair order: keep only the current pair's flows
                    cache.clear()
                    cache[a] = self.flows(src[a], src[a + 1])
                f01, f10 = cache[a]
                frames.append(self.synthesise(src[a], src[a + 1], f01, f10, t, grids[0]))
            return np.stack(frames)

        return interpolate_clip(
            clip, synthesise, factor=self.params.factor, target_fps=self.params.target_fps, cut_thresholds=self.thresholds, batch_size=8
        )
