"""Speed levers (preset LoRAs, caches, fp8 storage, attention backend, compile) on the miniature
checkpoints: each one applies, is counted, changes the output by a bounded amount where it is an
approximation and not at all where it must not; bad lever settings are refused by name."""

import os
from fractions import Fraction
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from wan_pipeline.engines.base import ClipRequest, KeyframeRequest
from wan_pipeline.engines.diffusers_keyframe import DiffusersT2IKeyframe
from wan_pipeline.engines.registry import build_engine
from wan_pipeline.engines.wan_clip import WanI2VClip
from wan_pipeline.errors import InputError
from wan_pipeline.models.tiny import make_tiny_distill_lora, make_tiny_lora, make_tiny_models
from wan_pipeline.preset import load_preset

STEPS = 10


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def preset():
    return SimpleNamespace(source_path="workflows/levers.yaml", width=32, height=32, fps=16, device="cpu")


def engine(model="wan21-i2v", **params):
    base = {"model": f"models/tiny/{model}", "steps": STEPS, "min_size": 32, "max_frames": 17, "max_sequence_length": 32}
    return WanI2VClip({**base, **params}, preset())


def request(loras=()):
    first = np.random.default_rng(0).integers(0, 255, (32, 32, 3)).astype(np.uint8)
    return ClipRequest(
        scene_id="s1",
        prompt="a cat walks",
        negative_prompt="blurry",
        seed=5,
        width=32,
        height=32,
        fps=Fraction(16),
        duration_s=0.5,
        first=first,
        loras=tuple(loras),
    )


def render(model="wan21-i2v", loras=(), **params):
    e = engine(model, **params)
    try:
        clip = e.render(request(loras))
        return clip.frames, clip.meta
    finally:
        e.close()


@pytest.fixture(scope="module")
def tiny(storage):
    make_tiny_models(storage / "models" / "tiny", names=("wan21-i2v", "wan22-i2v-a14b", "t2i", "wan21-vace"))  # vace: the preflight test
    return storage


@pytest.fixture(scope="module")
def plain(tiny):
    return render()


@pytest.fixture(scope="module")
def plain_single_pass(tiny):
    """guidance 1.0: one transformer pass per step (the distilled settings)."""
    return render(guidance_scale=1.0)


# -- the counts and the exact levers -----------------------------------------------------------
def test_plain_run_counts_every_block(plain):
    frames, m = plain
    # guidance 5 > 1: a conditional and an unconditional pass per step, 2 blocks each
    assert m["transformer_forward_calls"] == 2 * STEPS
    assert m["transformer_blocks_run"] == m["transformer_blocks_total"] == 2 * 2 * STEPS
    assert m["transformer_attention_run"] == 2 * m["transformer_blocks_run"]
    assert m["cache"] == "none" and m["storage_dtype"] == "float32" and m["compile"] == "none" and m["steps"] == STEPS
    assert m["planned_vram_mib"] > 0 and m["planned_vram_mib"] == m["planned_vram_plain_mib"]


def test_cache_none_and_native_attention_are_identical(plain):
    frames, m = render(cache={"method": "none"}, attention_backend="native")
    assert np.array_equal(frames, plain[0])
    assert m["transformer_blocks_run"] == plain[1]["transformer_blocks_run"] and m["attention_backend"] == "native"


def test_guidance_one_halves_the_forward_passes(plain_single_pass):
    _, m = plain_single_pass
    assert m["transformer_forward_calls"] == STEPS and m["transformer_blocks_run"] == 2 * STEPS


# -- approximate levers: applied, skipped work measured, output close --------------------------
@pytest.mark.parametrize(
    "cache, skips",
    [
        ({"method": "first_block", "threshold": 0.2}, "blocks"),
        ({"method": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 2}, "blocks"),
        ({"method": "mag", "mag_ratios": [1.0] * STEPS, "threshold": 0.5, "retention_ratio": 0.2}, "blocks"),
        ({"method": "pab", "spatial_attention_timestep_skip_range": [0, 1000]}, "attention"),
        ({"method": "faster", "spatial_attention_timestep_skip_range": [-1, 800]}, "attention"),
    ],
)
def test_cache_skips_measured_work_within_bounds(plain, plain_single_pass, cache, skips):
    single = cache["method"] in ("pab", "faster")  # one attention history: guidance 1.0 only
    plain = plain_single_pass if single else plain
    e = engine(cache=cache, guidance_scale=1.0 if single else 5.0)
    seen = []
    real = e._run_pipeline

    def spy(**kwargs):
        seen.append(bool(e.pipe.transformer._cache_config))  # the cache hook is on during the call
        return real(**kwargs)

    e._run_pipeline = spy
    clip = e.render(request())
    assert seen == [True] and e.pipe.transformer._cache_config is None  # removed after the generation
    e.close()
    m, base = clip.meta, plain[1]
    assert m["cache"] == cache["method"] and m["transformer_forward_calls"] == base["transformer_forward_calls"]
    if skips == "blocks":
        assert m["transformer_blocks_run"] < m["transformer_blocks_total"] == base["transformer_blocks_run"]
        assert not np.array_equal(clip.frames, plain[0])  # skipped blocks are approximated, not free
    else:
        assert m["transformer_attention_run"] < base["transformer_attention_run"]
    assert psnr(clip.frames, plain[0]) > 30.0  # an approximation, not a different video


