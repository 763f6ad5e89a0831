"""Preview interpolation engine: optical-flow frame synthesis with OpenCV DIS.

For each pair (I0, I1) both flows F01 and F10 are computed once; the frame at time t ∈ (0, 1) is
synthesised by backward-warping I0 and I1 with the intermediate flows of Jiang et al., "Super
SloMo" (CVPR 2018, eq. 4): F_t0 = −(1−t)·t·F01 + t²·F10 and F_t1 = (1−t)²·F01 − t(1−t)·F10,
then blending (1−t)·I0(warp) + t·I1(warp).
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import parse_params
from wan_pipeline.media.clip import Clip

_DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST, "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: int = Field(2, description="frames per input interval; 2 or 4")
    dis_preset: str = Field("medium", pattern="^(ultrafast|fast|medium)$")

    def model_post_init(self, __context) -> None:
        if self.factor not in (2, 4):
            raise ValueError("factor must be 2 or 4")


class FlowInterpolator:
    """Interpolator ``optical_flow``: ×factor frame rate by flow-based synthesis.

    interpolate(clip): n frames at fps → factor·(n−1)+1 frames at factor·fps (exact rational);
    every input frame is kept, the last one included. Audio is carried through.
    """

    name = "optical_flow"

    def __init__(self, params: dict, preset):
        self.params = parse_params(_Params, params, preset, "interpolated")
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.params.dis_preset])

    def describe(self) -> dict:
        return {"engine": self.name, "model": None, "interp_factor": self.params.factor, "dis_preset": self.params.dis_preset}

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

    def interpolate(self, clip: Clip) -> Clip:
        k = self.params.factor
        src = clip.frames
        n, h, w, _ = src.shape
        out = np.empty((k * (n - 1) + 1, h, w, 3), dtype=np.uint8)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        grid = np.dstack([xs, ys])
        for i in range(n - 1):
            a, b = src[i], src[i + 1]
            out[i * k] = a
            f01, f10 = self.flows(a, b)
            for j in range(1, k):
                out[i * k + j] = self.synthesise(a, b, f01, f10, j / k, grid)
        out[-1] = src[-1]
        meta = {"interp_factor": float(k)}
        return Clip(out, clip.fps * k, audio=clip.audio, meta=meta)
