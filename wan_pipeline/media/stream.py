"""A video as a stream of frames: what the stages pass between decoder, engine and encoder.

A :class:`FrameStream` knows its frame count, exact frame rate and size before any frame is made
(probed from the file, or computed by the engine's frame arithmetic), and yields the frames one at
a time, so a stage holds only the window of frames its engine needs (a pair for interpolation, a
batch for upscaling, a segment for the clip model, the frames around a seam for the film) however
long the film is. Iterating a stream again decodes or computes it again. :class:`Clip` stays the
in-memory form for small things (keyframes, seams, tests): :meth:`FrameStream.from_clip` and
:meth:`FrameStream.collect` convert between the two.

The window budget (:data:`WINDOW_BUDGET_MIB`) bounds the frames one window may hold;
:func:`check_window` refuses a size or count beyond it (and any side over :data:`MAX_SIDE`) before
anything is allocated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from wan_pipeline.errors import InputError, StageError
from wan_pipeline.media.clip import Clip, as_fps

MAX_SIDE = 8192
"""Pixels: the largest output side any stage accepts (8K: DCI 8K is 8192 px wide)."""

WINDOW_BUDGET_MIB = int(os.environ.get("WAN_PIPELINE_WINDOW_MIB", "2048"))
"""MiB of uint8 RGB frames one stage window may hold (environment ``WAN_PIPELINE_WINDOW_MIB``)."""


def frame_mib(width: int, height: int) -> float:
    """MiB of one uint8 RGB frame of ``width × height`` pixels."""
    return width * height * 3 / 2**20


def check_window(frames: int, width: int, height: int, option: str, file: str | None = None) -> None:
    """Refuse a window of ``frames`` frames of ``width × height`` before allocating it.

    Raises :class:`InputError` naming ``file`` and ``option`` (the preset field or CLI option that
    sets the size or count) when a side exceeds :data:`MAX_SIDE` or the window exceeds
    :data:`WINDOW_BUDGET_MIB`.
    """
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InputError(file, f"{option}: output {width}x{height} exceeds {MAX_SIDE} px on a side (8K); choose a smaller {option}")
    need = frames * frame_mib(width, height)
    if need > WINDOW_BUDGET_MIB:
        raise InputError(
            file,
            f"{option}: a window of {frames} frames at {width}x{height} needs {need:,.0f} MiB, over the "
            f"{WINDOW_BUDGET_MIB} MiB window budget; lower {option} (or raise WAN_PIPELINE_WINDOW_MIB)",
        )


@dataclass
class FrameStream:
    """A video whose frames are made on demand.

    source: called once per iteration, returns an iterator of frames uint8 (H, W, 3) RGB.
    num_frames: how many frames the source yields (iteration raises :class:`StageError` otherwise).
    fps: exact rational frame rate; width, height: pixels.
    audio: optional path of a file whose audio stream belongs to this video (never decoded here).
    meta: engine facts; measured ones (cuts found, seams made …) are complete once the frames have
        been consumed.
    """

    source: Callable[[], Iterator[np.ndarray]]
    num_frames: int
    fps: Fraction
    width: int
    height: int
    audio: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fps = as_fps(self.fps)
        if self.num_frames < 1:
            raise ValueError("a FrameStream needs at least one frame")

    def __iter__(self) -> Iterator[np.ndarray]:
        count = 0
        for frame in self.source():
            if count >= self.num_frames:
                raise StageError(f"a stream announced {self.num_frames} frames but yields more")
            yield frame
            count += 1
        if count != self.num_frames:
            raise StageError(f"a stream announced {self.num_frames} frames but yielded {count}")

    @property
    def duration_s(self) -> float:
        """Playing time in seconds: frames / fps."""
        return float(self.num_frames / self.fps)

    @classmethod
    def from_clip(cls, clip: Clip) -> FrameStream:
        """The frames of an in-memory clip as a stream (same fps, audio; meta copied)."""
        return cls(lambda: iter(clip.frames), clip.num_frames, clip.fps, clip.width, clip.height, clip.audio, dict(clip.meta))

    def collect(self) -> Clip:
        """Every frame in memory, as a :class:`Clip` (for small videos only)."""
        frames = np.empty((self.num_frames, self.height, self.width, 3), np.uint8)
        for i, frame in enumerate(self):
            frames[i] = frame
        return Clip(frames, self.fps, self.audio, self.meta)

    def take(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as uint8 (stop − start, H, W, 3), iterating from the start and
        stopping at ``stop`` (for the few context frames around a seam)."""
        out = []
        for i, frame in enumerate(self.source()):
            if i >= stop:
                break
            if i >= start:
                out.append(frame)
        if len(out) != max(0, stop - start):
            raise StageError(f"frames {start}..{stop} asked of a stream of {self.num_frames}")
        return np.stack(out) if out else np.empty((0, self.height, self.width, 3), np.uint8)


def map_frames(
    video: Clip | FrameStream,
    fn: Callable[[np.ndarray], np.ndarray],
    meta: dict | None = None,
    width: int | None = None,
    height: int | None = None,
) -> Clip | FrameStream:
    """Apply ``fn`` (uint8 (H, W, 3) → uint8 (height, width, 3)) to every frame of ``video``, one
    at a time; returns the same form (a stream is mapped as it is read). Count, fps and audio kept;
    ``width``/``height``: the output size when ``fn`` changes it. The whole of a per-frame stage
    engine (a grade, a resize) can be ``return map_frames(video, fn, meta)``."""
    src = as_stream(video)

    def frames():
        for frame in src:
            yield fn(frame)

    out = FrameStream(frames, src.num_frames, src.fps, width or src.width, height or src.height, src.audio, dict(meta or {}))
    return like_input(video, out)


def batched(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Consecutive frames in batches uint8 (≤ size, H, W, 3); the last batch may be shorter."""
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def as_stream(video: Clip | FrameStream) -> FrameStream:
    """``video`` as a stream (a :class:`Clip` is wrapped, a stream returned as is)."""
    return FrameStream.from_clip(video) if isinstance(video, Clip) else video


def like_input(video: Clip | FrameStream, out: FrameStream) -> Clip | FrameStream:
    """Return ``out`` in the form the engine was given: collected for a :class:`Clip` input, else
    the stream (engines accept both; stages pass streams, small callers clips)."""
    return out.collect() if isinstance(video, Clip) else out