def test_fp8_storage_keeps_fp8_weights_and_a_close_output(plain):
    e = engine(weights={"storage_dtype": "float8_e4m3fn"})
    clip = e.render(request())
    block = e.pipe.transformer.blocks[0]
    assert block.attn1.to_q.weight.dtype == torch.float8_e4m3fn and block.ffn.net[2].weight.dtype == torch.float8_e4m3fn
    assert e.pipe.transformer.norm_out is not None and e.pipe.transformer.proj_out.weight.dtype == torch.float32  # skipped layers
    e.close()
    assert clip.meta["storage_dtype"] == "float8_e4m3fn"
    assert clip.meta["planned_vram_mib"] < clip.meta["planned_vram_plain_mib"]
    assert not np.array_equal(clip.frames, plain[0]) and psnr(clip.frames, plain[0]) > 30.0


def test_regional_compile_wraps_each_block(tiny):
    e = engine(compile="regional")
    pipe = e.pipe
    assert all(block._compiled_call_impl is not None for block in pipe.transformer.blocks)
    assert e.describe()["compile"] == "regional"
    e.close()


# -- LoRAs -----------------------------------------------------------------------------------
def _q_weights(e):
    return [getattr(e.pipe, n).blocks[0].attn1.to_q.weight.detach().clone() for n in ("transformer", "transformer_2")]


def test_preset_distill_lora_is_fused_into_both_experts_or_one(tiny):
    lora = make_tiny_distill_lora(tiny / "loras" / "a14b-distill.safetensors", model="wan22-i2v-a14b")
    bare = engine("wan22-i2v-a14b")
    w0 = _q_weights(bare)
    bare.close()
    both = engine("wan22-i2v-a14b", loras=[{"path": "loras/a14b-distill.safetensors"}])
    w_both = _q_weights(both)
    assert not any(hasattr(m, "lora_A") for m in both.pipe.transformer.modules())  # fused, no adapter layers left
    assert both.describe()["preset_loras"][0]["into"] == ["transformer", "transformer_2"]
    both.close()
    high = engine("wan22-i2v-a14b", loras=[{"path": str(lora), "expert": "high_noise"}])
    w_high = _q_weights(high)
    high.close()
    assert not torch.equal(w_both[0], w0[0]) and not torch.equal(w_both[1], w0[1])
    assert not torch.equal(w_high[0], w0[0]) and torch.equal(w_high[1], w0[1])


def test_scene_lora_stacks_on_the_preset_lora(tiny):
    make_tiny_distill_lora(tiny / "loras" / "distill.safetensors")
    style = make_tiny_lora(tiny / "loras" / "style.safetensors")
    e = engine(loras=[{"path": "loras/distill.safetensors"}])
    distilled = e.render(request()).frames
    styled = e.render(request([SimpleNamespace(path=str(style), strength=1.0)])).frames
    again = e.render(request()).frames
    e.close()
    bare = render()[0]
    assert not np.array_equal(distilled, bare) and not np.array_equal(styled, distilled)
    assert np.array_equal(again, distilled)  # the scene's adapter is gone, the fused preset LoRA stays


