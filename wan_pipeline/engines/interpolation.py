"""The driver every interpolator shares: cut detection, frame plan, copies, batched synthesis, meta.

An interpolator only supplies ``synthesise(jobs)``: for a list of ``(a, t)`` (source pair index,
timestep in (0, 1)) it returns the frames at those times, uint8 (len(jobs), H, W, 3). Jobs come in
increasing ``a`` order, so an engine may cache per-pair work (e.g. optical flow) between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction

import numpy as np

from wan_pipeline.engines.frame_timing import plan_interpolation
from wan_pipeline.engines.scene_cuts import CutThresholds, detect_cuts
from wan_pipeline.media.clip import Clip

SynthesiseFn = Callable[[Sequence[tuple[int, float]]], np.ndarray]

DEFAULT_CUT_THRESHOLDS = CutThresholds()


def interpolate_clip(
    clip: Clip,
    synthesise: SynthesiseFn,
    *,
    factor: int | None = None,
    target_fps=None,
    cut_thresholds: CutThresholds | None = DEFAULT_CUT_THRESHOLDS,
    batch_size: int = 8,
) -> Clip:
    """Interpolate ``clip`` (frames uint8 (T, H, W, 3)) by ``factor`` or to ``target_fps``.

    Input frames are copied (t = 0), frames inside a hard cut copy the nearer input frame
    (cut_thresholds=None disables detection), the rest come from ``synthesise`` in batches of
    ``batch_size``. Returns a new clip (audio kept) whose meta holds ``interp_factor`` (exact
    fps_out / fps_in as float), ``scene_cuts``, ``duplicated_frames`` and ``synthesised_frames``.
    """
    frames = clip.frames
    cuts = detect_cuts(frames, cut_thresholds) if cut_thresholds is not None else set()
    plan = plan_interpolation(clip.num_frames, clip.fps, factor=factor, target_fps=target_fps, cut_pairs=cuts)
    out = np.empty((plan.num_frames,) + frames.shape[1:], dtype=np.uint8)
    for i, src in enumerate(plan.copies):
        if src is not None:
            out[i] = frames[src]
    jobs = plan.synthesis
    for start in range(0, len(jobs), max(1, batch_size)):
        chunk = jobs[start : start + batch_size]
        synth = synthesise([(a, t) for _, a, t in chunk])
        for (o, _, _), frame in zip(chunk, synth):
            out[o] = frame
    meta = {
        "interp_factor": float(Fraction(plan.fps) / clip.fps),
        "scene_cuts": len(cuts),
        "duplicated_frames": plan.duplicated_frames,
        "synthesised_frames": len(jobs),
    }
    return Clip(out, plan.fps, clip.audio, meta)
