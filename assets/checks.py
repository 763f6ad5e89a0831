"""Asset checks of a story's renders, shown in the Dagster UI next to each asset.

* ``clip``: ``seam_continuity`` — for every handoff, the last frame of clip[i] against the first
  of clip[i+1] (SSIM and mean absolute difference), skipped with the reason in its row when
  clip[i] records ``flf2v: false`` (its model could not aim at the next keyframe, e.g. TI2V); ``no_black_or_frozen_frames`` — mean
  luminance per frame and the difference between consecutive frames (black or still frames are a
  known failure of high guidance scales). A scene with ``camera: static`` may legitimately stand
  still, so only its black frames are checked. ``segment_colour_shift`` — a scene rendered in
  several segments records the mean colour jump between them; at most ``segment_colour_shift_max``.
* ``interpolated``: ``fps_and_frame_count`` — fps = clip fps × factor and frames =
  factor·(n−1)+1 (or factor·n).
* ``upscaled``: ``resolution`` — the interpolated size × the upscale factor (±2 px rounding),
  the same for every scene.
* ``film``: ``duration`` — the sum of the scenes' ``duration_s`` within one frame per scene.

Each check covers every scene of the story (one result per asset, ``failed_scenes`` in its
metadata), is ERROR severity, and reads its thresholds from the preset's ``checks:`` section
(:data:`DEFAULT_THRESHOLDS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
import numpy as np

from resources import GPUResource
from wan_pipeline.frame_metrics import inter_frame_diff, mean_abs_diff, mean_luma, ssim
from wan_pipeline.media.video_io import open_video, probe_video
from wan_pipeline.preset import Preset
from wan_pipeline.storage import StorageLayout
from wan_pipeline.story import Story
from wan_pipeline.telemetry import read_sidecar

DEFAULT_THRESHOLDS = {
    "seam_ssim_min": 0.5,  # SSIM of the two seam frames at least this
    "seam_mad_max": 30.0,  # and their mean absolute difference (8-bit levels) at most this
    "black_luma_max": 10.0,  # a frame whose mean luma is below this is black
    "black_fraction_max": 0.1,  # more black frames than this fraction fails
    "frozen_diff_max": 0.5,  # consecutive frames differing less than this are a still pair
    "frozen_fraction_max": 0.5,  # more still pairs than this fraction fails (moving cameras only)
    "segment_colour_shift_max": 10.0,  # mean colour jump at a long scene's segment boundaries (8-bit levels)
}


def thresholds(preset: Preset) -> dict:
    """The preset's ``checks:`` values over :data:`DEFAULT_THRESHOLDS`."""
    return {**DEFAULT_THRESHOLDS, **{k: float(v) for k, v in (preset.checks or {}).items()}}


@dataclass
class Outcome:
    """A check's verdict: ``passed``, the ``failed`` scene ids (film: ["film"]), per-scene rows."""

    passed: bool
    failed: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    summary: str = ""


def _finish(rows: list[dict], key: str = "scene") -> Outcome:
    failed = [r[key] for r in rows if not r["ok"]]
    problems = [f"{r[key]}: {r['problem']}" for r in rows if not r["ok"]]
    skipped = [f"{r[key]}: {r['skipped']}" for r in rows if r.get("skipped")]
    return Outcome(not failed, failed, rows, "; ".join(problems + skipped) or f"{len(rows)} checked, all ok")


def _missing(layout: StorageLayout, story: Story, stage: str, take: str) -> list[str]:
    return [s for s in story.scene_ids if not layout.output(story.id, s, stage, take=take).is_file()]


def check_seams(story: Story, preset: Preset, layout: StorageLayout, take: str) -> Outcome:
    """Seam continuity of every handoff pair (see the module docstring)."""
    t = thresholds(preset)
    rows = []
    for s in story.scenes:
        nxt = story.handoff_target(s.id)
        if nxt is None:
            continue
        a_path, b_path = layout.output(story.id, s.id, "clip", take=take), layout.output(story.id, nxt.id, "clip", take=take)
        if not (a_path.is_file() and b_path.is_file()):
            continue
        if (read_sidecar(a_path) or {}).get("flf2v") is False:
            why = f"skipped: clip {s.id} was rendered without {nxt.id}'s keyframe as its end frame (flf2v false: the model has no first-last-frame conditioning), so no continuity is expected here; the film stage joins the seam"
            rows.append({"scene": s.id, "next": nxt.id, "ssim": None, "mad": None, "ok": True, "skipped": why})
            continue
        left = open_video(a_path)  # streamed: only the two seam frames are kept
        a, b = left.take(left.num_frames - 1, left.num_frames)[0], open_video(b_path).take(0, 1)[0]
        if a.shape != b.shape:
            rows.append(
                {"scene": s.id, "next": nxt.id, "ssim": None, "mad": None, "ok": False, "problem": f"sizes differ {a.shape} vs {b.shape}"}
            )
            continue
        score, mad = ssim(a, b), mean_abs_diff(a, b)
        ok = score >= t["seam_ssim_min"] and mad <= t["seam_mad_max"]
        rows.append(
            {
                "scene": s.id,
                "next": nxt.id,
                "ssim": round(score, 4),
                "mad": round(mad, 2),
                "ok": ok,
                "problem": f"seam jump to {nxt.id}: SSIM {score:.3f} (min {t['seam_ssim_min']}), MAD {mad:.1f} (max {t['seam_mad_max']})",
            }
        )
    return _finish(rows)