# -- keyframe stage --------------------------------------------------------------------------
def test_keyframe_stage_reports_its_levers(tiny):
    e = DiffusersT2IKeyframe(
        {"model": "models/tiny/t2i", "steps": 4, "guidance_scale": 1.0, "max_sequence_length": 32, "cache": "first_block"},
        preset(),
    )
    e.render(KeyframeRequest(scene_id="k", prompt="a cat", negative_prompt="", seed=1, width=32, height=32))
    d = e.describe()
    e.close()
    assert d["cache"] == "first_block" and d["transformer_forward_calls"] == 4 and d["steps"] == 4
    assert 4 <= d["transformer_blocks_run"] <= d["transformer_blocks_total"] == 8


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, message",
    [
        ({"cache": {"method": "teacache"}}, r"stages\.clip\.cache\.method"),
        (
            {"cache": {"method": "first_block", "interval": 3}},
            r"stages\.clip\.cache: 'interval' is no parameter of cache method 'first_block'",
        ),
        ({"cache": {"method": "mag"}}, r"stages\.clip\.cache: .*mag_ratios"),
        ({"weights": {"storage_dtype": "int4"}}, r"stages\.clip\.weights\.storage_dtype"),
        ({"compile": "max"}, r"stages\.clip\.compile"),
        (
            {"weights": {"storage_dtype": "float8_e4m3fn", "quantization": "int8_weight_only"}},
            r"stages\.clip\.weights: give storage_dtype or quantization, not both",
        ),
        ({"cache": {"method": "pab"}}, r"stages\.clip\.cache: method 'pab' keeps one attention history .* guidance 5 > 1"),
        (
            {"cache": {"method": "faster", "spatial_attention_timestep_skip_range": [-1, 1000]}, "guidance_scale": 1.0},
            r"stages\.clip\.cache\.spatial_attention_timestep_skip_range: \[-1, 1000\] reaches the first steps",
        ),
        ({"attention_backend": "warp"}, r"stages\.clip\.attention_backend: 'warp' is no diffusers attention backend"),
        ({"attention_backend": "sage"}, r"stages\.clip\.attention_backend: .*sageattention"),
        ({"attention_backend": "flash_hub"}, r"stages\.clip\.attention_backend: .*downloads its kernel"),
        ({"loras": [{"path": "distill.pt"}]}, r"stages\.clip\.loras\[0\]\.path: 'distill\.pt' is no \.safetensors file"),
    ],
)
def test_bad_lever_settings_are_refused_by_name(params, message):
    with pytest.raises(InputError, match=message) as err:
        engine(**params)
    assert err.value.file == "workflows/levers.yaml"


def test_torchao_quantization_needs_torchao():
    import importlib.util

    if importlib.util.find_spec("torchao") is not None:
        pytest.skip("torchao is installed here")
    with pytest.raises(InputError, match=r"stages\.clip\.weights\.quantization: int8_weight_only needs torchao"):
        engine(weights={"quantization": "int8_weight_only"})


def test_missing_hf_lora_names_the_download_command(tiny):
    e = engine(loras=[{"path": "hf://lightx2v/Wan2.1-Distill-Loras/wan2.1_i2v_lora_rank64_lightx2v_4step.safetensors"}])
    with pytest.raises(InputError, match=r"hf download lightx2v/Wan2\.1-Distill-Loras wan2\.1_i2v_lora_rank64_lightx2v_4step"):
        e.render(request())
    e.close()


@pytest.mark.parametrize("name", ["wan22-i2v-a14b-lightning", "wan21-flf2v-14b-lightx2v", "tiny-fast"])
def test_distill_presets_pass_validation(name):
    p = load_preset(name)
    clip = p.stage("clip").params
    assert clip["steps"] == 4 and clip["guidance_scale"] == 1.0 and clip["loras"]
    for stage in ("keyframe", "clip", "film"):
        e = build_engine(stage, p.stage(stage), p.model_copy(update={"device": "cpu"}))
        d = e.describe()
        assert d["compile"] == "none" and "cache" in d
    if name == "wan22-i2v-a14b-lightning":
        assert clip["guidance_scale_2"] == 1.0 and [x["expert"] for x in clip["loras"]] == ["high_noise", "low_noise"]
    if name == "tiny-fast":
        assert clip["cache"]["method"] == "first_block" and clip["weights"]["storage_dtype"] == "float8_e4m3fn"


