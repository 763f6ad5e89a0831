"""What an engine is told about the render it serves: device, size, frame rate, where models and
the story live. Engines get it explicitly instead of reading the environment.

It carries the same attribute names an engine reads from a :class:`~wan_pipeline.preset.Preset`
(``name``, ``source_path``, ``device``, ``width``, ``height``, ``base_fps``), so an engine built
from a bare preset in a test behaves the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


@dataclass(frozen=True)
class EngineContext:
    """name: the preset's name; source_path: the preset file (errors name it); device: resolved
    torch device (``cpu``, ``cuda:0``); width, height: the base size in pixels; fps: the base frame
    rate (fps, float as written); storage_root: the storage root that relative ``model:`` paths are
    resolved against; story_dir: the story's folder (scene LoRAs and images), None outside a story.
    """

    name: str
    source_path: str | None
    device: str
    width: int
    height: int
    fps: float
    storage_root: Path
    story_dir: Path | None = None

    @property
    def base_fps(self) -> Fraction:
        """The base frame rate as an exact rational (``23.976`` → 24000/1001)."""
        return Fraction(self.fps).limit_denominator(1001)

    @property
    def models_root(self) -> Path:
        """``<storage root>/models``: where post-processing weights and the miniatures live."""
        return self.storage_root / "models"

    def model_path(self, model: str) -> Path:
        """A preset's model file or folder: absolute as given (``~`` expanded), else relative to the
        storage root. Never creates anything; a missing file is reported by the engine."""
        p = Path(model).expanduser()
        return p if p.is_absolute() else self.storage_root / p

    @classmethod
    def for_preset(
        cls, preset, *, device: str | None = None, storage_root: Path | None = None, story_dir: Path | None = None
    ) -> EngineContext:
        """The context of ``preset`` (a :class:`~wan_pipeline.preset.Preset`, or an EngineContext
        returned as is): device resolved from the preset unless given; storage root from the
        environment (:func:`wan_pipeline.storage.storage_root`) unless given."""
        if isinstance(preset, EngineContext):
            return preset
        from wan_pipeline.devices import pick_device
        from wan_pipeline.storage import storage_root as default_root

        return cls(
            name=getattr(preset, "name", "preset"),
            source_path=getattr(preset, "source_path", None),
            device=pick_device(device or getattr(preset, "device", "auto")),
            width=int(getattr(preset, "width", 0)),
            height=int(getattr(preset, "height", 0)),
            fps=float(getattr(preset, "fps", 16)),
            storage_root=Path(storage_root) if storage_root is not None else default_root(),
            story_dir=story_dir,
        )
