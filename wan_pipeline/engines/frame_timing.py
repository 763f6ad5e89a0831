"""Exact frame arithmetic for frame interpolation: which output frame comes from where.

Rule (shared by every interpolator): the output spans exactly the input's time span, from the
first frame's timestamp 0 to the last frame's timestamp (n − 1) / fps_in. Output frame i sits at
time i / fps_out for i in 0 … floor((n − 1) · fps_out / fps_in); in input-frame units that is the
position p = i · fps_in / fps_out, read as source index a = floor(p) and timestep t = p − a in
[0, 1) between input frames a and a + 1. t = 0 is the input frame itself (copied, never
synthesised); the last input frame is kept whenever it lands on the output grid, which it always
does for an integer factor k: n frames become k·(n − 1) + 1 at k·fps_in. Frame rates are exact
fractions, so 24000/1001 × 2 is 48000/1001 and timestamps never drift (no float accumulation).

Playing time (frames / fps) of the output is (n − 1) / fps_in + 1 / fps_out: the time span plus one
output frame, i.e. (k − 1) / (k · fps_in) shorter than the input's n / fps_in for factor k.

Pure functions, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from wan_pipeline.media.clip import as_fps


@dataclass(frozen=True)
class FrameSource:
    """Where one output frame comes from: input frame ``index`` (a) and timestep ``t`` in [0, 1)
    towards input frame a + 1. ``t == 0`` means the input frame itself."""

    index: int
    t: Fraction


def interpolated_count(num_frames: int, factor: int) -> int:
    """Frames after interpolating ``num_frames`` by integer ``factor``: k·(n − 1) + 1."""
    if num_frames < 1 or factor < 1:
        raise ValueError(f"need num_frames >= 1 and factor >= 1, got {num_frames}, {factor}")
    return factor * (num_frames - 1) + 1


def factor_fps(fps: Fraction | float | str, factor: int) -> Fraction:
    """Exact output rate for integer ``factor``: 16 → 32, 24000/1001 × 2 → 48000/1001."""
    return as_fps(fps) * factor


def factor_sources(num_frames: int, factor: int) -> list[FrameSource]:
    """Output frame sources for integer ``factor``: frame i comes from (i // k, (i % k) / k);
    the last output frame is the last input frame (n − 1, 0)."""
    count = interpolated_count(num_frames, factor)
    return [FrameSource(i // factor, Fraction(i % factor, factor)) for i in range(count)]


def target_sources(num_frames: int, fps_in: Fraction | float | str, fps_out: Fraction | float | str) -> list[FrameSource]:
    """Output frame sources for an arbitrary output rate (e.g. 16 → 30, 24000/1001 → 60).

    Output timestamps i / fps_out for i in 0 … floor((n − 1) · fps_out / fps_in) (see the module rule);
    the last input frame is included exactly when (n − 1) · fps_out / fps_in is an integer.
    """
    fps_in, fps_out = as_fps(fps_in), as_fps(fps_out)
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    ratio = fps_in / fps_out  # input frames advanced per output frame
    last = math.floor((num_frames - 1) / ratio)
    sources = []
    for i in range(last + 1):
        p = i * ratio
        a = math.floor(p)
        sources.append(FrameSource(a, p - a))
    return sources


@dataclass(frozen=True)
class InterpolationPlan:
    """Everything an interpolator needs to build its output.

    fps: exact output rate; sources: one :class:`FrameSource` per output frame;
    cut_pairs: pair indices a (between input frames a and a + 1) that are hard cuts;
    copies[i]: the input frame that output frame i copies, or None when it must be synthesised.
    A frame inside a cut pair copies the nearer input frame (t < 1/2 → a, else a + 1).
    """

    fps: Fraction
    sources: tuple[FrameSource, ...]
    cut_pairs: frozenset[int] = field(default_factory=frozenset)
    copies: tuple[int | None, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.sources)

    @property
    def duplicated_frames(self) -> int:
        """Output frames that fell inside a cut pair and were copied instead of synthesised."""
        return sum(1 for s, c in zip(self.sources, self.copies) if s.t != 0 and c is not None)

    @property
    def synthesis(self) -> list[tuple[int, int, float]]:
        """``(output index, source index a, t)`` of every frame the network must synthesise."""
        return [(i, s.index, float(s.t)) for i, (s, c) in enumerate(zip(self.sources, self.copies)) if c is None]


def plan_interpolation(
    num_frames: int,
    fps_in: Fraction | float | str,
    *,
    factor: int | None = None,
    target_fps: Fraction | float | str | None = None,
    cut_pairs=(),
) -> InterpolationPlan:
    """Plan an interpolation by integer ``factor`` or to ``target_fps`` (exactly one of them).

    cut_pairs: iterable of pair indices that are hard cuts (from :mod:`wan_pipeline.engines.scene_cuts`).
    Raises ``ValueError`` when both or neither of factor/target_fps are given.
    """
    if (factor is None) == (target_fps is None):
        raise ValueError("give exactly one of factor and target_fps")
    fps_in = as_fps(fps_in)
    if factor is not None:
        fps_out = factor_fps(fps_in, factor)
        sources = factor_sources(num_frames, factor)
    else:
        fps_out = as_fps(target_fps)
        sources = target_sources(num_frames, fps_in, fps_out)
    cuts = frozenset(int(c) for c in cut_pairs)
    copies = []
    for s in sources:
        if s.t == 0:
            copies.append(s.index)
        elif s.index in cuts:
            copies.append(s.index if s.t < Fraction(1, 2) else s.index + 1)
        else:
            copies.append(None)
    return InterpolationPlan(fps_out, tuple(sources), cuts, tuple(copies))
