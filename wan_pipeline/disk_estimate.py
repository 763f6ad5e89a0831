"""How much disk a story's video outputs take, per stage, from the preset alone (no weights read).

Each video stage of the stage table gets its frame size and rate from the stage before it: the
clip model renders the preset's base size and rate, an interpolator multiplies the rate (``factor``
or ``target_fps``), an upscaler the size (``height``, ``factor``/``scale``, or the ``xN`` in the
model file's name, e.g. ``RealESRGAN_x2plus.pth``). Bytes per pixel were measured on the demo
story's outputs (``stories/launch_day.yaml``, preset ``preview``): lossless intermediates
(libx264rgb qp 0) 0.77–0.87 B/px, the CRF 18 film 0.010 B/px; model output is noisier than camera
moves over photos, so the estimate rounds the intermediates up to :data:`LOSSLESS_BYTES_PER_PIXEL`.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

LOSSLESS_BYTES_PER_PIXEL = 0.9
"""Bytes per pixel of a lossless intermediate (measured 0.77–0.87 on the demo, rounded up)."""
FILM_BYTES_PER_PIXEL = 0.01
"""Bytes per pixel of the 4:2:0 CRF 18 delivery film (measured 0.010 on the demo)."""


def _even(x: float) -> int:
    n = round(x)
    return n + n % 2


def stage_formats(preset) -> dict[str, tuple[int, int, Fraction]]:
    """``{stage: (width, height, fps)}`` of every video stage of ``preset``, in graph order."""
    from wan_pipeline.engines.base import ClipEngine, FilmJoiner, Interpolator, Upscaler
    from wan_pipeline.media.clip import as_fps
    from wan_pipeline.stages import STAGES

    formats: dict[str, tuple[int, int, Fraction]] = {}
    for row in STAGES:
        if row.kind != "video":
            continue
        params = preset.stage(row.name).params
        if row.protocol is ClipEngine:
            formats[row.name] = (preset.width, preset.height, as_fps(preset.fps))
            continue
        w, h, fps = formats[row.upstream_stages()[0]]
        if row.protocol is Interpolator:
            fps = as_fps(params["target_fps"]) if params.get("target_fps") else fps * int(params.get("factor") or 2)
        elif row.protocol is Upscaler:
            if params.get("height"):
                w, h = _even(w * params["height"] / h), int(params["height"])
            else:
                found = re.search(r"x(\d)", Path(str(params.get("model") or "")).name)
                f = float(params.get("factor") or params.get("scale") or (found.group(1) if found else 2))
                w, h = _even(w * f), _even(h * f)
        elif row.protocol is FilmJoiner:
            pass
        formats[row.name] = (w, h, fps)
    return formats


def disk_per_minute(preset) -> dict[str, float]:
    """MB of each video stage's outputs per minute of film for ``preset`` (see the module doc)."""
    from wan_pipeline.stages import STAGES

    out = {}
    for stage, (w, h, fps) in stage_formats(preset).items():
        bpp = LOSSLESS_BYTES_PER_PIXEL if STAGES[stage].lossless else FILM_BYTES_PER_PIXEL
        out[stage] = round(w * h * float(fps) * 60 * bpp / 1e6, 1)
    return out
