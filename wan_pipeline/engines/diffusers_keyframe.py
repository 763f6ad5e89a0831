"""Keyframe engine ``diffusers_t2i``: text-to-image through diffusers for scenes without a picture.

A Wan checkpoint (``model_index.json`` class ``Wan*Pipeline``) renders one frame with
``WanPipeline`` (Wan2.1 T2V was trained jointly on images and video: Wan2.1 report); any other
checkpoint is loaded with ``AutoPipelineForText2Image`` (SDXL-Turbo, FLUX, Z-Image, …). A scene
that has its own image gets that image fitted to the base size, as the preview engine does.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from wan_pipeline.engines.base import KeyframeRequest
from wan_pipeline.engines.diffusers_support import (
    DiffusersEngine,
    ModelParams,
    pipeline_class_name,
    resolve_model_source,
    step_progress,
    to_uint8_frames,
)
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
        self._last_record: dict = {}

    @property
    def pipe(self):
        if self._pipe is None:
            source = resolve_model_source(self.params.model)
            cls_name = pipeline_class_name(source) or ""
            self._wan = cls_name.startswith("Wan") or "wan" in source.lower()
            if self._wan:
                from diffusers import WanPipeline as cls
            else:
                from diffusers import AutoPipelineForText2Image as cls
            self._pipe = self._load(cls, source)
        return self._pipe

    def describe(self) -> dict:
        p = self.params
        return {
            "engine": self.name,
            "model": p.model,
            "steps": p.steps,
            "guidance_scale": p.guidance_scale,
            "memory_strategy": self._strategy or p.memory_strategy,
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
        m = self.params.size_multiple
        width, height = (math.ceil(v / m) * m for v in (request.width, request.height))
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
