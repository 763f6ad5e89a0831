"""Keyframe engine ``diffusers_t2i``: text-to-image through diffusers for scenes without a picture.

The pipeline class comes from the checkpoint's identified variant (:func:`wan_pipeline.models.identify`,
from its configs, never its name): a Wan checkpoint that can make images (``T2I``: Wan2.1 T2V,
Wan2.2 T2V / TI2V, trained jointly on images and video: Wan2.1 report) renders one frame with
``WanPipeline``; a Wan checkpoint without ``T2I`` (I2V, FLF2V, VACE) is refused; any other
checkpoint is loaded with ``AutoPipelineForText2Image`` (SDXL-Turbo, FLUX, Z-Image, …).

A Wan model is run at the native size it was trained for whose aspect ratio is closest to the
base size (e.g. TI2V-5B at 1280×704 for a 1280×720 preset: a 480P-only model is not asked for
720P), and the frame is then fitted (resized and centre-cropped) to the base size. A scene that
has its own image gets that image fitted to the base size, as the preview engine does.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from wan_pipeline.engines.base import KeyframeRequest
from wan_pipeline.engines.diffusers_support import (
    DiffusersEngine,
    ModelParams,
    resolve_model_source,
    step_progress,
    to_uint8_frames,
    uses_single_file,
)
from wan_pipeline.errors import InputError
from wan_pipeline.media.image_io import fit_image


class T2IParams(ModelParams):
    """Preset section ``stages.keyframe`` for ``engine: diffusers_t2i``: steps, guidance_scale
    (guidance_scale_2: the low-noise expert of a two-expert Wan checkpoint), ``size_multiple``
    (the generated size is rounded up to it, then fitted to the base size), and the speed levers."""

    steps: int = 30
    guidance_scale: float = Field(5.0, ge=0.0, le=30.0)
    guidance_scale_2: float | None = Field(None, ge=0.0, le=30.0)
    size_multiple: int = Field(16, ge=1, le=128)


class DiffusersT2IKeyframe(DiffusersEngine):
    """Keyframe from text (diffusers) or from the scene's image. Loads the model on the first
    text-to-image scene and keeps it until :meth:`close`."""

    name = "diffusers_t2i"
    stage = "keyframe"
    params_model = T2IParams

    def __init__(self, params: dict, preset) -> None:
        super().__init__(params, preset)
        self._wan = False
        self._native_sizes: list[tuple[int, int]] = []
        self._generated_size: tuple[int, int] | None = None
        self._last_record: dict = {}

    @property
    def pipe(self):
        if self._pipe is None:
            from wan_pipeline.models import identify, read_checkpoint

            source = resolve_model_source(self.params.model, self.preset.storage_root)
            if uses_single_file(source):  # a Wan transformer file (models.model_files checks its variant)
                self._wan = True
            else:
                try:
                    ckpt = read_checkpoint(source)
                except InputError as exc:
                    raise InputError(self.file, f"model {self.params.model!r}: {exc}") from None
                info = identify(ckpt)
                self._wan = info.family != "other"
                if self._wan and "T2I" not in info.capabilities:
                    raise InputError(
                        self.file,
                        f"stages.keyframe.model: {self.params.model} is {info.variant}, which cannot make an image from text; "
                        "use a Wan T2V / TI2V checkpoint or a text-to-image model",
                    )
                self._native_sizes = [tuple(s) for s in info.native_sizes]
            if self._wan:
                from diffusers import WanPipeline as cls
            else:
                from diffusers import AutoPipelineForText2Image as cls
            self._pipe = self._load(cls, source)
        return self._pipe

    def generation_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the model renders at for a ``width``×``height`` keyframe: the native
        size (see module doc) with the closest aspect ratio, else the requested size; rounded up
        to ``size_multiple``."""
        if self._native_sizes:
            width, height = min(self._native_sizes, key=lambda s: abs(math.log((s[0] / s[1]) / (width / height))))
        m = self.params.size_multiple
        return math.ceil(width / m) * m, math.ceil(height / m) * m

    def describe(self) -> dict:
        p = self.params
        return {
            "engine": self.name,
            "model": p.model,
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "memory_strategy": self._strategy or p.memory_strategy,
            "generated_size": list(self._generated_size) if self._generated_size else None,
            **self.loaded_info(),
            **self.lever_describe(),
            **self._last_record,  # the levers' work counts of the last generated keyframe
        }

    def render(self, request: KeyframeRequest) -> np.ndarray:
        """Return uint8 (request.height, request.width, 3): the scene's image fitted, or generated
        from ``request.prompt`` with ``request.seed``."""
        if request.image is not None:
            self._last_record = {}
            return fit_image(request.image, request.width, request.height)
        import torch

        pipe = self.pipe
        width, height = self.generation_size(request.width, request.height)
        self._generated_size = (width, height)
        kwargs = dict(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt or self.params.negative_prompt,
            height=height,
            width=width,
            num_inference_steps=self.params.steps,
            guidance_scale=self.params.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(int(request.seed)),
            output_type="np",
            callback_on_step_end=step_progress(request.progress, 0, self.params.steps),
        )
        if self.params.guidance_scale_2 is not None and pipe.config.get("boundary_ratio") is not None:
            kwargs["guidance_scale_2"] = self.params.guidance_scale_2
        self.start_counting()
        with self.generation(pipe, self.params.steps, (self.params.guidance_scale, self.params.guidance_scale_2)):
            if self._wan:
                frame = to_uint8_frames(pipe(num_frames=1, max_sequence_length=self.params.max_sequence_length, **kwargs).frames)[0]
            else:
                frame = to_uint8_frames(np.asarray(pipe(**kwargs).images))[0]
        self._last_record = self.lever_record(self.params.steps)
        return fit_image(frame, request.width, request.height)
