"""Clip engine ``wan_i2v``: Wan image-to-video through diffusers' ``WanImageToVideoPipeline``.

One engine for every Wan I2V layout diffusers loads into that class:

* Wan2.1 I2V / FLF2V 14B (CLIP image encoder; the FLF2V transformer embeds first+last frame);
* Wan2.2 I2V-A14B (two experts ``transformer``/``transformer_2`` switched at ``boundary_ratio``,
  ``guidance_scale_2`` for the low-noise expert);
* Wan2.2 TI2V-5B (``expand_timesteps``: the first latent frame is the image; no last-frame
  conditioning in diffusers, so a handoff is rendered without it and reported in ``warnings``).

A scene longer than ``max_frames`` renders as consecutive segments that overlap by
``overlap_frames`` (4k+1, default 5 as Wan2GP's sliding windows): each segment after the first is
conditioned on the last ``overlap_frames`` frames of the previous one — the I2V models through
their own conditioning (mask + VAE latents of the condition video, Wan2.1 report §I2V: frames
marked 1 in the mask are given), TI2V by fixing those latent frames (per-token timesteps 0) — so
motion carries over instead of restarting from one still frame (the overlap is the output's last
frames: with segments of fewer new frames than the overlap, some come from the segment before).
Its frames then get the colour statistics of that overlap (per channel mean and standard
deviation; fading out over a final segment that must reach the end frame), and the regenerated
overlap frames are dropped. The handoff end frame conditions the FINAL segment only.

The Wan2.1 FLF2V transformer (``pos_embed_seq_len`` set) was trained for a real first + last frame
pair only, so a scene that needs several segments is not run with it (no made-up end frame): with
``extension_model`` (a Wan VACE checkpoint, e.g. the film stage's VACE-14B) EVERY segment of that
scene is made by VACE's masked video-to-video task (:mod:`wan_pipeline.engines.vace`): the first
with the keyframe given as frame 0, each later one with the previous segment's last
``overlap_frames`` frames given at its start (VACE extension), the final one also with the end
frame given as its last frame; colour matching and overlap dropping as above. Without
``extension_model`` such a scene is refused (InputError naming the option). Scenes that fit one
generation keep using the FLF2V model. One of the two pipelines is loaded at a time (the other is
released first). The extension model is loaded, placed and planned like the stage's model, with
the stage's memory, dtype and speed-lever fields and its own ``extension_flow_shift`` and
``extension_loras``. It is a diffusers VACE folder / repo id, or a single ``.safetensors`` /
``.gguf`` VACE transformer file as the film stage takes it; a single file shares the section's
``vae``, ``text_encoder`` and ``comfyui_models`` and takes its configs and tokenizer from
``extension_components`` (:func:`~wan_pipeline.models.model_files.extension_file_fields`), and is
refused from its tensor shapes when it is no VACE file.

meta: ``continuation`` (``vace_extension``, ``i2v_mask``, ``ti2v_latents``; None for one segment),
``extension_model`` / ``extension_variant`` (when VACE made the frames), ``flf2v`` (the end frame
conditioned the final segment), ``segment_colour_shift``: the mean colour jump across the segment
boundaries of the result (:func:`wan_pipeline.frame_metrics.mean_colour_shift`, 8-bit levels; None
for one segment).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
from pydantic import Field

from wan_pipeline.engines.base import ClipRequest
from wan_pipeline.engines.diffusers_support import (
    DiffusersEngine,
    ModelParams,
    check_steps,
    checkpoint_variant,
    native_size_warning,
    release_pipeline,
    size_multiple,
    step_progress,
    to_uint8_frames,
)
from wan_pipeline.engines.lora import LoraEntry, loras_applied
from wan_pipeline.engines.vace import VacePipeline, vace_video_and_mask
from wan_pipeline.errors import InputError
from wan_pipeline.frame_metrics import mean_colour_shift
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import fit_image
from wan_pipeline.media.stream import FrameStream, check_window
from wan_pipeline.models.single_file import is_single_file

GUIDANCE_WARNING = 6.0
"""Guidance at or above this gives black or over-saturated Wan frames in practice (users' reports;
the model cards use 3.5–5)."""


class WanClipParams(ModelParams):
    """Preset section ``stages.clip`` for ``engine: wan_i2v``.

    steps / guidance_scale: defaults, overridden per scene; guidance_scale_2: low-noise expert
    (two-expert models; default = guidance_scale); flow_shift: scheduler shift (None keeps the
    checkpoint's); max_frames: the longest single generation (4k+1; Wan: 81); min_size/max_size:
    the supported side length in pixels; overlap_frames / colour_match: how a long scene's
    segments continue (module doc); extension_model / extension_flow_shift / extension_loras /
    extension_components: the VACE model that makes a long scene's segments when ``model`` is
    FLF2V (a single file takes its configs and tokenizer from extension_components). The speed levers
    (``loras`` fused for every scene, ``cache``, ``weights``, ``attention_backend``, ``compile``)
    come from ``ModelParams``.
    """

    steps: int = 30
    guidance_scale: float = Field(5.0, ge=0.0, le=30.0)
    guidance_scale_2: float | None = Field(None, ge=0.0, le=30.0)
    flow_shift: float | None = Field(None, gt=0.0, le=50.0)
    max_frames: int = Field(81, ge=5, le=481)
    min_size: int = Field(256, ge=16)
    max_size: int = Field(1280, le=4096)
    overlap_frames: int = Field(5, ge=1, le=33, description="frames a segment continues from (4k+1; Wan2GP: 5)")
    colour_match: bool = Field(True, description="match each later segment's colours to the overlap it continues")
    extension_model: str | None = Field(
        None, description="a Wan VACE checkpoint that continues scenes longer than one generation when `model` is FLF2V"
    )
    extension_flow_shift: float | None = Field(
        None, gt=0.0, le=50.0, description="scheduler shift of the extension model (None keeps the checkpoint's)"
    )
    extension_loras: list[LoraEntry] = Field(
        default_factory=list, description="LoRAs fused into the extension model (the clip's `loras` are for `model`)"
    )
    extension_components: str | None = Field(
        None,
        description="for a single-file extension_model: diffusers VACE folder or repo id supplying its configs, "
        "tokenizer and any component not given as a file (as `components` for `model`)",
    )


class ExtensionParams(ModelParams):
    """The parameters of the VACE extension model of ``stages.clip`` (derived from that section:
    ``extension_model``, ``extension_flow_shift``, ``extension_loras`` and the clip's memory, dtype
    and speed-lever fields), for :class:`VaceExtension`."""

    steps: int = 30
    guidance_scale: float = Field(5.0, ge=0.0, le=30.0)
    guidance_scale_2: float | None = Field(None, ge=0.0, le=30.0)
    flow_shift: float | None = Field(None, gt=0.0, le=50.0)

    @classmethod
    def from_clip(cls, clip: WanClipParams) -> ExtensionParams:
        """The extension model's parameters from the clip section's: its model, flow shift and
        LoRAs from the ``extension_*`` fields, everything else (memory strategy, dtype, cache, weight
        storage, attention, compile, steps, guidance) as the clip stage has it. A single-file
        ``extension_model`` shares the section's ``vae``, ``text_encoder`` and ``comfyui_models``
        and takes ``extension_components`` as its ``components``
        (:func:`~wan_pipeline.models.model_files.extension_file_fields`); a diffusers one none."""
        from wan_pipeline.models.model_files import ModelFileFields, extension_file_fields

        data = clip.model_dump(exclude=set(ModelFileFields.model_fields) | set(WanClipParams.model_fields) - set(cls.model_fields))
        data.update(model=clip.extension_model, flow_shift=clip.extension_flow_shift, loras=clip.extension_loras)
        data.update(extension_file_fields(clip.model_dump()))
        return cls.model_validate(data)


class VaceExtension(VacePipeline, DiffusersEngine):
    """The VACE pipeline that continues a long FLF2V scene (module doc): loaded, placed and
    planned like any model of the stage (:class:`DiffusersEngine`), its errors naming
    ``stages.clip.extension_model``."""

    stage = "clip"
    params_model = ExtensionParams
    vace_field = "extension_model"

    def __init__(self, clip: WanClipParams, ctx, frames: int) -> None:
        with _extension_errors():
            super().__init__(ExtensionParams.from_clip(clip).model_dump(), ctx)
        self._frames = frames

    def plan_frames(self) -> int:
        return self._frames

    @property
    def pipe(self):
        with _extension_errors():
            return super().pipe


@contextlib.contextmanager
def _extension_errors():
    """Re-raise an :class:`InputError` of the extension model with the preset fields it came from:
    ``stages.clip.loras…`` → ``stages.clip.extension_loras…``, ``components`` →
    ``extension_components``, anything else under ``stages.clip.extension_model``."""
    try:
        yield
    except InputError as exc:
        problems = []
        for p in exc.problems:
            if p.startswith("stages.clip.loras"):
                p = "stages.clip.extension_loras" + p.removeprefix("stages.clip.loras")
            elif p.startswith("components: "):
                p = "stages.clip.extension_components: " + p.removeprefix("components: ")
            p = p.replace("`components:`", "`extension_components:`")
            problems.append(p if p.startswith("stages.clip.extension_") else f"stages.clip.extension_model: {p}")
        raise InputError(exc.file, problems) from None


def wan_frame_count(duration_s: float, fps) -> int:
    """Frames for ``duration_s`` seconds at ``fps``, rounded to Wan's valid counts 4k+1 (k ≥ 1):
    the VAE compresses time 4x after the first frame (Wan2.1 report)."""
    n = max(1, round(duration_s * float(fps)))
    return 4 * max(1, round((n - 1) / 4)) + 1


def segment_lengths(total: int, max_frames: int, overlap: int = 1) -> list[int]:
    """Split a ``total``-frame (4k+1) clip into segments of at most ``max_frames`` (4m+1) frames,
    each after the first repeating the last ``overlap`` (4j+1, < max_frames) frames of the one
    before: ``lengths[0] + sum(n - overlap for n in lengths[1:]) == total``, lengths as even as
    possible. ``overlap`` 1: consecutive segments share their boundary frame."""
    quads, per, shared = (total - 1) // 4, (max_frames - 1) // 4, (overlap - 1) // 4
    count = 1 if quads <= per else math.ceil((quads - shared) / (per - shared))
    base, extra = divmod(quads + shared * (count - 1), count)
    return [4 * (base + (1 if i < extra else 0)) + 1 for i in range(count)]


def match_segment_colour(frames: np.ndarray, overlap_new: np.ndarray, overlap_ref: np.ndarray, fade_out: bool) -> np.ndarray:
    """Give ``frames`` uint8 (T, H, W, 3) the per-channel mean/std of ``overlap_ref`` (the overlap
    as the previous segment decoded it) where the same frames of this segment (``overlap_new``)
    have other statistics. fade_out: the correction falls linearly to none at the last frame (a
    final segment must still reach its end frame). Returns uint8 (T, H, W, 3)."""
    nm, ns = overlap_new.reshape(-1, 3).mean(0), overlap_new.reshape(-1, 3).std(0)
    rm, rs = overlap_ref.reshape(-1, 3).mean(0), overlap_ref.reshape(-1, 3).std(0)
    gain = rs / np.maximum(ns, 1e-3)
    out = np.empty_like(frames)
    t = len(frames)
    for i, frame in enumerate(frames.astype(np.float32)):
        w = 1.0 - i / max(t - 1, 1) if fade_out else 1.0
        corrected = (frame - nm) * gain + rm
        out[i] = np.clip(np.rint(w * corrected + (1 - w) * frame), 0, 255).astype(np.uint8)
    return out


def expert_guidance(preset_high: float, preset_low: float | None, scene: float | None) -> float:
    """Guidance scale of the low-noise expert (``guidance_scale_2``) of a two-expert model.

    The preset's ``guidance_scale_2`` (default: its ``guidance_scale``); a scene's own
    ``guidance_scale`` reaches both experts, keeping the preset's ratio low/high (equal in the
    Wan2.2 I2V-A14B config: 3.5 / 3.5), so raising a scene's guidance raises both.
    """
    low = preset_low if preset_low is not None else preset_high
    if scene is None:
        return low
    return scene * (low / preset_high) if preset_high > 0 else scene


class WanI2VClip(DiffusersEngine):
    """Wan image-to-video clip engine (see module doc). Loads its pipeline on the first render and
    keeps it until :meth:`close`.

    Raises :class:`InputError` for steps outside 1..100 or a base size outside
    ``min_size..max_size`` / not a multiple of the model's 16 (32 for TI2V-5B) pixels.
    """

    name = "wan_i2v"
    stage = "clip"
    params_model = WanClipParams

    def __init__(self, params: dict, preset) -> None:
        super().__init__(params, preset)
        if (self.params.max_frames - 1) % 4:
            raise InputError(self.file, f"stages.clip.max_frames: {self.params.max_frames} is not 4k+1 (e.g. 81)")
        p = self.params
        if (p.overlap_frames - 1) % 4 or p.overlap_frames >= p.max_frames:
            raise InputError(
                self.file, f"stages.clip.overlap_frames: {p.overlap_frames} must be 4k+1 (1, 5, 9…) and below max_frames {p.max_frames}"
            )
        for field in ("width", "height"):
            self._check_side(field, getattr(preset, field), 16, self.file)
        self._extension: VaceExtension | None = None
        if p.extension_components is not None and not is_single_file(p.extension_model or ""):
            raise InputError(
                self.file,
                f"stages.clip.extension_components: only for a single-file extension_model (.safetensors / .gguf); "
                f"{p.extension_model} is a diffusers checkpoint that holds every component: remove extension_components",
            )
        if p.extension_model is not None:
            self._extension = VaceExtension(p, self.preset, p.max_frames)
        self._variant: str | None = None  # of `model`, read from its configs or its loaded pipeline

    def plan_frames(self) -> int:
        return self.params.max_frames

    def _flf2v_from_configs(self) -> bool | None:
        """Whether ``model`` is a Wan2.1 FLF2V checkpoint (transformer ``pos_embed_seq_len`` set),
        read from its configs without loading any weight; None when they cannot be read here."""
        from wan_pipeline.engines.diffusers_support import resolve_model_source
        from wan_pipeline.models import identify, read_checkpoint
        from wan_pipeline.models.model_files import resolve_model_files, uses_single_file

        try:
            if uses_single_file(self.params):
                source = str(resolve_model_files(self.params, self.file, self.preset.storage_root).config_dir)
            else:
                source = resolve_model_source(self.params.model, self.preset.storage_root)
            ckpt = read_checkpoint(source)
        except InputError:
            return None  # loading the pipeline reports what is wrong, with its fix
        if ckpt.transformer is None:
            return None
        self._variant = identify(ckpt).variant
        return bool(ckpt.transformer.pos_embed_seq_len)

    def _flf2v_model(self) -> bool:
        """Whether ``model`` is a Wan2.1 FLF2V checkpoint: from its configs where they can be read,
        else from the loaded pipeline."""
        if self._pipe is None and (known := self._flf2v_from_configs()) is not None:
            return known
        transformer = self.pipe.transformer
        return transformer is not None and bool(transformer.config.pos_embed_seq_len)

    def _needs_extension(self, scene_id: str, total: int, segments: int, fps) -> str:
        """The problem of a scene of ``total`` frames in ``segments`` segments that an FLF2V
        ``model`` cannot continue without ``extension_model``, with its fixes."""
        return (
            f"scene {scene_id!r}: {total} frames need {segments} segments of at most {self.params.max_frames}, "
            f"and {self._variant or 'this FLF2V model'} renders only between a real first and last frame; "
            "set stages.clip.extension_model to a Wan VACE checkpoint (e.g. the film stage's "
            "Wan-AI/Wan2.1-VACE-14B-diffusers) to continue long scenes with it, "
            f"or shorten the scene to {(self.params.max_frames - 1) / float(fps):g} s or less, or split it into scenes"
        )

    def scene_problems(self, scenes: list[tuple[str, float]], fps) -> list[str]:
        """Problems of ``scenes`` ((id, duration in seconds) at ``fps`` frames/s) this engine would
        refuse when it renders them, found before any weight loads: a scene longer than one
        generation (``max_frames``) with an FLF2V ``model`` and no ``extension_model``."""
        if self._extension is not None:
            return []
        long = []
        for scene_id, duration_s in scenes:
            total = wan_frame_count(duration_s, fps)
            segments = len(segment_lengths(total, self.params.max_frames, self.params.overlap_frames))
            if segments > 1:
                long.append((scene_id, total, segments))
        if not long or not self._flf2v_from_configs():
            return []
        return [self._needs_extension(scene_id, total, segments, fps) for scene_id, total, segments in long]

    # -- loading ---------------------------------------------------------------------------
    def _check_side(self, field: str, value: int, multiple: int, file: str | None) -> None:
        lo, hi = self.params.min_size, self.params.max_size
        if not (lo <= value <= hi and value % multiple == 0):
            raise InputError(
                file, f"{field}: {value} px is outside the supported range of stages.clip: {lo}..{hi} px in multiples of {multiple}"
            )

    @property
    def pipe(self):
        """The loaded ``WanImageToVideoPipeline`` (loaded on first use, after the extension
        model is released: one of the two is loaded at a time)."""
        if self._pipe is None:
            from diffusers import WanImageToVideoPipeline

            if self._extension is not None:
                self._extension.close()
            pipe = self._load(WanImageToVideoPipeline)
            transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
            if not pipe.config.get("expand_timesteps") and transformer.config.in_channels != 2 * pipe.vae.config.z_dim + 4:
                release_pipeline(pipe)
                raise InputError(
                    self.file,
                    f"stages.clip.model: {self.params.model} is a text-to-video checkpoint "
                    "(no image conditioning); use a Wan I2V, FLF2V, TI2V or I2V-A14B model",
                )
            self._pipe = pipe
            self._variant = checkpoint_variant(pipe)
        return self._pipe

    def _extension_pipe(self):
        """The loaded extension ``WanVACEPipeline`` (after ``model``'s pipeline is released)."""
        if self._extension._pipe is None:
            pipe, self._pipe = self._pipe, None
            release_pipeline(pipe)
        return self._extension.pipe

    # -- telemetry -------------------------------------------------------------------------
    def describe(self) -> dict:
        p = self.params
        out = {
            "engine": self.name,
            "model": p.model,
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "flow_shift": p.flow_shift,
            "max_frames": p.max_frames,
            "dtype": p.dtype,
            "memory_strategy": self._strategy or p.memory_strategy,
            **self.lever_describe(),
        }
        if self._pipe is not None:
            out["variant"] = checkpoint_variant(self._pipe)
            out["flow_shift"] = self._pipe.scheduler.config.get("flow_shift")
        out.update(self.loaded_info())
        if p.extension_model is not None:
            out["extension_model"] = p.extension_model
            if self._extension._pipe is not None:
                out["extension_variant"] = checkpoint_variant(self._extension._pipe)
        return out

    def close(self) -> None:
        """Release both pipelines (host memory and CUDA cache)."""
        if self._extension is not None:
            self._extension.close()
        super().close()

    # -- rendering -------------------------------------------------------------------------
    def _run_pipeline(self, **kwargs):
        """One diffusers call (kept separate so tests can observe the arguments): the extension
        VACE pipeline when ``kwargs`` hold a ``video``, else ``model``'s."""
        pipe = self._extension.pipe if "video" in kwargs else self.pipe
        return pipe(**kwargs).frames

    def _lora_list(self, request: ClipRequest) -> list[tuple[Path, float, str]]:
        """The scene's LoRAs, loaded as adapters on top of the preset's (fused at load)."""
        out = []
        for lora in request.loras:
            out.append((Path(lora.path), float(lora.strength), getattr(lora, "expert", "both")))
        return out

    def render(self, request: ClipRequest) -> Clip | FrameStream:
        """Render the scene: uint8 (T, height, width, 3) at ``request.fps`` with T = 4k+1 frames for
        ``duration_s``, or with ``request.stream`` a :class:`FrameStream` made a segment at a time;
        see the module doc for segments, FLF2V and the VACE extension. Raises :class:`InputError`
        for a scene an FLF2V ``model`` cannot render without ``extension_model``."""
        total = wan_frame_count(request.duration_s, request.fps)
        overlap = self.params.overlap_frames
        lengths = segment_lengths(total, self.params.max_frames, overlap)
        vace = len(lengths) > 1 and self._flf2v_model()
        if vace and self._extension is None:
            raise InputError(self.file, self._needs_extension(request.scene_id, total, len(lengths), request.fps))
        engine: DiffusersEngine = self._extension if vace else self
        pipe = self._extension_pipe() if vace else self.pipe
        multiple = size_multiple(pipe)
        self._check_side("width", request.width, multiple, self.file)
        self._check_side("height", request.height, multiple, self.file)
        steps = request.steps if request.steps is not None else self.params.steps
        check_steps(steps, f"scene {request.scene_id!r} steps", None)
        guidance = request.guidance_scale if request.guidance_scale is not None else self.params.guidance_scale
        two_experts = getattr(pipe, "transformer_2", None) is not None and pipe.config.get("boundary_ratio") is not None
        guidance_2 = (
            expert_guidance(self.params.guidance_scale, self.params.guidance_scale_2, request.guidance_scale) if two_experts else None
        )
        warnings = []
        for label, value in (("guidance_scale", guidance), ("guidance_scale_2", guidance_2)):
            if value is not None and value >= GUIDANCE_WARNING:
                warnings.append(
                    f"{label} {value:g} >= {GUIDANCE_WARNING:g}: Wan tends to give black or over-saturated frames; 3.5-5 is the usual range"
                )
        size_warning = native_size_warning(pipe, request.width, request.height)
        if size_warning:
            warnings.append(size_warning)
        supports_last = not pipe.config.get("expand_timesteps")
        if request.last is not None and not supports_last:
            warnings.append("this checkpoint (TI2V) has no first-last-frame conditioning in diffusers: the handoff frame was not used")
        if vace and request.loras:
            warnings.append("the scene's LoRAs are for stages.clip.model and were not applied to the VACE extension model")
        size = (request.width, request.height)
        last = fit_image(request.last, *size) if request.last is not None and supports_last else None
        negative = request.negative_prompt or self.params.negative_prompt
        import torch
        from PIL import Image

        # A CPU generator gives the same noise whatever device runs the model (diffusers'
        # randn_tensor draws on the generator's device and moves the tensor).
        generator = torch.Generator("cpu").manual_seed(int(request.seed))
        check_window(max(lengths), request.width, request.height, "stages.clip.max_frames", self.file)
        shifts: list[float] = []  # colour shift at each segment join (filled as segments are made)
        engine.start_counting()

        def i2v_segment(n: int, start: np.ndarray, context: np.ndarray | None, end: np.ndarray | None, kwargs: dict) -> np.ndarray:
            """``model`` from ``start`` (or the ``context`` frames) to ``end``: uint8 (n, H, W, 3)."""
            kwargs["image"] = Image.fromarray(start)
            if end is not None:
                kwargs["last_image"] = Image.fromarray(end)
            with _clip_images(pipe, start, end), _continue_from(pipe, context), self.generation(pipe, steps, (guidance, guidance_2)):
                return to_uint8_frames(self._run_pipeline(**kwargs))

        def vace_segment(n: int, start: np.ndarray, context: np.ndarray | None, end: np.ndarray | None, kwargs: dict) -> np.ndarray:
            """VACE extension: ``context`` (else ``start``) given as the first frames, ``end`` (if
            any) as the last, the rest generated: uint8 (n, H, W, 3)."""
            given = context if context is not None else start[None]
            video = np.zeros((n, request.height, request.width, 3), np.uint8)
            flags = np.zeros(n, dtype=bool)
            video[: len(given)], flags[: len(given)] = given, True
            if end is not None:
                video[-1], flags[-1] = end, True
            kwargs["video"], kwargs["mask"] = vace_video_and_mask(video, flags)
            with engine.generation(pipe, steps, (guidance, guidance_2)):
                return to_uint8_frames(self._run_pipeline(**kwargs))

        make = vace_segment if vace else i2v_segment

        def segments():
            """Each segment's new frames, uint8 (n, H, W, 3), as it finishes (the overlap kept from
            the previous segment dropped, colour-matched to it); the LoRAs stay applied until the
            last one, and the lever telemetry and colour shift reach ``meta`` after it."""
            start = fit_image(request.first, *size)
            context = None  # uint8 (overlap, H, W, 3): the previous segment's last frames
            with loras_applied(pipe, [] if vace else self._lora_list(request), request.log):
                for i, n in enumerate(lengths):
                    final = i == len(lengths) - 1
                    end = last if final else None
                    if context is not None:
                        start = context[0]
                    kwargs = dict(
                        prompt=request.prompt,
                        negative_prompt=negative,
                        height=request.height,
                        width=request.width,
                        num_frames=n,
                        num_inference_steps=steps,
                        guidance_scale=guidance,
                        generator=generator,
                        output_type="np",
                        max_sequence_length=self.params.max_sequence_length,
                        callback_on_step_end=step_progress(request.progress, i * steps, steps * len(lengths)),
                    )
                    if guidance_2 is not None:
                        kwargs["guidance_scale_2"] = guidance_2
                    frames = make(n, start, context, end, kwargs)
                    if context is None:
                        piece = frames
                    else:
                        k = len(context)
                        if self.params.colour_match:
                            frames = match_segment_colour(frames, frames[:k], context, fade_out=end is not None)
                        shifts.append(mean_colour_shift(context[-1], frames[k]))
                        piece = frames[k:]  # the overlap was kept from the previous segment
                    # the next segment continues from the output's last frames (with a segment of
                    # fewer new frames than the overlap, some come from the segment before)
                    context = (piece if context is None else np.concatenate([context, piece]))[-overlap:]
                    request.log(f"segment {i + 1}/{len(lengths)}: {n} frames" + (" (VACE extension)" if vace else ""))
                    if final:
                        meta["segment_colour_shift"] = round(float(np.mean(shifts)), 3) if shifts else None
                        meta.update(engine.lever_record(steps))  # work counts over all segments
                    yield piece

        if len(lengths) == 1:
            continuation = None
        else:
            continuation = "vace_extension" if vace else "ti2v_latents" if pipe.config.get("expand_timesteps") else "i2v_mask"
        meta = {
            "flf2v": last is not None,
            "model": self.params.model,
            "variant": self._variant,
            "segments": len(lengths),
            "segment_frames": lengths,
            "overlap_frames": overlap if len(lengths) > 1 else None,
            "continuation": continuation,
            "extension_model": self.params.extension_model if vace else None,
            "segment_colour_shift": round(float(np.mean(shifts)), 3) if shifts else None,
            "memory_strategy": engine._strategy,
            "steps": steps,
            "guidance_scale": guidance,
            "flow_shift": pipe.scheduler.config.get("flow_shift"),
            "warnings": warnings,
            **engine.loaded_info(),
        }
        if vace:
            meta["extension_variant"] = checkpoint_variant(pipe)
        meta.update(engine.lever_record(steps))  # cache, work counts, storage dtype, planner VRAM
        if guidance_2 is not None:
            meta["guidance_scale_2"] = guidance_2
        for w in warnings:
            request.log(f"warning: {w}")
        made = segments()
        # The first segment is made here, inside the stage call, so that an out-of-memory error at
        # the clip's peak reaches the stage runner's retry; later segments come as they are read.
        head = next(made)

        def frames():
            yield from head
            for piece in made:
                yield from piece

        out = FrameStream(frames, total, request.fps, request.width, request.height, meta=meta)
        return out if request.stream else out.collect()


@contextlib.contextmanager
def _clip_images(pipe, first: np.ndarray, last: np.ndarray | None):
    """Make the pipeline's CLIP image embedding see the images its transformer was trained on.

    Wan2.1 transformers with ``image_dim`` take CLIP features: the FLF2V transformer
    (``pos_embed_seq_len`` set) always two images — first and last, or the first frame twice for a
    segment without an end frame — and the plain I2V transformer the first frame only, also when
    a last frame conditions the latents. diffusers encodes ``[image]`` or ``[image, last_image]``
    and refuses ``image_embeds`` next to ``image``, so ``encode_image`` is redirected for the call.
    """
    transformer = pipe.transformer
    if transformer is None or transformer.config.image_dim is None or getattr(pipe, "image_encoder", None) is None:
        yield
        return
    from PIL import Image

    images = [Image.fromarray(first)]
    if transformer.config.pos_embed_seq_len:
        images.append(Image.fromarray(last if last is not None else first))
    original = pipe.encode_image
    pipe.encode_image = lambda _image, device=None: original(images, device)
    try:
        yield
    finally:
        del pipe.encode_image


@contextlib.contextmanager
def _continue_from(pipe, context: np.ndarray | None):
    """Condition the next pipeline call on ``context`` uint8 (N, H, W, 3), N = 4k+1, as its first
    N frames instead of the single ``image`` (see module doc); nothing changes for N ≤ 1.

    diffusers builds the condition in ``prepare_latents`` from ``image`` (and ``last_image``); the
    call is redirected to build it from the context frames in the same layout: for the I2V models
    the 4-channel frame mask (1 = given) over the VAE latents of the condition video (context,
    then zeros, then the end frame if any), for TI2V (``expand_timesteps``) the context's latent
    frames with mask 0 (not denoised).
    """
    if context is None or len(context) <= 1:
        yield
        return
    import torch
    from diffusers.pipelines.wan.pipeline_wan_i2v import retrieve_latents
    from PIL import Image

    original = pipe.prepare_latents

    def encode(video: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        lat = retrieve_latents(vae.encode(video.to(device=vae.device, dtype=vae.dtype)), sample_mode="argmax")
        lat = lat.to(device=like.device, dtype=like.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(lat)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(lat)
        return (lat - mean) * inv_std

    def prepare(
        image, batch_size, num_channels_latents, height, width, num_frames, dtype, device, generator, latents=None, last_image=None
    ):
        out = original(image, batch_size, num_channels_latents, height, width, num_frames, dtype, device, generator, latents, last_image)
        latents = out[0]
        ctx = pipe.video_processor.preprocess([Image.fromarray(f) for f in context], height=height, width=width)
        ctx = ctx.to(device=image.device, dtype=image.dtype).permute(1, 0, 2, 3).unsqueeze(0)  # (1, 3, N, H, W)
        n, tf = ctx.shape[2], pipe.vae_scale_factor_temporal
        lat_h, lat_w = latents.shape[-2:]
        if pipe.config.get("expand_timesteps"):
            given = encode(ctx, latents)  # (1, C, k, h, w), k = (N - 1) / 4 + 1
            condition = torch.zeros_like(latents)
            condition[:, :, : given.shape[2]] = given
            mask = torch.ones(1, 1, latents.shape[2], lat_h, lat_w, dtype=latents.dtype, device=latents.device)
            mask[:, :, : given.shape[2]] = 0
            return latents, condition, mask
        video = torch.zeros(1, 3, num_frames, height, width, dtype=ctx.dtype, device=ctx.device)
        video[:, :, :n] = ctx
        frame_mask = torch.zeros(batch_size, 1, num_frames, lat_h, lat_w)
        frame_mask[:, :, :n] = 1
        if last_image is not None:
            video[:, :, -1] = last_image.to(video)
            frame_mask[:, :, -1] = 1
        condition = encode(video, latents).repeat(batch_size, 1, 1, 1, 1)
        # diffusers' layout: the first frame's flag four times, then groups of four per latent frame
        frame_mask = torch.cat([frame_mask[:, :, :1].repeat_interleave(tf, dim=2), frame_mask[:, :, 1:]], dim=2)
        frame_mask = frame_mask.view(batch_size, -1, tf, lat_h, lat_w).transpose(1, 2).to(condition)
        return latents, torch.cat([frame_mask, condition], dim=1)

    pipe.prepare_latents = prepare
    try:
        yield
    finally:
        del pipe.prepare_latents
