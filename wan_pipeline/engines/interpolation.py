"""The driver every interpolator shares: cut detection, frame plan, copies, batched synthesis, meta.

An interpolator only supplies ``synthesise(jobs, frames)``: for a list of ``(a, t)`` (source pair
index, timestep in (0, 1)) it returns the frames at those times, uint8 (len(jobs), H, W, 3), reading
input frame ``i`` as ``frames[i]``. Jobs come in increasing ``a`` order, so an engine may cache
per-pair work (e.g. optical flow) between calls.

The driver streams: input frames are decoded as the plan reaches them, the pair's cut verdict comes
from the frame that closes it (the look-ahead of one frame), and only the input frames of the
pending batch plus the output frames waiting for it are held — ``batch_size + 1`` input frames and
about ``factor × batch_size`` output frames, whatever the clip's length. Batches are the same
consecutive runs of ``batch_size`` synthesis jobs as over a whole clip in memory, so the output is
the same frame for frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import numpy as np

from wan_pipeline.engines.frame_timing import plan_interpolation
from wan_pipeline.engines.scene_cuts import CutDetector, CutThresholds
from wan_pipeline.errors import StageError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream, as_stream, check_window, like_input

SynthesiseFn = Callable[[Sequence[tuple[int, float]], Mapping[int, np.ndarray]], np.ndarray]

DEFAULT_CUT_THRESHOLDS = CutThresholds()


def interpolate_clip(
    clip: Clip | FrameStream,
    synthesise: SynthesiseFn,
    *,
    factor: int | None = None,
    target_fps=None,
    cut_thresholds: CutThresholds | None = DEFAULT_CUT_THRESHOLDS,
    batch_size: int = 8,
    option: str = "stages.interpolated.batch_size",
) -> Clip | FrameStream:
    """Interpolate ``clip`` (a :class:`Clip` or a :class:`FrameStream` of uint8 (H, W, 3) frames)
    by ``factor`` or to ``target_fps``; returns the same form (a stream is computed lazily).

    Input frames are copied (t = 0), frames inside a hard cut copy the nearer input frame
    (cut_thresholds=None disables detection), the rest come from ``synthesise`` in batches of
    ``batch_size``. Audio is kept; meta holds ``interp_factor`` (exact fps_out / fps_in as float)
    and, once the frames are consumed, ``scene_cuts``, ``duplicated_frames`` and
    ``synthesised_frames``. Raises :class:`InputError` naming ``option`` when a batch window would
    exceed the window budget.
    """
    src = as_stream(clip)
    batch_size = max(1, batch_size)
    plan = plan_interpolation(src.num_frames, src.fps, factor=factor, target_fps=target_fps)
    k = max(1, round(plan.num_frames / max(1, src.num_frames)))
    check_window(batch_size + 1 + batch_size * (k + 1), src.width, src.height, option)
    meta = {"interp_factor": float(Fraction(plan.fps) / src.fps), "scene_cuts": 0, "duplicated_frames": 0, "synthesised_frames": 0}

    def frames():
        window: dict[int, np.ndarray] = {}
        detector = CutDetector(cut_thresholds) if cut_thresholds is not None else None
        cuts: set[int] = set()
        it = iter(src)
        loaded = -1
        slots: list[np.ndarray | None] = []  # output frames not yet yielded, in order
        first_slot = 0  # output index of slots[0]
        jobs: list[tuple[int, int, float]] = []  # (output index, a, t) waiting for synthesis

        def load(upto: int) -> None:
            nonlocal loaded
            while loaded < upto:
                try:
                    frame = next(it)
                except StopIteration:
                    raise StageError(f"interpolation: the input ended after {loaded + 1} of {src.num_frames} frames") from None
                loaded += 1
                window[loaded] = frame
                if detector is not None and detector.push(frame):
                    cuts.add(loaded - 1)

        def run_batch() -> None:
            synth = synthesise([(a, t) for _, a, t in jobs], window)
            for (o, _, _), frame in zip(jobs, synth):
                slots[o - first_slot] = frame
            meta["synthesised_frames"] += len(jobs)
            jobs.clear()

        for i, s in enumerate(plan.sources):
            a, t = s.index, s.t
            if t == 0:
                load(a)
                frame = window[a]
            else:
                load(a + 1)
                if a in cuts:
                    frame = window[a if t < Fraction(1, 2) else a + 1]
                    meta["duplicated_frames"] += 1
                else:
                    frame = None
                    jobs.append((i, a, float(t)))
            slots.append(frame)
            if len(jobs) == batch_size:
                run_batch()
            while slots and slots[0] is not None:
                yield slots.pop(0)
                first_slot += 1
            keep_from = jobs[0][1] if jobs else a
            for idx in [j for j in window if j < keep_from]:
                del window[idx]
        if jobs:
            run_batch()
        yield from slots
        load(src.num_frames - 1)  # the rest of the input (a target rate may stop short of it): every pair is checked for cuts
        meta["scene_cuts"] = len(cuts)

    out = FrameStream(frames, plan.num_frames, plan.fps, src.width, src.height, src.audio, meta)
    return like_input(clip, out)
