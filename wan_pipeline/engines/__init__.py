"""Stage engines: one plain object per stage and engine, built from a preset section.

See :mod:`wan_pipeline.engines.base` for the interfaces and :mod:`wan_pipeline.engines.registry`
for building an engine from a preset section (the names a preset may use are the stage table's,
:mod:`wan_pipeline.stages`). This package only re-exports the interfaces, so importing it stays
light (no engine, no torch).
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
]
