"""Preview keyframe engine: the scene's own image, or a procedural placeholder from the seed."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from wan_pipeline.engines.base import KeyframeRequest, parse_params
from wan_pipeline.media.image_io import fit_image


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def procedural_image(seed: int, width: int, height: int, label: str = "") -> np.ndarray:
    """A deterministic placeholder keyframe, uint8 (height, width, 3).

    A smooth colour field from ``seed`` with a grid and the word PLACEHOLDER, so nobody mistakes it
    for generated art; same seed → same image.
    """
    rng = np.random.default_rng(seed)
    corners = rng.integers(40, 216, size=(2, 2, 3)).astype(np.float32)
    grad = cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy, phase = rng.uniform(2, 6), rng.uniform(2, 6), rng.uniform(0, 2 * np.pi)
    wave = 24 * np.sin(2 * np.pi * (fx * xs / width + fy * ys / height) + phase)
    img = np.clip(grad + wave[..., None], 0, 255).astype(np.uint8)
    step = max(8, min(width, height) // 8)
    img[::step, :, :] = 255 - img[::step, :, :]
    img[:, ::step, :] = 255 - img[:, ::step, :]
    scale = max(0.3, min(width, height) / 300)
    for text, dy in (("PLACEHOLDER", 0), (label[:24], 1)):
        if not text:
            continue
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        org = ((width - tw) // 2, height // 2 + dy * int(th * 1.8))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return img


class ImageOrProceduralKeyframe:
    """Keyframe from the scene's image (cover-fit and centre-cropped to the preset size), or,
    with no image, :func:`procedural_image` from the scene's seed (marked as a placeholder)."""

    name = "image_or_procedural"

    def __init__(self, params: dict, preset):
        parse_params(_Params, params, preset, "keyframe")

    def describe(self) -> dict:
        return {"engine": self.name, "model": None}

    def render(self, request: KeyframeRequest) -> np.ndarray:
        if request.image is not None:
            return fit_image(request.image, request.width, request.height)
        return procedural_image(request.seed, request.width, request.height, request.scene_id)