def check_black_frozen(story: Story, preset: Preset, layout: StorageLayout, take: str) -> Outcome:
    """Black and (for moving cameras) frozen frames in every clip."""
    t = thresholds(preset)
    rows = []
    for s in story.scenes:
        path = layout.output(story.id, s.id, "clip", take=take)
        if not path.is_file():
            continue
        luma_list, diff_list, prev = [], [], None
        for frame in open_video(path):  # streamed: one frame pair at a time, however long the clip
            luma_list.append(mean_luma(frame[None])[0])
            if prev is not None:
                diff_list.append(inter_frame_diff(np.stack([prev, frame]))[0])
            prev = frame
        luma, diffs = np.array(luma_list, np.float32), np.array(diff_list, np.float32)
        black = int(np.sum(luma < t["black_luma_max"]))
        frozen = int(np.sum(diffs < t["frozen_diff_max"]))
        problems = []
        if black > t["black_fraction_max"] * len(luma):
            problems.append(f"{black} of {len(luma)} frames black (mean luma < {t['black_luma_max']})")
        if s.camera != "static" and len(diffs) and frozen > t["frozen_fraction_max"] * len(diffs):
            problems.append(f"{frozen} of {len(diffs)} frame pairs frozen (difference < {t['frozen_diff_max']})")
        rows.append(
            {
                "scene": s.id,
                "frames": len(luma),
                "black_frames": black,
                "frozen_pairs": frozen,
                "min_luma": round(float(luma.min()), 2),
                "ok": not problems,
                "problem": "; ".join(problems),
            }
        )
    return _finish(rows)


def check_interpolated(story: Story, preset: Preset, layout: StorageLayout, take: str) -> Outcome:
    """Interpolated fps = clip fps × factor; frames = factor·(n−1)+1 or factor·n."""
    rows = []
    for s in story.scenes:
        src, out = layout.output(story.id, s.id, "clip", take=take), layout.output(story.id, s.id, "interpolated", take=take)
        if not (src.is_file() and out.is_file()):
            continue
        a, b = probe_video(src), probe_video(out)
        factor = (read_sidecar(out) or {}).get("interp_factor") or preset.stage("interpolated").params.get("factor")
        if factor is None:
            factor = round(b.fps / a.fps)
        factor = int(round(float(factor)))
        fps_ok = b.fps == a.fps * factor
        frames_ok = b.frames in (factor * (a.frames - 1) + 1, factor * a.frames)
        rows.append(
            {
                "scene": s.id,
                "clip_frames": a.frames,
                "clip_fps": float(a.fps),
                "factor": factor,
                "frames": b.frames,
                "fps": float(b.fps),
                "ok": fps_ok and frames_ok,
                "problem": f"{b.frames} frames at {float(b.fps):g} fps from {a.frames} at {float(a.fps):g} with factor {factor}",
            }
        )
    return _finish(rows)


def check_upscaled(story: Story, preset: Preset, layout: StorageLayout, take: str) -> Outcome:
    """Upscaled size = interpolated size × factor (±2 px), equal across scenes."""
    rows, sizes = [], set()
    for s in story.scenes:
        src, out = layout.output(story.id, s.id, "interpolated", take=take), layout.output(story.id, s.id, "upscaled", take=take)
        if not (src.is_file() and out.is_file()):
            continue
        a, b = probe_video(src), probe_video(out)
        factor = (read_sidecar(out) or {}).get("upscale_factor") or preset.stage("upscaled").params.get("factor") or 1
        ew, eh = a.width * float(factor), a.height * float(factor)
        ok = abs(b.width - ew) <= 2 and abs(b.height - eh) <= 2 and b.frames == a.frames
        sizes.add((b.width, b.height))
        rows.append(
            {
                "scene": s.id,
                "width": b.width,
                "height": b.height,
                "expected": f"{ew:.0f}x{eh:.0f}",
                "ok": ok,
                "problem": f"{b.width}x{b.height} ({b.frames} frames), expected {ew:.0f}x{eh:.0f} ({a.frames} frames)",
            }
        )
    if len(sizes) > 1:
        for r in rows:
            r["ok"], r["problem"] = False, f"scenes differ in size: {sorted(sizes)}"
    return _finish(rows)


