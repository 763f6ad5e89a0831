"""Clip engine ``wan_i2v``: Wan image-to-video through diffusers' ``WanImageToVideoPipeline``.

One engine for every Wan I2V layout diffusers loads into that class:

* Wan2.1 I2V / FLF2V 14B (CLIP image encoder; the FLF2V transformer embeds first+last frame);
* Wan2.2 I2V-A14B (two experts ``transformer``/``transformer_2`` switched at ``boundary_ratio``,
  ``guidance_scale_2`` for the low-noise expert);
* Wan2.2 TI2V-5B (``expand_timesteps``: the first latent frame is the image; no last-frame
  conditioning in diffusers, so a handoff is rendered without it and reported in ``warnings``).

A scene longer than ``max_frames`` renders as consecutive segments, each starting from the
previous segment's last frame; the FLF2V end frame conditions the FINAL segment only, so the
handoff target is reached however long the scene is.
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
    release_pipeline,
    size_multiple,
    step_progress,
    to_uint8_frames,
)
from wan_pipeline.engines.lora import LoraEntry, loras_applied
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import fit_image
from wan_pipeline.media.stream import FrameStream, check_window

GUIDANCE_WARNING = 6.0
"""Guidance at or above this gives black or over-saturated Wan frames in practice (users' reports;
the model cards use 3.5–5)."""


class WanClipParams(ModelParams):
    """Preset section ``stages.clip`` for ``engine: wan_i2v``.

    steps / guidance_scale: defaults, overridden per scene; guidance_scale_2: low-noise expert
    (two-expert models; default = guidance_scale); flow_shift: scheduler shift (None keeps the
    checkpoint's); max_frames: the longest single generation (4k+1; Wan: 81); min_size/max_size:
    the supported side length in pixels; loras: adapters applied to every scene.
    """

    steps: int = 30
    guidance_scale: float = Field(5.0, ge=0.0, le=30.0)
    guidance_scale_2: float | None = Field(None, ge=0.0, le=30.0)
    flow_shift: float | None = Field(None, gt=0.0, le=50.0)
    max_frames: int = Field(81, ge=5, le=481)
    min_size: int = Field(256, ge=16)
    max_size: int = Field(1280, le=4096)
    loras: list[LoraEntry] = Field(default_factory=list)


def wan_frame_count(duration_s: float, fps) -> int:
    """Frames for ``duration_s`` seconds at ``fps``, rounded to Wan's valid counts 4k+1 (k ≥ 1):
    the VAE compresses time 4x after the first frame (Wan2.1 report)."""
    n = max(1, round(duration_s * float(fps)))
    return 4 * max(1, round((n - 1) / 4)) + 1


def segment_lengths(total: int, max_frames: int) -> list[int]:
    """Split a ``total``-frame (4k+1) clip into segments of at most ``max_frames`` (4m+1) frames
    that share their boundary frame: ``sum(len - 1) == total - 1``, lengths as even as possible."""
    quads, per = (total - 1) // 4, (max_frames - 1) // 4
    count = max(1, math.ceil(quads / per))
    base, extra = divmod(quads, count)
    return [4 * (base + (1 if i < extra else 0)) + 1 for i in range(count)]


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
        for field in ("width", "height"):
            self._check_side(field, getattr(preset, field), 16, self.file)

    def plan_frames(self) -> int:
        return self.params.max_frames

    # -- loading ---------------------------------------------------------------------------
    def _check_side(self, field: str, value: int, multiple: int, file: str | None) -> None:
        lo, hi = self.params.min_size, self.params.max_size
        if not (lo <= value <= hi and value % multiple == 0):
            raise InputError(
                file, f"{field}: {value} px is outside the supported range of stages.clip: {lo}..{hi} px in multiples of {multiple}"
            )

    @property
    def pipe(self):
        """The loaded ``WanImageToVideoPipeline`` (loaded on first use)."""
        if self._pipe is None:
            from diffusers import WanImageToVideoPipeline

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
        return self._pipe

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
        }
        if self._pipe is not None:
            out["variant"] = checkpoint_variant(self._pipe)
            out["flow_shift"] = self._pipe.scheduler.config.get("flow_shift")
        return out

    # -- rendering -------------------------------------------------------------------------
    def _run_pipeline(self, **kwargs):
        """One diffusers call (kept separate so tests can observe the arguments)."""
        return self.pipe(**kwargs).frames

    def _lora_list(self, request: ClipRequest) -> list[tuple[Path, float, str]]:
        out = []
        for entry in self.params.loras:
            out.append((self.preset.model_path(entry.path), entry.strength, entry.expert))
        for lora in request.loras:
            out.append((Path(lora.path), float(lora.strength), getattr(lora, "expert", "both")))
        return out

    def render(self, request: ClipRequest) -> Clip | FrameStream:
        """Render the scene: uint8 (T, height, width, 3) at ``request.fps`` with T = 4k+1 frames for
        ``duration_s``, or with ``request.stream`` a :class:`FrameStream` made a segment at a time;
        see the module doc for segments and FLF2V."""
        pipe = self.pipe
        multiple = size_multiple(pipe)
        self._check_side("width", request.width, multiple, self.file)
        self._check_side("height", request.height, multiple, self.file)
        steps = request.steps if request.steps is not None else self.params.steps
        check_steps(steps, f"scene {request.scene_id!r} steps", None)
        guidance = request.guidance_scale if request.guidance_scale is not None else self.params.guidance_scale
        two_experts = getattr(pipe, "transformer_2", None) is not None and pipe.config.get("boundary_ratio") is not None
        guidance_2 = (self.params.guidance_scale_2 if self.params.guidance_scale_2 is not None else guidance) if two_experts else None
        warnings = []
        for label, value in (("guidance_scale", guidance), ("guidance_scale_2", guidance_2)):
            if value is not None and value >= GUIDANCE_WARNING:
                warnings.append(
                    f"{label} {value:g} >= {GUIDANCE_WARNING:g}: Wan tends to give black or over-saturated frames; 3.5-5 is the usual range"
                )
        supports_last = not pipe.config.get("expand_timesteps")
        if request.last is not None and not supports_last:
            warnings.append("this checkpoint (TI2V) has no first-last-frame conditioning in diffusers: the handoff frame was not used")

        total = wan_frame_count(request.duration_s, request.fps)
        lengths = segment_lengths(total, self.params.max_frames)
        size = (request.width, request.height)
        last = fit_image(request.last, *size) if request.last is not None and supports_last else None
        negative = request.negative_prompt or self.params.negative_prompt
        import torch
        from PIL import Image

        # A CPU generator gives the same noise whatever device runs the model (diffusers'
        # randn_tensor draws on the generator's device and moves the tensor).
        generator = torch.Generator("cpu").manual_seed(int(request.seed))
        check_window(max(lengths), request.width, request.height, "stages.clip.max_frames", self.file)

        def segments():
            """Each segment's new frames, uint8 (n, H, W, 3), as it finishes (the shared boundary
            frame of a later segment dropped); the LoRAs stay applied until the last one."""
            start = fit_image(request.first, *size)
            with loras_applied(pipe, self._lora_list(request), request.log):
                for i, n in enumerate(lengths):
                    final = i == len(lengths) - 1
                    end = last if final else None
                    kwargs = dict(
                        image=Image.fromarray(start),
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
                    if end is not None:
                        kwargs["last_image"] = Image.fromarray(end)
                    with _clip_images(pipe, start, end):
                        frames = to_uint8_frames(self._run_pipeline(**kwargs))
                    start = frames[-1]
                    request.log(f"segment {i + 1}/{len(lengths)}: {n} frames")
                    yield frames if i == 0 else frames[1:]

        meta = {
            "flf2v": last is not None,
            "model": self.params.model,
            "variant": checkpoint_variant(pipe),
            "segments": len(lengths),
            "segment_frames": lengths,
            "memory_strategy": self._strategy,
            "steps": steps,
            "guidance_scale": guidance,
            "flow_shift": pipe.scheduler.config.get("flow_shift"),
            "warnings": warnings,
        }
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

        out = FrameStream(frames, 1 + sum(n - 1 for n in lengths), request.fps, request.width, request.height, meta=meta)
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
