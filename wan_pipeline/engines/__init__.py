"""Stage engines: one plain object per stage and engine, built from a preset section.

See :mod:`wan_pipeline.engines.base` for the interfaces and :mod:`wan_pipeline.engines.registry`
for the names a preset may use.
"""

from wan_pipeline.engines.base import (
    ClipEngine,
    ClipRequest,
    FilmJoiner,
    FilmRequest,
    FilmScene,
    Interpolator,
    KeyframeEngine,
    KeyframeRequest,
    Upscaler,
)
from wan_pipeline.engines.registry import build_engine, engine_names

__all__ = [
    "ClipEngine",
    "ClipRequest",
    "FilmJoiner",
    "FilmRequest",
    "FilmScene",
    "Interpolator",
    "KeyframeEngine",
    "KeyframeRequest",
    "Upscaler",
    "build_engine",
    "engine_names",
]