def check_segment_colour(story: Story, preset: Preset, layout: StorageLayout, take: str) -> Outcome:
    """Colour continuity inside long scenes: the clip's recorded ``segment_colour_shift`` (mean
    colour jump between its segments, 8-bit levels) at most ``segment_colour_shift_max``; scenes
    rendered in one segment (no such value) are not checked."""
    t = thresholds(preset)
    rows = []
    for s in story.scenes:
        shift = (read_sidecar(layout.output(story.id, s.id, "clip", take=take)) or {}).get("segment_colour_shift")
        if shift is None:
            continue
        rows.append(
            {
                "scene": s.id,
                "segment_colour_shift": shift,
                "ok": shift <= t["segment_colour_shift_max"],
                "problem": f"colour jumps by {shift:.1f} levels between segments (max {t['segment_colour_shift_max']})",
            }
        )
    return _finish(rows)


def check_film_duration(story: Story, preset: Preset, layout: StorageLayout, take: str) -> Outcome:
    """Film duration = Σ scene durations within one frame per scene."""
    path = layout.film(story.id, take=take)
    if not path.is_file():
        return Outcome(False, ["film"], [], f"{path} does not exist")
    info = probe_video(path)
    expected = sum(s.duration_s for s in story.scenes)
    tolerance = len(story.scenes) / float(info.fps)
    ok = abs(info.duration_s - expected) <= tolerance
    row = {
        "scene": "film",
        "duration_s": round(info.duration_s, 4),
        "expected_s": round(expected, 4),
        "tolerance_s": round(tolerance, 4),
        "ok": ok,
        "problem": f"{info.duration_s:.3f} s, expected {expected:.3f} s ± {tolerance:.3f}",
    }
    return _finish([row])


CHECKS = {
    # (asset stage, check name): (evaluator, description)
    ("clip", "seam_continuity"): (check_seams, "Handoff seams: last frame of clip[i] vs first of clip[i+1] (SSIM, MAD)."),
    ("clip", "no_black_or_frozen_frames"): (check_black_frozen, "No black frames; no frozen frames where the camera moves."),
    ("clip", "segment_colour_shift"): (check_segment_colour, "Long scenes: mean colour jump between segments within bounds."),
    ("interpolated", "fps_and_frame_count"): (check_interpolated, "fps = clip fps × factor; frames = factor·(n−1)+1."),
    ("upscaled", "resolution"): (check_upscaled, "Size = interpolated size × upscale factor, equal across scenes."),
    ("film", "duration"): (check_film_duration, "Duration = sum of the scenes' duration_s, within one frame per scene."),
}


def to_result(outcome: Outcome) -> dg.AssetCheckResult:
    meta = {
        "failed_scenes": dg.MetadataValue.json(outcome.failed),
        "summary": outcome.summary,
        "scenes": dg.MetadataValue.json([{k: v for k, v in r.items() if k != "problem" or not r["ok"]} for r in outcome.rows]),
    }
    return dg.AssetCheckResult(passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=meta)


def build_story_checks(story: Story) -> list[dg.AssetChecksDefinition]:
    """The checks of :data:`CHECKS` on ``<story>/<stage>``, evaluated on the story file as it is
    now and the run's take with its preset (run tags, :class:`~wan_pipeline.run_config.RunConfig`)."""
    from assets.recovery import cancel_on_interrupt
    from assets.render_context import run_config

    out = []
    for (stage, name), (evaluate, description) in CHECKS.items():

        def make(stage=stage, name=name, evaluate=evaluate, description=description):
            @dg.asset_check(asset=dg.AssetKey([story.id, stage]), name=name, description=description)
            @cancel_on_interrupt
            def _check(context, gpu: GPUResource) -> dg.AssetCheckResult:
                config = run_config(context, story, gpu)  # the run's take and preset
                outcome = evaluate(config.story, config.preset, config.layout, config.take)
                if not outcome.passed:
                    context.log.error(f"{story.id}/{stage} {name}: {outcome.summary}")
                return to_result(outcome)

            return _check

        out.append(make())
    return out
