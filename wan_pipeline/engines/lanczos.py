"""Preview upscaling engine: Lanczos resampling (OpenCV ``INTER_LANCZOS4``, 8×8 kernel)."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import parse_params
from wan_pipeline.media.clip import Clip


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(2.0, gt=0, le=8)
    height: int | None = Field(None, ge=16, description="output height in pixels instead of a factor")


class LanczosUpscaler:
    """Upscaler ``lanczos``: (T, H, W, 3) → (T, round(H·f), round(W·f), 3), rounded to even
    sizes so the 4:2:0 film can be encoded; fps, frame count and audio unchanged."""

    name = "lanczos"

    def __init__(self, params: dict, preset):
        self.params = parse_params(_Params, params, preset, "upscaled")

    def describe(self) -> dict:
        return {"engine": self.name, "model": None, "upscale_factor": self.params.factor, "tile": None}

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if self.params.height:
            f = self.params.height / height
        else:
            f = self.params.factor
        ow, oh = round(width * f), round(height * f)
        return ow + ow % 2, oh + oh % 2

    def upscale(self, clip: Clip) -> Clip:
        ow, oh = self.output_size(clip.width, clip.height)
        out = np.empty((clip.num_frames, oh, ow, 3), dtype=np.uint8)
        for i, frame in enumerate(clip.frames):
            out[i] = cv2.resize(frame, (ow, oh), interpolation=cv2.INTER_LANCZOS4)
        return Clip(out, clip.fps, audio=clip.audio, meta={"upscale_factor": oh / clip.height, "tile": None})
