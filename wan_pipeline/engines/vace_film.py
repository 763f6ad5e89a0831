"""Film engine ``wan_vace``: join the finished scenes, regenerating the frames around each seam
with Wan VACE (diffusers ``WanVACEPipeline``) so scenes meet without a jump.

Per seam, at the clips' native size and frame rate (``FilmScene.native``):

1. ``a`` frames at the end of the left scene and ``b`` at the start of the right one
   (``a + b ≈ seam_frames``) are regenerated from ``context_frames`` on either side: the VACE
   input video is left context + grey placeholders + right context, the mask 0 on context and
   1 on the frames to generate (VACE's masked video-to-video task);
2. the generated frames get the colour statistics of the context (per-channel mean and standard
   deviation, moving linearly from the left context's to the right context's), so no colour shift;
3. they go through the scenes' own interpolator and upscaler and replace the upscaled frames
   covering the same time span (native frame ``j`` ↔ upscaled frame ``j * k`` for an
   interpolation factor ``k``).

Everywhere else the upscaled scenes are concatenated as :mod:`wan_pipeline.engines.concat_film`
does: consecutive scenes share the seam instant, so at a ``handoff`` the right scene's first frame
(a repeat of the left's last) is dropped and at a ``cut`` the left scene's last frame is. The film
has exactly as many frames as the plain concatenation: the sum of the scenes' durations.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import cv2
import numpy as np
from pydantic import Field

from wan_pipeline.engines.base import FilmRequest, FilmScene
from wan_pipeline.engines.diffusers_support import (
    DiffusersEngine,
    ModelParams,
    checkpoint_variant,
    native_size_warning,
    step_progress,
    to_uint8_frames,
)
from wan_pipeline.engines.vace import VacePipeline, vace_video_and_mask
from wan_pipeline.errors import StageError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream, as_stream, check_window


class VaceFilmParams(ModelParams):
    """Preset section ``stages.film`` for ``engine: wan_vace``.

    seam_frames: native frames regenerated per seam (split over both sides); context_frames:
    native frames of context on each side; cut_seams: also regenerate at ``cut`` transitions;
    crf: H.264 quality of the delivery file (read by the writer); guidance_scale_2: the
    low-noise expert of a two-expert checkpoint; plus the speed levers of ``ModelParams``.
    """

    seam_frames: int = Field(8, ge=1, le=64)
    context_frames: int = Field(8, ge=1, le=64)
    steps: int = 30
    guidance_scale: float = Field(5.0, ge=0.0, le=30.0)
    guidance_scale_2: float | None = Field(None, ge=0.0, le=30.0)
    flow_shift: float | None = Field(None, gt=0.0, le=50.0)
    cut_seams: bool = True
    crf: int = Field(18, ge=0, le=51)


def plan_seam(n_left: int, n_right: int, handoff: bool, seam: int, context: int) -> tuple[int, int, int] | None:
    """Choose ``(a, b, c)``: frames regenerated at the left scene's end (``a``) and the right
    scene's start (``b``, counted after the dropped handoff frame) and context frames ``c`` per
    side, such that the VACE clip ``2c + a + b`` is 4k+1 frames, each side keeps at most half of
    its scene for this seam, and ``a + b`` is as close to ``seam`` as possible. None if the scenes
    are too short for any seam.
    """
    off = 1 if handoff else 0
    lim_a = (n_left - 1) // 2
    lim_b = (n_right - 1) // 2 - off
    best, best_cost = None, None
    for a, b, c in product(range(lim_a + 1), range(max(lim_b, -1) + 1), range(1, context + 1)):
        if a + b < 1 or (2 * c + a + b - 1) % 4 or a + c > n_left or b + c > n_right - off:
            continue
        cost = (abs(a + b - seam) * 4, abs(a - b), context - c)
        if best_cost is None or cost < best_cost:
            best, best_cost = (a, b, c), cost
    return best


def match_colour(frames: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Give each of ``frames`` uint8 (S, H, W, 3) per-channel mean/std moving linearly from the
    statistics of ``left`` context (N, H, W, 3) to those of ``right``; returns uint8 (S, H, W, 3)."""
    out = np.empty_like(frames)
    lm, ls = left.reshape(-1, 3).mean(0), left.reshape(-1, 3).std(0)
    rm, rs = right.reshape(-1, 3).mean(0), right.reshape(-1, 3).std(0)
    s = len(frames)
    for t, frame in enumerate(frames.astype(np.float32)):
        w = (t + 1) / (s + 1)
        mean, std = (1 - w) * lm + w * rm, (1 - w) * ls + w * rs
        fm, fs = frame.reshape(-1, 3).mean(0), frame.reshape(-1, 3).std(0)
        out[t] = np.clip(np.rint((frame - fm) / np.maximum(fs, 1e-3) * std + mean), 0, 255).astype(np.uint8)
    return out


