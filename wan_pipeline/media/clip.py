"""The in-memory video type every stage engine takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


def as_fps(value: float | int | str | Fraction) -> Fraction:
    """Return ``value`` as an exact rational frame rate.

    ``23.976`` and ``"24000/1001"`` both become ``Fraction(24000, 1001)``; integers stay exact.
    Raises ``ValueError`` for a non-positive rate.
    """
    if isinstance(value, Fraction):
        fps = value
    elif isinstance(value, str):
        fps = Fraction(value)
    elif isinstance(value, int):
        fps = Fraction(value)
    else:
        fps = Fraction(value).limit_denominator(1001)
        # NTSC rates written as decimals (23.976, 29.97, 59.94) mean N·1000/1001 (SMPTE ST 12-1)
        ntsc = Fraction(round(float(value) * 1.001) * 1000, 1001)
        if ntsc.denominator == 1001 and abs(float(ntsc) - float(value)) < 1e-3 and fps.denominator != 1:
            fps = ntsc
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {value!r}")
    return fps


@dataclass
class Clip:
    """A video in memory.

    frames: uint8 (T, H, W, 3), RGB.
    fps: frames per second, exact rational (e.g. ``Fraction(24000, 1001)``).
    audio: optional path of a file whose audio stream belongs to this clip (carried through
        post-processing stages, never decoded here).
    """

    frames: np.ndarray
    fps: Fraction
    audio: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fps = as_fps(self.fps)
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ValueError(f"Clip frames must be uint8 (T, H, W, 3), got {f.dtype} {f.shape}")
        if f.shape[0] < 1:
            raise ValueError("Clip needs at least one frame")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration_s(self) -> float:
        """Playing time in seconds: frames / fps."""
        return float(self.num_frames / self.fps)
