"""LoRA adapters on the Wan clip engine: applied with their strength, removed after the scene,
and a LoRA made for another model rejected with the file named."""

import os
from fractions import Fraction
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from wan_pipeline.engines.base import ClipRequest
from wan_pipeline.engines.wan_clip import WanI2VClip
from wan_pipeline.errors import InputError
from wan_pipeline.models.tiny import make_tiny_lora, make_tiny_wan_lora


@pytest.fixture(scope="module", autouse=True)
def tiny_models(storage):
    """The miniature Wan checkpoints under the module's storage root (made explicitly: resolving a
    model path never writes weights)."""
    from wan_pipeline.models.tiny import make_tiny_models

    return make_tiny_models(storage / "models" / "tiny")


@pytest.fixture(scope="module")
def lora_file(storage):
    return make_tiny_lora(storage / "loras" / "style.safetensors", model="wan21-i2v")


def engine(model="wan21-i2v", **params):
    return WanI2VClip(
        {"model": f"models/tiny/{model}", "steps": 2, "min_size": 32, "max_sequence_length": 32, **params},
        SimpleNamespace(source_path="workflows/t.yaml", width=32, height=32, fps=16, device="cpu"),
    )


def request(loras=()):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    return ClipRequest(
        scene_id="s1",
        prompt="a cat walks",
        negative_prompt="",
        seed=4,
        width=32,
        height=32,
        fps=Fraction(16),
        duration_s=0.3,
        first=first,
        last=None,
        loras=tuple(loras),
    )


def lora(path, strength=1.0):
    return SimpleNamespace(path=str(path), strength=strength)


def has_lora_layers(module) -> bool:
    return any(hasattr(m, "lora_A") for m in module.modules())


@pytest.fixture(scope="module")
def i2v(storage):
    e = engine()
    yield e
    e.close()


def test_lora_changes_the_output_and_unloading_restores_it(i2v, lora_file):
    base = i2v.render(request()).frames
    styled = i2v.render(request([lora(lora_file)])).frames
    assert not has_lora_layers(i2v.pipe.transformer)
    after = i2v.render(request()).frames
    assert (base != styled).mean() > 0.05
    assert np.array_equal(base, after)
    # the strength is applied: zero strength gives the bare model's frames, two differs from one
    assert np.array_equal(i2v.render(request([lora(lora_file, 0.0)])).frames, base)
    assert not np.array_equal(i2v.render(request([lora(lora_file, 2.0)])).frames, styled)


def test_preset_level_lora_relative_to_storage(storage, lora_file):
    e = engine(loras=[{"path": "loras/style.safetensors", "strength": 1.0}])
    styled_by_preset = e.render(request()).frames
    e.close()
    e = engine()
    assert np.array_equal(styled_by_preset, e.render(request([lora(lora_file)])).frames)
    e.close()


def test_two_experts_get_the_lora_and_lose_it_afterwards(storage, tmp_path):
    path = make_tiny_lora(tmp_path / "a14b.safetensors", model="wan22-i2v-a14b")
    e = engine("wan22-i2v-a14b")
    seen = []
    real = e._run_pipeline

    def spy(**kwargs):
        seen.append((has_lora_layers(e.pipe.transformer), has_lora_layers(e.pipe.transformer_2)))
        return real(**kwargs)

    e._run_pipeline = spy
    base = e.render(request()).frames
    styled = e.render(request([lora(path)])).frames
    assert seen == [(False, False), (True, True)]
    assert not has_lora_layers(e.pipe.transformer) and not has_lora_layers(e.pipe.transformer_2)
    assert not np.array_equal(base, styled)
    assert np.array_equal(base, e.render(request()).frames)
    e.close()


def test_lora_for_another_model_is_rejected_naming_the_file(i2v, tmp_path):
    vace_lora = make_tiny_lora(tmp_path / "vace_style.safetensors", model="wan21-vace")
    with pytest.raises(InputError, match=r"(?s)vace_style\.safetensors.*does not match the model") as err:
        i2v.render(request([lora(vace_lora)]))
    assert "vace_blocks" in str(err.value)
    wide = tmp_path / "too_wide.safetensors"
    save_file(
        {
            "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 40),
            "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(24, 4),
        },
        str(wide),
    )
    with pytest.raises(InputError, match=r"(?s)too_wide\.safetensors.*input width 40, the layer takes 24"):
        i2v.render(request([lora(wide)]))
    with pytest.raises(InputError, match=r"missing\.safetensors: LoRA file not found"):
        i2v.render(request([lora(tmp_path / "missing.safetensors")]))
    assert not has_lora_layers(i2v.pipe.transformer)


def test_wan_format_lora_with_bias_deltas_loads_and_its_biases_count(i2v, tmp_path):
    """A Wan/ComfyUI-layout LoRA with ``diff_b`` keys (CausVid, lightx2v distill LoRAs): diffusers
    turns the bias deltas into ``lora_B.bias``; the check accepts them and they reach the output."""
    from safetensors.torch import load_file

    path = make_tiny_wan_lora(tmp_path / "causvid_like.safetensors")
    state = load_file(str(path))
    assert any(k.endswith(".diff_b") for k in state)
    no_bias = tmp_path / "no_bias.safetensors"
    save_file({k: v for k, v in state.items() if not k.endswith(".diff_b")}, str(no_bias))
    base = i2v.render(request()).frames
    with_bias = i2v.render(request([lora(path)])).frames
    without_bias = i2v.render(request([lora(no_bias)])).frames
    assert (base != with_bias).mean() > 0.05
    assert (with_bias != without_bias).mean() > 0.05  # the bias deltas are applied, not dropped
    assert not has_lora_layers(i2v.pipe.transformer)
    assert np.array_equal(base, i2v.render(request()).frames)