class WanVaceFilm(VacePipeline, DiffusersEngine):
    """The film stage with VACE seams (see module doc). Loads the pipeline on first use
    (:class:`~wan_pipeline.engines.vace.VacePipeline`)."""

    name = "wan_vace"
    stage = "film"
    params_model = VaceFilmParams

    def plan_frames(self) -> int:
        return self.params.seam_frames + 2 * self.params.context_frames

    def describe(self) -> dict:
        p = self.params
        return {
            "engine": self.name,
            "model": p.model,
            "seam_frames": p.seam_frames,
            "context_frames": p.context_frames,
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "crf": p.crf,
            "memory_strategy": self._strategy or p.memory_strategy,
            **self.loaded_info(),
            **self.lever_describe(),
        }

    # -- the join --------------------------------------------------------------------------
    def join(self, request: FilmRequest) -> FrameStream:
        """Return the film as a stream: uint8 (H, W, 3) frames at the scenes' upscaled fps, as many
        as the plain concatenation's. The seams are planned first from the frame counts; then each
        scene's upscaled frames are read once, in order, and each seam is regenerated when the
        stream reaches it (only its context frames are read from the native clips). Raises
        :class:`StageError` if the scenes' fps or sizes disagree."""
        scenes = [FilmScene(sc.scene_id, as_stream(sc.upscaled), as_stream(sc.native), sc.transition, sc.prompt) for sc in request.scenes]
        if not scenes:
            raise StageError("film: no scenes to join")
        first = scenes[0].upscaled
        fps, shape = first.fps, (first.height, first.width, 3)
        factors = []
        for sc in scenes:
            if sc.upscaled.fps != fps or (sc.upscaled.height, sc.upscaled.width, 3) != shape:
                raise StageError(
                    f"film: scene {sc.scene_id!r} is {sc.upscaled.width}x{sc.upscaled.height} at "
                    f"{sc.upscaled.fps} fps, the first scene {shape[1]}x{shape[0]} at {fps} fps"
                )
            k = Fraction(sc.upscaled.fps) / Fraction(sc.native.fps)
            if k.denominator != 1:
                raise StageError(
                    f"film: scene {sc.scene_id!r}: upscaled fps {sc.upscaled.fps} is not a whole multiple of the native {sc.native.fps}"
                )
            factors.append(int(k))
        # keep[i] = [start, end) of scene i's upscaled frames kept as they are
        keep = [[0, sc.upscaled.num_frames] for sc in scenes]
        seams: list[dict | None] = [None] * (len(scenes) - 1)  # the plan of the seam after scene i
        todo = [i for i in range(len(scenes) - 1) if scenes[i].transition == "handoff" or self.params.cut_seams]
        self.start_counting()
        for count, i in enumerate(todo):
            left, right = scenes[i], scenes[i + 1]
            handoff = left.transition == "handoff"
            off = 1 if handoff else 0
            plan = plan_seam(left.native.num_frames, right.native.num_frames, handoff, self.params.seam_frames, self.params.context_frames)
            if plan is None:
                request.log(f"seam {left.scene_id}->{right.scene_id}: scenes too short, concatenated")
                continue
            a, b, c = plan
            k = factors[i]
            if factors[i + 1] != k:
                raise StageError(f"film: scenes {left.scene_id!r} and {right.scene_id!r} have different interpolation factors")
            start_l = (left.native.num_frames - a - 1) * k + 1
            end_r = (b + off) * k
            needed = (keep[i][1] - start_l) + end_r - 1  # the seam instant is shared by both scenes
            if start_l < 1 or needed < 1:
                request.log(f"seam {left.scene_id}->{right.scene_id}: upscaled frames do not map, concatenated")
                continue
            check_window(needed + 2 * c + a + b, shape[1], shape[0], "stages.film.seam_frames", self.file)
            keep[i][1] = start_l
            keep[i + 1][0] = end_r
            seams[i] = {
                "left": left.scene_id,
                "right": right.scene_id,
                "transition": left.transition,
                "native_regenerated": a + b,
                "left_frames": a,
                "right_frames": b,
                "context_frames": c,
                "upscaled_replaced": needed,
                "_run": (a, b, c, off, count, len(todo)),
            }
        spans = []
        for i, sc in enumerate(scenes):
            start, end = keep[i]
            if i > 0 and seams[i - 1] is None and scenes[i - 1].transition == "handoff":
                start = max(start, 1)  # plain handoff: the first frame repeats the previous last frame
            if i < len(seams) and seams[i] is None and sc.transition == "cut":
                end = min(end, sc.upscaled.num_frames - 1)  # plain cut: both scenes end/start at the seam instant
            if start > end:
                raise StageError(f"film: scene {sc.scene_id!r} is too short for the seams on both sides")
            spans.append((start, end))
        total = sum(end - start for start, end in spans) + sum(s["upscaled_replaced"] for s in seams if s)
        plans = [{k: v for k, v in s.items() if not k.startswith("_")} for s in seams if s]
        meta = {
            "seam_frames": self.params.seam_frames,
            "seams": len(plans),
            "seam_plan": plans,
            "model": self.params.model,
            "memory_strategy": self._strategy,
        }

        made: dict[int, tuple] = {}
        if any(seams):
            # The first seam is regenerated here, inside the stage call, so that an out-of-memory
            # error (every seam has the same size) reaches the stage runner's retry.
            i = next(i for i, s in enumerate(seams) if s)
            made[i] = self._regenerate(scenes[i], scenes[i + 1], *seams[i]["_run"][:4], request, *seams[i]["_run"][4:])
        if self._pipe is not None:
            native = scenes[0].native
            meta["warnings"] = [x for x in (native_size_warning(self._pipe, native.width, native.height),) if x]
            for x in meta["warnings"]:
                request.log(f"warning: {x}")

        def frames():
            for i, sc in enumerate(scenes):
                start, end = spans[i]
                for j, frame in enumerate(sc.upscaled):
                    if j >= end:
                        break
                    if j >= start:
                        yield frame
                seam = seams[i] if i < len(seams) else None
                if seam is not None:
                    a, b, c, off, count, n_todo = seam["_run"]
                    generated, ctx_l, ctx_r = made.pop(i, None) or self._regenerate(sc, scenes[i + 1], a, b, c, off, request, count, n_todo)
                    yield from self._finish(generated, ctx_l[-1], ctx_r[0], sc.native.fps, seam["upscaled_replaced"], request, shape)
            meta["memory_strategy"] = self._strategy
            meta.update(self.lever_record(self.params.steps))  # cache, work counts over all seams, storage dtype
            if self._pipe is not None:
                meta["variant"] = checkpoint_variant(self._pipe)

        return FrameStream(frames, total, fps, shape[1], shape[0], meta=meta)

    def _regenerate(self, left, right, a, b, c, off, request: FilmRequest, index: int, total: int):
        """VACE over ``c`` context + ``a + b`` masked + ``c`` context native frames; returns the
        colour-matched generated frames uint8 (a+b, h, w, 3) and both contexts (read from the
        native streams: only the frames up to the context are decoded)."""
        import torch

        nl = left.native.num_frames
        ctx_l = left.native.take(nl - a - c, nl - a)
        ctx_r = right.native.take(off + b, off + b + c)
        h, w = left.native.height, left.native.width
        if h % 16 or w % 16 or (right.native.height, right.native.width) != (h, w):
            raise StageError(
                f"film: native clips must share one size divisible by 16, got {w}x{h} and {right.native.width}x{right.native.height}"
            )
        s = a + b
        video = np.concatenate([ctx_l, np.zeros((s, h, w, 3), np.uint8), ctx_r])
        frames, masks = vace_video_and_mask(video, np.concatenate([np.ones(c), np.zeros(s), np.ones(c)]).astype(bool))
        steps = self.params.steps
        pipe = self.pipe
        extra = {}
        if self.params.guidance_scale_2 is not None and pipe.config.get("boundary_ratio") is not None:
            extra["guidance_scale_2"] = self.params.guidance_scale_2
        with self.generation(pipe, steps, (self.params.guidance_scale, self.params.guidance_scale_2)):
            out = pipe(
                video=frames,
                mask=masks,
                prompt=" ".join(p for p in (left.prompt, right.prompt) if p) or "a continuous shot",
                negative_prompt=self.params.negative_prompt,
                height=h,
                width=w,
                num_frames=len(video),
                num_inference_steps=steps,
                guidance_scale=self.params.guidance_scale,
                max_sequence_length=self.params.max_sequence_length,
                generator=torch.Generator("cpu").manual_seed(int(request.seed) + index),
                output_type="np",
                callback_on_step_end=step_progress(request.progress, index * steps, total * steps),
                **extra,
            ).frames
        generated = to_uint8_frames(out)[c : c + s]
        return match_colour(generated, ctx_l, ctx_r), ctx_l, ctx_r

    def _finish(self, generated, before, after, native_fps, needed: int, request: FilmRequest, shape) -> np.ndarray:
        """Interpolate and upscale ``[before, generated…, after]`` with the scenes' engines and
        return the ``needed`` frames strictly between ``before`` and ``after`` (uint8)."""
        clip = Clip(np.concatenate([before[None], generated, after[None]]), fps=native_fps)
        if request.interpolator is not None:
            clip = request.interpolator.interpolate(clip)
        if request.upscaler is not None:
            clip = request.upscaler.upscale(clip)
        frames = clip.frames
        if frames.shape[1:] != shape:
            frames = np.stack([cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_LANCZOS4) for f in frames])
        k = max(1, round(Fraction(clip.fps) / Fraction(native_fps)))
        span = (len(generated) + 1) * k  # index of ``after`` in the interpolated clip
        interior = frames[1:span] if len(frames) > span else frames[1:-1]
        if len(interior) == 0:
            interior = generated
        idx = np.rint(np.linspace(0, len(interior) - 1, needed)).astype(int)
        return interior[idx]
