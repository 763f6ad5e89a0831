"""The real-model presets ask each model only for what it was made for (checked from the
built-in catalogue of published configs, no weights): keyframe and VACE models whose native
sizes cover the preset's size, VACE's flow shift for that resolution, and host RAM figures."""

from __future__ import annotations

import pytest

from wan_pipeline.engines.diffusers_support import NATIVE_SIZE_TOLERANCE, native_size_warning
from wan_pipeline.models import identify
from wan_pipeline.models.catalog import catalog_checkpoint
from wan_pipeline.preset import load_preset

REAL_PRESETS = ("wan21-flf2v-14b", "wan22-i2v-a14b", "wan22-ti2v-5b")
VACE_SHIFT_720P = 5.0
"""diffusers' Wan VACE example: ``flow_shift = 5.0  # 5.0 for 720P, 3.0 for 480P``."""


def near_native(sizes, width: int, height: int) -> bool:
    return any(abs(width - w) <= NATIVE_SIZE_TOLERANCE * w and abs(height - h) <= NATIVE_SIZE_TOLERANCE * h for w, h in sizes)


@pytest.mark.parametrize("name", REAL_PRESETS)
def test_every_model_stage_runs_at_a_size_its_model_was_made_for(name):
    preset = load_preset(name)
    for stage in ("keyframe", "clip", "film"):
        section = preset.stage(stage).model_dump()
        info = identify(catalog_checkpoint(section["model"]))
        assert near_native(info.native_sizes, preset.width, preset.height), (stage, info.variant, info.native_sizes)
        if stage == "keyframe":
            assert "T2I" in info.capabilities
    film = preset.stage("film").model_dump()
    assert min(preset.width, preset.height) >= 704 and film["flow_shift"] == VACE_SHIFT_720P
    clip = preset.stage("clip").model_dump()
    if "FLF2V" in identify(catalog_checkpoint(clip["model"])).variant:  # long scenes continue through VACE
        ext = identify(catalog_checkpoint(clip["extension_model"]))
        assert "VACE" in ext.capabilities and near_native(ext.native_sizes, preset.width, preset.height), ext.variant
        assert clip["extension_model"] == film["model"] and clip["extension_flow_shift"] == VACE_SHIFT_720P


def test_size_warning_names_the_models_sizes():
    from types import SimpleNamespace

    vace13 = identify(catalog_checkpoint("Wan-AI/Wan2.1-VACE-1.3B-diffusers"))
    pipe = SimpleNamespace(wan_model_info=vace13)
    warning = native_size_warning(pipe, 1280, 704)
    assert "Wan2.1-VACE-1.3B was trained at 832x480, 480x832; 1280x704 is outside" in warning
    assert native_size_warning(pipe, 832, 480) is None
    assert native_size_warning(SimpleNamespace(wan_model_info=None), 1280, 704) is None
