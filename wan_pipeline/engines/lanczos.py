"""Preview upscaling engine: Lanczos resampling (OpenCV ``INTER_LANCZOS4``, 8×8 kernel)."""

from __future__ import annotations

import cv2
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import parse_params
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream, check_window, map_frames


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
        self.source = getattr(preset, "source_path", None)

    def describe(self) -> dict:
        return {"engine": self.name, "model": None, "upscale_factor": self.params.factor, "tile": None}

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the output for a ``width × height`` input; raises :class:`InputError`
        naming ``stages.upscaled.height`` / ``factor`` for an output over 8K on a side."""
        if self.params.height:
            f = self.params.height / height
        else:
            f = self.params.factor
        ow, oh = round(width * f), round(height * f)
        ow, oh = ow + ow % 2, oh + oh % 2
        check_window(1, ow, oh, "stages.upscaled.height" if self.params.height else "stages.upscaled.factor", self.source)
        return ow, oh

    def upscale(self, clip: Clip | FrameStream) -> Clip | FrameStream:
        """clip: a :class:`Clip` or :class:`FrameStream`; returns the same form, frame by frame."""
        ow, oh = self.output_size(clip.width, clip.height)
        meta = {"upscale_factor": oh / clip.height, "tile": None}
        return map_frames(clip, lambda f: cv2.resize(f, (ow, oh), interpolation=cv2.INTER_LANCZOS4), meta, ow, oh)
