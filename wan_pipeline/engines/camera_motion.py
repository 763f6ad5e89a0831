"""Preview clip engine: a camera move (zoom / pan) over the keyframe, dissolving into the next one.

With a handoff, the same camera move is applied to the next keyframe, arranged so that it lands
exactly on the un-warped next keyframe at the last frame: clip[i] ends where clip[i+1] begins.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import ClipRequest, parse_params
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handoff_blend: float = Field(0.4, gt=0, le=1, description="fraction of the clip (at its end) that dissolves into the next keyframe")
    motion_strength: float = Field(0.12, ge=0, le=0.5, description="zoom factor growth / pan distance over the clip")


def base_frame_count(duration_s: float, fps: Fraction) -> int:
    """Frames of a clip covering ``duration_s`` seconds at ``fps``: round(duration·fps) + 1
    (both ends included, so consecutive clips share their seam frame)."""
    return max(2, round(duration_s * fps) + 1)


def camera_matrix(camera: str, t: float, width: int, height: int, strength: float) -> np.ndarray:
    """The 2x3 affine map (output pixel → source pixel) of a camera move at time t ∈ [0, 1].

    Identity at t = 0. Zoom scales about the centre by 1 + strength·t; pans combine a zoom with a
    shift of strength·t/2.2 of the frame, which keeps the view inside the image (no borders).
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    s = 1.0 + strength * t
    dx = dy = 0.0
    if camera == "zoom_out":
        s = 1.0 / (1.0 + strength * t)
    shift = strength * t / 2.2
    if camera == "pan_left":
        dx = -shift * width
    elif camera == "pan_right":
        dx = shift * width
    elif camera == "pan_up":
        dy = -shift * height
    elif camera == "pan_down":
        dy = shift * height
    elif camera == "static":
        s = 1.0
    # output (x, y) samples source (cx + dx + (x - cx)/s, cy + dy + (y - cy)/s)
    inv = 1.0 / s
    return np.array([[inv, 0.0, cx + dx - cx * inv], [0.0, inv, cy + dy - cy * inv]], dtype=np.float64)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Affine composition: (a ∘ b)(p) = a(b(p)) for 2x3 matrices."""
    A = np.vstack([a, [0, 0, 1]])
    B = np.vstack([b, [0, 0, 1]])
    return (A @ B)[:2]


def _invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def _warp(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if np.allclose(m, [[1, 0, 0], [0, 1, 0]]):
        return image.astype(np.float32)
    return cv2.warpAffine(
        image.astype(np.float32), m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT101
    )


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


class CameraMotionClip:
    """Clip engine ``camera_motion``: frames = camera move over the keyframe at the base fps.

    Frame count: :func:`base_frame_count`. Frame 0 equals the keyframe. With ``request.last``
    (handoff), the last ``handoff_blend`` of the clip dissolves (smoothstep) into the next
    keyframe carried by the same camera move, composed so that it reaches the un-warped next
    keyframe at the final frame — which therefore equals ``request.last`` exactly.
    """

    name = "camera_motion"

    def __init__(self, params: dict, preset):
        self.params = parse_params(_Params, params, preset, "clip")

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "model": None,
            "handoff_blend": self.params.handoff_blend,
            "motion_strength": self.params.motion_strength,
        }

    def render(self, request: ClipRequest) -> Clip | FrameStream:
        n = base_frame_count(request.duration_s, request.fps)
        h, w = request.height, request.width
        first = request.first
        last = request.last
        if first.shape[:2] != (h, w) or (last is not None and last.shape[:2] != (h, w)):
            raise ValueError(
                f"keyframes must be {w}x{h}; got {first.shape[1]}x{first.shape[0]}"
                + (f" and {last.shape[1]}x{last.shape[0]}" if last is not None else "")
            )
        strength = self.params.motion_strength
        end = camera_matrix(request.camera, 1.0, w, h, strength)
        end_inv = _invert(end)
        blend_start = 1.0 - self.params.handoff_blend

        def frames():
            for i in range(n):
                t = i / (n - 1)
                m = camera_matrix(request.camera, t, w, h, strength)
                own = _warp(first, m)
                if last is not None and t > blend_start:
                    a = _smoothstep((t - blend_start) / self.params.handoff_blend)
                    # the next keyframe moves with the same camera, landing on identity at t = 1
                    nxt = _warp(last, _compose(end_inv, m))
                    out = (1 - a) * own + a * nxt
                else:
                    out = own
                yield np.clip(np.rint(out), 0, 255).astype(np.uint8)
                request.progress(i + 1, n)

        out = FrameStream(frames, n, request.fps, w, h, meta={"flf2v": last is not None, "camera": request.camera})
        return out if request.stream else out.collect()
