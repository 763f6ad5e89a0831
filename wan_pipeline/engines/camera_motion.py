"""Preview clip engine: a camera move inside the keyframe, then a short optical-flow transition.

The camera is a crop window that always lies inside the keyframe, scaled to the frame size
(a "Ken Burns" move): no pixel of a frame comes from outside the photo, so there is never padding
or mirrored content at the borders. Frame 0 is the keyframe itself (the window is the full frame),
as for every clip engine, so handoff seams stay exact.

With a handoff (``request.last``, the next scene's keyframe) the clip's last ``handoff_s`` seconds
are a flow-driven morph from the scene's own frames into the next keyframe (OpenCV DIS flow, the
intermediate-flow synthesis of :class:`~wan_pipeline.engines.optical_flow.FlowInterpolator`),
ending exactly on it: clip[i] ends where clip[i+1] begins.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import ClipRequest, parse_params
from wan_pipeline.engines.optical_flow import FlowInterpolator
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream

#: Fraction of a ``zoom_out`` clip spent pushing in before the long pull-back to the full frame.
#: The first frame must be the keyframe (the full photo) and nothing outside the photo exists, so a
#: zoom-out can only show a wider view than an earlier, tighter one: it eases in over this first
#: part, then zooms out for the rest of the clip and ends on the full frame.
ZOOM_OUT_PUSH = 0.25


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handoff_s: float = Field(
        0.5, gt=0, le=2.0, description="seconds, at the clip's end, of the optical-flow transition into the next keyframe"
    )
    motion_strength: float = Field(0.12, ge=0, le=0.5, description="zoom factor growth over the clip (pans zoom by it to gain room)")


def base_frame_count(duration_s: float, fps: Fraction) -> int:
    """Frames of a clip covering ``duration_s`` seconds at ``fps``: round(duration·fps) + 1
    (both ends included, so consecutive clips share their seam frame)."""
    return max(2, round(duration_s * fps) + 1)


def transition_frame_count(handoff_s: float, fps: Fraction, frames: int) -> int:
    """Frames of the handoff transition: round(handoff_s·fps), at least 1, at most frames − 1
    (frame 0 always stays the keyframe)."""
    return int(min(frames - 1, max(1, round(handoff_s * fps))))


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def camera_window(camera: str, t: float, width: int, height: int, strength: float) -> tuple[float, float, float, float]:
    """The part of the keyframe shown at time t ∈ [0, 1]: (x0, y0, x1, y1) in pixels, edge
    coordinates (the full frame is (0, 0, width, height)), always inside the frame.

    zoom_in: the window shrinks about the centre to 1/(1 + strength) of the frame. zoom_out: the
    full frame at t = 0 and t = 1, tightest (1/(1 + strength)) at t = :data:`ZOOM_OUT_PUSH`, so most
    of the clip is a pull-back that ends on the whole photo. pan_*: the window zooms like zoom_in
    and slides over the whole margin this gives, towards the named side. static: the full frame.
    """
    if camera == "static" or strength == 0:
        zoom = 0.0
    elif camera == "zoom_out":
        zoom = _smoothstep(t / ZOOM_OUT_PUSH) if t < ZOOM_OUT_PUSH else 1.0 - _smoothstep((t - ZOOM_OUT_PUSH) / (1.0 - ZOOM_OUT_PUSH))
    else:
        zoom = t
    s = 1.0 + strength * zoom
    ww, wh = width / s, height / s
    x0, y0 = (width - ww) / 2, (height - wh) / 2  # centred; the margin on each side is x0 / y0
    if camera == "pan_left":
        x0 = 0.0
    elif camera == "pan_right":
        x0 = width - ww
    elif camera == "pan_up":
        y0 = 0.0
    elif camera == "pan_down":
        y0 = height - wh
    return (x0, y0, x0 + ww, y0 + wh)


def window_matrix(window: tuple[float, float, float, float], width: int, height: int) -> np.ndarray:
    """The 2x3 affine map (output pixel centre → source pixel coordinates) that scales ``window``
    to a ``width`` × ``height`` frame."""
    x0, y0, x1, y1 = window
    sx, sy = (x1 - x0) / width, (y1 - y0) / height
    return np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]], dtype=np.float64)


def render_window(image: np.ndarray, window: tuple[float, float, float, float]) -> np.ndarray:
    """``image`` uint8 (H, W, 3) cropped to ``window`` (see :func:`camera_window`) and scaled back to
    (H, W) with bicubic interpolation; the full-frame window returns the image unchanged. Samples
    that fall between the outermost pixel centres and the photo's edge repeat the edge pixel
    (``BORDER_REPLICATE``), never mirrored content."""
    h, w = image.shape[:2]
    if np.allclose(window, (0, 0, w, h)):
        return image.copy()
    m = window_matrix(window, w, h)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


class CameraMotionClip:
    """Clip engine ``camera_motion``: a camera move inside the keyframe at the base fps.

    Frame count: :func:`base_frame_count`; frame 0 is the keyframe. Each frame shows the window
    :func:`camera_window` of the keyframe at t = i / (frames − 1). With
    ``request.last`` (handoff), the last :func:`transition_frame_count` frames morph along optical
    flow from the camera move into the next keyframe (smoothstep timing); the final frame equals
    ``request.last`` exactly. meta: ``flf2v``, ``camera``, ``transition_frames``, ``transition_s``.
    Raises ``ValueError`` when a keyframe is not ``width`` × ``height``.
    """

    name = "camera_motion"

    def __init__(self, params: dict, preset):
        self.params = parse_params(_Params, params, preset, "clip")
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "model": None,
            "handoff_s": self.params.handoff_s,
            "motion_strength": self.params.motion_strength,
        }

    def _flows(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        return self._dis.calc(ga, gb, None), self._dis.calc(gb, ga, None)

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
        transition = transition_frame_count(self.params.handoff_s, request.fps, n) if last is not None else 0
        start = n - 1 - transition  # the last frame of the camera move alone
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        grid = np.dstack([xs, ys])

        def frames():
            for i in range(n):
                own = render_window(first, camera_window(request.camera, i / (n - 1), w, h, strength))
                if last is not None and i == n - 1:
                    frame = last
                elif last is not None and i > start:
                    # the camera keeps moving while the shot flows into the next keyframe
                    a = _smoothstep((i - start) / transition)
                    f01, f10 = self._flows(own, last)
                    frame = FlowInterpolator.synthesise(own, last, f01, f10, a, grid)
                else:
                    frame = own
                yield np.asarray(frame, dtype=np.uint8)
                request.progress(i + 1, n)

        meta = {
            "flf2v": last is not None,
            "camera": request.camera,
            "transition_frames": transition,
            "transition_s": float(Fraction(transition) / request.fps),
        }
        out = FrameStream(frames, n, request.fps, w, h, meta=meta)
        return out if request.stream else out.collect()
