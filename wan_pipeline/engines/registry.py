"""Engine names a preset may use, per stage, and the factory that builds them.

Entries are ``"module:Class"`` strings imported on first use, so the CPU-only preview engines
never import torch or diffusers. Each class is built as ``Class(params: dict, preset: Preset)``
and validates its own parameters (raising :class:`~wan_pipeline.errors.InputError`).
"""

from __future__ import annotations

import importlib

from wan_pipeline.errors import InputError

ENGINES: dict[str, dict[str, str]] = {
    "keyframe": {
        "image_or_procedural": "wan_pipeline.engines.keyframe_image:ImageOrProceduralKeyframe",
        "diffusers_t2i": "wan_pipeline.engines.diffusers_keyframe:DiffusersT2IKeyframe",
    },
    "clip": {
        "camera_motion": "wan_pipeline.engines.camera_motion:CameraMotionClip",
        "wan_i2v": "wan_pipeline.engines.wan_clip:WanI2VClip",
    },
    "interpolated": {
        "optical_flow": "wan_pipeline.engines.optical_flow:FlowInterpolator",
        "rife": "wan_pipeline.engines.rife:RifeInterpolator",
    },
    "upscaled": {
        "lanczos": "wan_pipeline.engines.lanczos:LanczosUpscaler",
        "realesrgan": "wan_pipeline.engines.esrgan:RealEsrganUpscaler",
    },
    "film": {
        "concat": "wan_pipeline.engines.concat_film:ConcatFilm",
        "wan_vace": "wan_pipeline.engines.vace_film:WanVaceFilm",
    },
}


def engine_names(stage: str) -> list[str]:
    return sorted(ENGINES.get(stage, {}))


def build_engine(stage: str, config, preset):
    """Build the engine named by ``config.engine`` for ``stage`` from a preset section.

    config: :class:`~wan_pipeline.preset.StageConfig`; preset: :class:`~wan_pipeline.preset.Preset`.
    Raises :class:`InputError` naming the preset file and ``stages.<stage>.engine`` when the name
    is unknown.
    """
    table = ENGINES.get(stage)
    if table is None:
        raise KeyError(f"unknown stage {stage!r}")
    target = table.get(config.engine)
    if target is None:
        raise InputError(
            preset.source_path,
            f"stages.{stage}.engine: unknown engine {config.engine!r}; allowed: {', '.join(engine_names(stage))}",
        )
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(config.params, preset)
