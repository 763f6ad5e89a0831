"""Memory planning: parameter counts against a hand-derived formula, weight/activation figures,
strategy choice for 8 / 24 / 80 GiB GPUs, forced strategies, and the doctor report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from wan_pipeline.errors import InputError
from wan_pipeline.models import (
    STRATEGIES,
    doctor_report,
    plan_for_model,
    plan_memory,
    read_checkpoint,
    render_doctor_text,
    stronger_strategy,
)
from wan_pipeline.models.catalog import catalog_checkpoint
from wan_pipeline.models.memory import MIB, OVERHEAD_MIB, VRAM_MARGIN, count_parameters, latent_tokens
from wan_pipeline.preset import Preset


def shared_dir() -> Path:
    env = os.environ.get("WAN_PIPELINE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


CONFIGS = shared_dir() / "reference" / "wan-configs"
needs_configs = pytest.mark.skipif(not CONFIGS.is_dir(), reason=f"published Wan configs not found at {CONFIGS}")
GIB = 1024


def wan_transformer_params(
    d, f, layers, c_in, c_out, text_dim, freq_dim=256, image_dim=None, pos_embed_seq_len=None, added_kv=None, patch=(1, 2, 2)
):
    """WanTransformer3DModel parameters written out by hand, module by module (diffusers
    transformer_wan.py): d = heads × head_dim, f = ffn_dim."""
    pp = patch[0] * patch[1] * patch[2]
    n = c_in * d * pp + d  # patch_embedding Conv3d
    n += freq_dim * d + d + d * d + d  # time embedder: 2 linears
    n += 6 * d * d + 6 * d  # time_proj → 6 modulation vectors
    n += text_dim * d + d + d * d + d  # text embedder: 2 linears
    if image_dim:  # image embedder: norm, 2 linears, norm
        n += 2 * image_dim + image_dim * image_dim + image_dim + image_dim * d + d + 2 * d
        n += (pos_embed_seq_len or 0) * image_dim  # learned position embedding (FLF2V)
    block = 2 * (4 * d * d + 4 * d + 2 * d)  # self + cross attention: q, k, v, out + q/k RMS norms
    block += 2 * d  # affine norm before cross attention
    block += d * f + f + f * d + d  # feed-forward
    block += 6 * d  # scale_shift_table
    if added_kv:  # CLIP image keys/values in cross attention + norm
        block += 2 * (added_kv * d + d) + d
    n += layers * block
    n += d * c_out * pp + c_out * pp + 2 * d  # proj_out + output scale_shift_table
    return n


def test_small_transformer_count_matches_hand_formula():
    cfg = {
        "_class_name": "WanTransformer3DModel",
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "ffn_dim": 32,
        "num_layers": 2,
        "text_dim": 32,
        "in_channels": 36,
        "out_channels": 16,
        "image_dim": 4,
        "added_kv_proj_dim": 24,
        "pos_embed_seq_len": 34,
        "rope_max_seq_len": 32,
    }
    d = 24
    expected = wan_transformer_params(d, 32, 2, 36, 16, 32, image_dim=4, pos_embed_seq_len=34, added_kv=24)
    # d=24: patch 3480 + time 6768 + proj 3600 + text 1392 + image 332 + 2 blocks × 7904 + out 1648 = 33028
    assert count_parameters("diffusers", "WanTransformer3DModel", cfg).total == expected == 33_028


@needs_configs
@pytest.mark.parametrize(
    "folder, args",
    [
        ("Wan2.1-T2V-1.3B-Diffusers", (1536, 8960, 30, 16, 16, 4096)),
        ("Wan2.2-TI2V-5B-Diffusers", (3072, 14336, 30, 48, 48, 4096)),
        ("Wan2.1-FLF2V-14B-720P-diffusers", (5120, 13824, 40, 36, 16, 4096, 256, 1280, 514, 5120)),
    ],
)
def test_published_counts_match_hand_formula(folder, args):
    plan = plan_memory(read_checkpoint(CONFIGS / folder), width=832, height=480, frames=81)
    assert plan.params["transformer"] == wan_transformer_params(*args)


@needs_configs
def test_ti2v_plan_figures_by_hand():
    ckpt = read_checkpoint(CONFIGS / "Wan2.2-TI2V-5B-Diffusers")
    plan = plan_memory(ckpt, width=1280, height=704, frames=121, dtype="bfloat16", vram_total_mib=80 * GIB, vram_free_mib=80 * GIB)
    # latent tokens: (121-1)/4+1 = 31 frames × 704/16/2 = 22 × 1280/16/2 = 40
    assert plan.latent_tokens == latent_tokens(ckpt, 1280, 704, 121) == 31 * 22 * 40
    assert plan.weights_mib["transformer"] == round(4_999_787_712 * 2 / MIB, 1)  # bf16
    assert plan.weights_mib["vae"] == round(704_688_668 * 4 / MIB, 1)  # VAE kept in float32
    assert plan.params["text_encoder"] == 5_680_910_336  # UMT5-XXL encoder default
    assert plan.param_sources["text_encoder"] == "default"
    assert plan.activation_mib["transformer"] == round(27280 * (6 * 3072 + 14336) * 2 / MIB, 1)
    full = sum(plan.weights_mib.values()) + max(plan.activation_mib[k] for k in ("transformer", "vae", "text_encoder"))
    assert plan.peak_vram_mib["full_gpu"] == pytest.approx(full + OVERHEAD_MIB, abs=0.2)
    assert plan.chosen_strategy == "full_gpu" and not plan.vae_tiling and plan.fits


def _choice(ckpt, free_gib, **kw):
    return plan_memory(ckpt, vram_total_mib=free_gib * GIB, vram_free_mib=free_gib * GIB, **kw)


def _check_weakest_fitting(plan):
    """The chosen (strategy, tiling) fits, and every weaker candidate does not."""
    budget = plan.vram_free_mib * VRAM_MARGIN
    order = [
        ("full_gpu", False),
        ("full_gpu", True),
        ("model_cpu_offload", False),
        ("model_cpu_offload", True),
        ("group_offload", True),
        ("sequential_cpu_offload", True),
    ]
    chosen = order.index((plan.chosen_strategy, plan.vae_tiling))
    for strat, tiled in order[:chosen]:
        assert (plan.peak_vram_tiled_mib if tiled else plan.peak_vram_mib)[strat] > budget
    assert plan.estimated_peak_mib <= budget


@needs_configs
@pytest.mark.parametrize(
    "folder, size, expected",
    [
        (
            "Wan2.2-TI2V-5B-Diffusers",
            (1280, 704, 121),
            {80: ("full_gpu", False), 24: ("model_cpu_offload", False), 8: ("group_offload", True)},
        ),
        (
            "Wan2.2-I2V-A14B-Diffusers",
            (1280, 720, 81),
            {80: ("full_gpu", True), 24: ("group_offload", True), 8: ("sequential_cpu_offload", True)},
        ),
    ],
)
def test_strategy_for_8_24_80_gib(folder, size, expected):
    ckpt = read_checkpoint(CONFIGS / folder)
    w, h, f = size
    for gib, (strategy, tiling) in expected.items():
        plan = _choice(ckpt, gib, width=w, height=h, frames=f)
        assert (plan.chosen_strategy, plan.vae_tiling) == (strategy, tiling), (gib, plan.reason)
        assert plan.vae_slicing == tiling
        _check_weakest_fitting(plan)
        # stronger strategies never need more memory
        tiled = [plan.peak_vram_tiled_mib[s] for s in STRATEGIES]
        assert tiled == sorted(tiled, reverse=True)
    # the two 14B experts are both resident only with full_gpu; offloading keeps one at a time
    plan = _choice(ckpt, 80, width=w, height=h, frames=f)
    assert plan.peak_vram_mib["full_gpu"] - plan.peak_vram_mib["model_cpu_offload"] >= plan.weights_mib["transformer"] - 1


def test_strategy_from_catalogue_without_any_files():
    plan = _choice(catalog_checkpoint("Wan-AI/Wan2.2-TI2V-5B-Diffusers"), 24, width=1280, height=704, frames=121)
    assert plan.chosen_strategy == "model_cpu_offload"


@needs_configs
def test_forced_strategy_and_no_gpu():
    ckpt = read_checkpoint(CONFIGS / "Wan2.1-T2V-1.3B-Diffusers")
    forced = _choice(ckpt, 80, width=832, height=480, frames=81, strategy="sequential_cpu_offload")
    assert forced.chosen_strategy == "sequential_cpu_offload" and "forced" in forced.reason and not forced.vae_tiling
    tight = _choice(ckpt, 4, width=832, height=480, frames=81, strategy="model_cpu_offload")
    assert tight.vae_tiling and tight.fits is False and "out-of-memory" in tight.reason
    cpu = plan_memory(ckpt, width=832, height=480, frames=81, dtype="float32")
    assert cpu.chosen_strategy == "full_gpu" and cpu.fits is None and "no CUDA device" in cpu.reason
    assert cpu.weights_mib["transformer"] == round(1_418_996_800 * 4 / MIB, 1)
    with pytest.raises(InputError, match="memory_strategy"):
        plan_memory(ckpt, width=832, height=480, frames=81, strategy="all_on_gpu")


def test_stronger_strategy_chain():
    chain = ["full_gpu"]
    while (nxt := stronger_strategy(chain[-1])) is not None:
        chain.append(nxt)
    assert chain == list(STRATEGIES) == ["full_gpu", "model_cpu_offload", "group_offload", "sequential_cpu_offload"]
    with pytest.raises(ValueError):
        stronger_strategy("cpu")


def _preset(models: dict, device="auto") -> Preset:
    stages = {
        "keyframe": {"engine": "image_or_procedural"},
        "clip": {"engine": "camera_motion"},
        "interpolated": {"engine": "optical_flow"},
        "upscaled": {"engine": "lanczos"},
        "film": {"engine": "concat"},
    }
    for stage, section in models.items():
        stages[stage] = section
    return Preset.model_validate({"name": "t", "width": 1280, "height": 704, "fps": 24, "device": device, "stages": stages})


FAKE_MACHINE = {
    "cpu": {"model": "test cpu", "logical_cores": 8, "physical_cores": 4},
    "ram": {"total_mib": 65536, "available_mib": 60000},
    "gpus": [{"index": 0, "name": "Test GPU 24G", "total_mib": 24 * GIB, "free_mib": 24 * GIB, "used_mib": 0}],
    "nvidia_driver": "1.0",
    "torch": "x",
    "torch_cuda": "12",
    "cuda_available": True,
    "diffusers": "x",
    "hf_cache": "/nowhere",
}


@needs_configs
def test_doctor_report_on_a_24_gib_machine(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    preset = _preset(
        {
            "clip": {
                "engine": "wan_i2v",
                "model": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                "dtype": "bfloat16",
                "memory_strategy": "auto",
                "steps": 30,
                "some_future_key": 1,
            },
            "film": {"engine": "wan_vace", "model": str(CONFIGS / "Wan2.1-VACE-1.3B-diffusers"), "memory_strategy": "group_offload"},
            "interpolated": {"engine": "rife", "model": str(tmp_path / "flownet.safetensors")},
        }
    )
    report = doctor_report(preset, machine=FAKE_MACHINE)
    json.dumps(report)
    clip, interp, film = report["models"]
    assert clip["variant"] == "Wan2.2-TI2V-5B" and clip["downloaded"] is False
    assert clip["chosen_strategy"] == "model_cpu_offload" and clip["frames"] == 121
    assert clip["parameters_by_component"]["transformer"] == 4_999_787_712
    assert any("hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in m for m in clip["missing"])
    assert film["variant"] == "Wan2.1-VACE-1.3B" and film["chosen_strategy"] == "group_offload"
    assert "transformer (weights)" in film["missing"]
    assert interp["kind"] == "weights file" and interp["missing"]
    assert report["ready"] is False and report["gpu"]["name"] == "Test GPU 24G"
    text = render_doctor_text(report)
    assert "Test GPU 24G" in text and "model_cpu_offload" in text and "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in text


def test_doctor_without_gpu_and_unknown_model(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    machine = {**FAKE_MACHINE, "gpus": [], "cuda_available": False}
    report = doctor_report(_preset({"clip": {"engine": "wan_i2v", "model": "nobody/missing-model"}}), machine=machine)
    (clip,) = report["models"]
    assert "hf download nobody/missing-model" in clip["problems"][0]
    assert report["gpu"] is None and not report["ready"]
    real = doctor_report(_preset({}))  # measures this machine: must not fail with or without a GPU
    assert real["models"] == [] and "ram" in real["machine"] and isinstance(real["machine"]["gpus"], list)
    assert "no stage of this preset names a model" in render_doctor_text(real)


@needs_configs
def test_plan_for_model_on_cpu_device():
    info, plan = plan_for_model(
        str(CONFIGS / "Wan2.2-TI2V-5B-Diffusers"), width=1280, height=704, frames=121, dtype="float32", device="cpu"
    )
    assert info.variant == "Wan2.2-TI2V-5B" and plan.variant == info.variant
    assert plan.vram_free_mib is None and plan.chosen_strategy == "full_gpu"
    assert plan.weights_mib["transformer"] == round(4_999_787_712 * 4 / MIB, 1)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
def test_gpu_free_memory_is_measured():
    from wan_pipeline.models import gpu_memory_mib, machine_info

    total, free = gpu_memory_mib("cuda:0")
    assert total is not None and 0 < free <= total
    gpus = machine_info()["gpus"]
    assert gpus and gpus[0]["total_mib"] == pytest.approx(total, rel=0.01)


# ---- host RAM ----


def test_host_ram_picks_disk_offload_or_refuses_with_the_numbers():
    """I2V-A14B keeps ~66 GiB of weights in host RAM under any in-memory strategy: with a 24 GiB
    GPU and 128 GiB RAM group offload in RAM is fine, with 64 GiB the groups go to disk (host RAM
    about one expert), with 16 GiB nothing fits and the plan says so with the numbers."""
    from wan_pipeline.models.memory import DISK_OFFLOAD, HOST_OVERHEAD_MIB, RAM_MARGIN

    ckpt = catalog_checkpoint("Wan-AI/Wan2.2-I2V-A14B-Diffusers")
    size = dict(width=1280, height=720, frames=81)
    roomy = _choice(ckpt, 24, ram_available_mib=128 * GIB, **size)
    assert roomy.chosen_strategy == "group_offload" and not roomy.offload_to_disk and roomy.fits and roomy.fits_ram
    assert roomy.host_ram_mib == pytest.approx(roomy.total_weights_mib + HOST_OVERHEAD_MIB, abs=0.2)
    assert roomy.total_weights_mib > 64 * GIB * RAM_MARGIN  # so a 64 GiB desktop cannot hold it
    desktop = _choice(ckpt, 24, ram_available_mib=64 * GIB, **size)
    assert desktop.chosen_strategy == "group_offload" and desktop.offload_to_disk and desktop.fits_ram and desktop.fits
    largest = max(desktop.weights_mib.values())
    assert desktop.host_ram_mib == desktop.host_ram_by_strategy_mib[DISK_OFFLOAD] == pytest.approx(largest + HOST_OVERHEAD_MIB, abs=0.2)
    assert desktop.host_ram_mib < 64 * GIB * RAM_MARGIN and "offload to disk" in desktop.reason
    small = _choice(ckpt, 24, ram_available_mib=16 * GIB, **size)
    assert small.fits is False and small.fits_ram is False
    assert f"{16 * GIB * RAM_MARGIN:.0f} MiB usable" in small.reason and "group offload to disk needs" in small.reason
    # a forced in-memory strategy is refused; a forced group offload goes to disk
    forced = _choice(ckpt, 24, ram_available_mib=64 * GIB, strategy="model_cpu_offload", **size)
    assert forced.fits_ram is False and forced.fits is False and "kept in RAM by offloading" in forced.reason
    forced_group = _choice(ckpt, 24, ram_available_mib=64 * GIB, strategy="group_offload", **size)
    assert forced_group.offload_to_disk and forced_group.fits_ram
    # unchecked without a RAM figure (as before); without a GPU the activations count too
    assert _choice(ckpt, 24, **size).fits_ram is None
    cpu = plan_memory(ckpt, ram_available_mib=64 * GIB, dtype="float32", **size)
    assert cpu.fits_ram is False and cpu.host_ram_mib > cpu.total_weights_mib + HOST_OVERHEAD_MIB


def test_doctor_answers_for_a_machine_you_do_not_have(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as hf_constants

    from wan_pipeline.cli import main

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    main(["doctor", "wan22-i2v-a14b", "--vram-gib", "24", "--ram-gib", "64", "--json"])  # exit code: not ready (no weights)
    report = json.loads(capsys.readouterr().out)
    assert report["gpu"]["total_mib"] == 24 * GIB and report["machine"]["ram"]["available_mib"] == 64 * GIB
    clip = next(m for m in report["models"] if m["stage"] == "clip")
    assert clip["chosen_strategy"] == "group_offload" and clip["offload_to_disk"] and clip["fits_ram"]
    main(["doctor", "wan22-i2v-a14b", "--vram-gib", "24", "--ram-gib", "16"])
    text = capsys.readouterr().out
    assert "host RAM: ~" in text and "usable" in text and "clip: host RAM" in text


def test_doctor_plans_the_flf2v_presets_vace_extension_model(tmp_path, monkeypatch, capsys):
    """The clip stage's ``extension_model`` (VACE-14B continuing long FLF2V scenes, loaded after the
    FLF2V model is released) is planned like a stage's model, and a missing one is named."""
    import huggingface_hub.constants as hf_constants

    from wan_pipeline.cli import main

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    main(["doctor", "wan21-flf2v-14b", "--vram-gib", "24", "--ram-gib", "64", "--json"])
    report = json.loads(capsys.readouterr().out)
    clip, ext = (m for m in report["models"] if m["stage"] == "clip")
    assert clip["variant"] == "Wan2.1-FLF2V-14B-720P" and "label" not in clip
    assert ext["label"] == "clip.extension_model" and ext["model"] == "Wan-AI/Wan2.1-VACE-14B-diffusers"
    assert ext["variant"] == "Wan2.1-VACE-14B" and ext["chosen_strategy"] and ext["fits_ram"] is not False
    assert ext["host_ram_mib"] > 30 * GIB  # 14B bf16 weights kept in host RAM by the offload strategies
    assert any(x.startswith("clip.extension_model: ") and "hf download Wan-AI/Wan2.1-VACE-14B-diffusers" in x for x in report["lacks"])
    main(["doctor", "wan21-flf2v-14b", "--vram-gib", "24", "--ram-gib", "64"])
    assert "  clip.extension_model: Wan-AI/Wan2.1-VACE-14B-diffusers — Wan2.1-VACE-14B" in capsys.readouterr().out