# -- the memory planner knows the levers -----------------------------------------------------
def test_planner_counts_fp8_gguf_bytes_and_cache_activations():
    from wan_pipeline.engines.levers import CACHE_STREAMS, LeverParams, plan_overrides
    from wan_pipeline.models import plan_memory
    from wan_pipeline.models.catalog import catalog_checkpoint
    from wan_pipeline.models.memory import MIB, latent_tokens

    ckpt = catalog_checkpoint("Wan-AI/Wan2.2-I2V-A14B-Diffusers")
    size = dict(width=1280, height=720, frames=81, dtype="bfloat16")
    plain = plan_memory(ckpt, **size)
    levers = LeverParams.model_validate({"weights": {"storage_dtype": "float8_e4m3fn"}, "cache": {"method": "first_block"}})
    fast = plan_memory(ckpt, **size, **plan_overrides(levers, ckpt, 1280, 720, 81, "bfloat16"))
    for expert in ("transformer", "transformer_2"):
        assert fast.weights_mib[expert] == pytest.approx(plain.weights_mib[expert] / 2, abs=0.1)  # fp8: 1 byte, bf16: 2
    assert fast.weights_mib["vae"] == plain.weights_mib["vae"] and fast.weights_mib["text_encoder"] == plain.weights_mib["text_encoder"]
    tokens = latent_tokens(ckpt, 1280, 720, 81)
    assert tokens == 21 * 45 * 80
    extra = CACHE_STREAMS["first_block"] * 2 * tokens * 5120 * 2 / MIB  # streams x guidance passes x L x d x bf16
    assert fast.activation_mib["transformer"] == pytest.approx(plain.activation_mib["transformer"] + extra, abs=0.1)
    assert fast.peak_vram_mib["full_gpu"] < plain.peak_vram_mib["full_gpu"]  # 14 GB of weights saved outweighs the cache
    gguf = plan_memory(ckpt, **size, weight_bytes={"transformer": 0.5625})  # Q4_K: 4.5 bits per weight
    assert gguf.weights_mib["transformer"] == pytest.approx(plain.params["transformer"] * 0.5625 / MIB, abs=0.1)
    assert gguf.weights_mib["transformer_2"] == plain.weights_mib["transformer_2"]


def test_preflight_refuses_a_missing_attention_backend_before_rendering(tiny, tmp_path):
    import yaml

    from tests.conftest import REPO
    from wan_pipeline.preflight import preset_problems

    data = yaml.safe_load((REPO / "workflows" / "tiny-fast.yaml").read_text())
    data["stages"]["clip"]["attention_backend"] = "sage"
    data["stages"]["film"]["cache"] = {"method": "pab"}  # guidance 1.0 there: allowed
    data["stages"]["keyframe"]["cache"] = {"method": "faster"}
    data["stages"]["keyframe"]["guidance_scale"] = 4.0  # two guidance passes: refused
    path = tmp_path / "tiny-fast-sage.yaml"
    path.write_text(yaml.safe_dump(data))
    problems = preset_problems(load_preset(path), stages=("keyframe", "clip", "film"))
    assert any(p.startswith("stages.clip.attention_backend:") and "sageattention" in p for p in problems)
    assert any(p.startswith("stages.keyframe.cache: method 'faster'") for p in problems)
    assert not any(p.startswith("stages.film") for p in problems)


def test_planner_keeps_the_load_dtype_for_host_ram():
    """fp8 storage is applied after the weights are read in the load dtype: the VRAM plan counts
    the experts at one byte per weight, the host RAM plan (and its choice of offloading to disk)
    at two, so a machine that cannot hold the bf16 weights is not told it can."""
    from wan_pipeline.engines.levers import LeverParams, plan_overrides
    from wan_pipeline.models import plan_memory
    from wan_pipeline.models.catalog import catalog_checkpoint

    ckpt = catalog_checkpoint("Wan-AI/Wan2.2-I2V-A14B-Diffusers")
    size = dict(width=1280, height=720, frames=81, dtype="bfloat16", vram_free_mib=80_000, vram_total_mib=80_000)
    plain = plan_memory(ckpt, **size, ram_available_mib=1e6)
    levers = LeverParams.model_validate({"weights": {"storage_dtype": "float8_e4m3fn"}})
    fast = plan_memory(ckpt, **size, ram_available_mib=1e6, **plan_overrides(levers, ckpt, 1280, 720, 81, "bfloat16"))
    assert fast.total_weights_mib < 0.6 * plain.total_weights_mib
    assert fast.host_ram_by_strategy_mib == plain.host_ram_by_strategy_mib
    # RAM for the fp8 weights but not for the bf16 ones: loaded one component at a time, to disk
    ram = (fast.total_weights_mib + 4096) / 0.9
    tight = plan_memory(ckpt, **size, ram_available_mib=ram, **plan_overrides(levers, ckpt, 1280, 720, 81, "bfloat16"))
    assert tight.offload_to_disk
