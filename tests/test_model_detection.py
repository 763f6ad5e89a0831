"""Checkpoint detection from configs: every published Wan config in shared/reference/wan-configs,
miniature checkpoints, the HF-cache lookup, and the rejection of broken checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from wan_pipeline.errors import InputError
from wan_pipeline.models import check_loadable, identify, inspect_report, read_checkpoint, resolve_model
from wan_pipeline.models.catalog import KNOWN, catalog_checkpoint
from wan_pipeline.models.memory import component_parameters


def shared_dir() -> Path:
    env = os.environ.get("WAN_PIPELINE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


CONFIGS = shared_dir() / "reference" / "wan-configs"
needs_configs = pytest.mark.skipif(not CONFIGS.is_dir(), reason=f"published Wan configs not found at {CONFIGS} (set WAN_PIPELINE_SHARED)")

# The table of shared/reference/wan-configs/README.md ("Variants"): pipeline class, experts,
# boundary_ratio, VAE z_dim, exact transformer parameter count (per expert), capabilities we derive.
VAE21, VAE22 = 126_892_531, 704_688_668
EXPECTED = {
    "Wan2.1-T2V-1.3B-Diffusers": ("Wan2.1-T2V-1.3B", "WanPipeline", 1, None, 16, 1_418_996_800, VAE21, {"T2V", "T2I"}),
    "Wan2.1-T2V-14B-Diffusers": ("Wan2.1-T2V-14B", "WanPipeline", 1, None, 16, 14_288_491_584, VAE21, {"T2V", "T2I"}),
    "Wan2.1-I2V-14B-480P-Diffusers": ("Wan2.1-I2V-14B-480P", "WanImageToVideoPipeline", 1, None, 16, 16_394_878_784, VAE21, {"I2V"}),
    "Wan2.1-I2V-14B-720P-Diffusers": ("Wan2.1-I2V-14B-720P", "WanImageToVideoPipeline", 1, None, 16, 16_394_878_784, VAE21, {"I2V"}),
    "Wan2.1-FLF2V-14B-720P-diffusers": (
        "Wan2.1-FLF2V-14B-720P",
        "WanImageToVideoPipeline",
        1,
        None,
        16,
        16_395_536_704,
        VAE21,
        {"I2V", "FLF2V"},
    ),
    "Wan2.1-VACE-1.3B-diffusers": ("Wan2.1-VACE-1.3B", "WanVACEPipeline", 1, None, 16, 2_153_972_032, VAE21, {"VACE"}),
    "Wan2.1-VACE-14B-diffusers": ("Wan2.1-VACE-14B", "WanVACEPipeline", 1, None, 16, 17_337_592_896, VAE21, {"VACE"}),
    "Wan2.2-T2V-A14B-Diffusers": ("Wan2.2-T2V-A14B", "WanPipeline", 2, 0.875, 16, 14_288_491_584, VAE21, {"T2V", "T2I"}),
    "Wan2.2-I2V-A14B-Diffusers": ("Wan2.2-I2V-A14B", "WanImageToVideoPipeline", 2, 0.9, 16, 14_288_901_184, VAE21, {"I2V", "FLF2V"}),
    "Wan2.2-TI2V-5B-Diffusers": ("Wan2.2-TI2V-5B", "WanPipeline", 1, None, 48, 4_999_787_712, VAE22, {"T2V", "I2V", "TI2V", "T2I"}),
    "Wan2.2-Animate-14B-Diffusers": ("Wan2.2-Animate-14B", "WanAnimatePipeline", 1, None, 16, 17_274_816_884, VAE21, set()),
    "Wan2.2-VACE-Fun-A14B-Diffusers": ("Wan2.2-VACE-Fun-A14B", "WanVACEPipeline", 2, 0.875, 16, 17_337_592_896, VAE21, {"VACE"}),
}


@needs_configs
def test_every_reference_folder_is_in_the_table():
    assert sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) == sorted(EXPECTED)


@needs_configs
@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_reference_variant_identified(folder):
    variant, pipeline, experts, boundary, z_dim, t_params, vae_params, caps = EXPECTED[folder]
    ckpt = read_checkpoint(CONFIGS / folder)
    info = identify(ckpt)
    assert info.variant == variant
    assert info.pipeline_class == pipeline
    assert info.experts == experts
    assert info.boundary_ratio == boundary
    assert info.vae_z_dim == z_dim
    assert set(info.capabilities) == caps
    assert info.miniature is False
    params = {n: s.total for n, s in component_parameters(ckpt).items()}
    assert params["transformer"] == t_params
    assert params.get("transformer_2", t_params) == t_params
    assert ("transformer_2" in params) == (experts == 2)
    assert params["vae"] == vae_params
    # never the weights: the reference folders hold none, so the weights are reported missing
    assert "transformer (weights)" in ckpt.missing_components()


@needs_configs
def test_frame_rate_size_multiple_and_frame_counts():
    ti2v = identify(read_checkpoint(CONFIGS / "Wan2.2-TI2V-5B-Diffusers"))
    assert (ti2v.fps, ti2v.max_frames, ti2v.size_multiple) == (24, 121, 32)  # VAE 16 × patch 2
    assert (1280, 704) in ti2v.native_sizes and ti2v.expand_timesteps
    flf = identify(read_checkpoint(CONFIGS / "Wan2.1-FLF2V-14B-720P-diffusers"))
    assert (flf.fps, flf.max_frames, flf.size_multiple, flf.flow_shift) == (16, 81, 16, 16.0)
    assert [flf.valid_frames(n) for n in (1, 2, 3, 40, 81, 200)] == [1, 1, 5, 41, 81, 81]
    a14 = identify(read_checkpoint(CONFIGS / "Wan2.2-I2V-A14B-Diffusers"))
    assert a14.fps == 16 and a14.pipeline_classes["I2V"] == "WanImageToVideoPipeline"


def _copy(name: str, tmp_path: Path, new_name: str | None = None) -> Path:
    dst = tmp_path / (new_name or name)
    shutil.copytree(CONFIGS / name, dst)
    return dst


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for k, v in changes.items():
        if v is ... and k in data:
            del data[k]
        elif v is not ...:
            data[k] = v
    path.write_text(json.dumps(data, indent=2))


@needs_configs
def test_detection_ignores_the_folder_name(tmp_path):
    folder = _copy("Wan2.2-TI2V-5B-Diffusers", tmp_path, "Wan2.1-T2V-1.3B-Diffusers")
    assert identify(read_checkpoint(folder)).variant == "Wan2.2-TI2V-5B"
    folder = _copy("Wan2.1-T2V-14B-Diffusers", tmp_path, "Wan2.2-T2V-A14B-Diffusers")
    assert identify(read_checkpoint(folder)).variant == "Wan2.1-T2V-14B"


TINY = {"num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32, "num_layers": 2, "text_dim": 32}


@needs_configs
@pytest.mark.parametrize(
    "folder, family, experts",
    [
        ("Wan2.1-FLF2V-14B-720P-diffusers", "Wan2.1-FLF2V", 1),
        ("Wan2.1-I2V-14B-480P-Diffusers", "Wan2.1-I2V", 1),
        ("Wan2.2-TI2V-5B-Diffusers", "Wan2.2-TI2V", 1),
        ("Wan2.2-I2V-A14B-Diffusers", "Wan2.2-I2V", 2),
        ("Wan2.1-VACE-1.3B-diffusers", "Wan2.1-VACE", 1),
        ("Wan2.1-T2V-1.3B-Diffusers", "Wan2.1-T2V", 1),
    ],
)
def test_miniature_of_each_architecture(tmp_path, folder, family, experts):
    dst = _copy(folder, tmp_path, "tiny")
    for name in ("transformer", "transformer_2"):
        cfg = dst / name / "config.json"
        if cfg.is_file():
            extra = {"image_dim": 4, "added_kv_proj_dim": 24} if json.loads(cfg.read_text()).get("image_dim") else {}
            if json.loads(cfg.read_text()).get("vace_layers"):
                extra["vace_layers"] = [0]
            if json.loads(cfg.read_text()).get("pos_embed_seq_len"):
                extra["pos_embed_seq_len"] = 2 * (4 * 4 + 1)
            _edit(cfg, **TINY, **extra)
    _edit(dst / "vae" / "config.json", base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    info = identify(read_checkpoint(dst))
    assert info.family == family and info.miniature and info.size == "miniature"
    assert info.variant == f"{family}-miniature"
    assert info.experts == experts
    params = {n: s.total for n, s in component_parameters(read_checkpoint(dst)).items()}
    assert params["transformer"] < 1_000_000


@needs_configs
def test_saved_tiny_checkpoint_with_safetensors_is_loadable(tmp_path):
    """A real save_pretrained folder (safetensors weights) passes check_loadable; configs-only does not."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    dst = _copy("Wan2.1-T2V-1.3B-Diffusers", tmp_path, "saved")
    torch.manual_seed(0)
    WanTransformer3DModel(in_channels=16, out_channels=16, **TINY, rope_max_seq_len=32).save_pretrained(dst / "transformer")
    AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1).save_pretrained(dst / "vae")
    (dst / "tokenizer").mkdir()
    (dst / "tokenizer" / "tokenizer_config.json").write_text("{}")
    (dst / "text_encoder").mkdir()
    (dst / "text_encoder" / "config.json").write_text(
        json.dumps({"model_type": "umt5", "d_model": 8, "d_ff": 16, "d_kv": 4, "num_heads": 2, "num_layers": 1, "vocab_size": 32})
    )
    with pytest.raises(InputError) as err:
        check_loadable(read_checkpoint(dst))
    assert "'text_encoder'" in str(err.value) and "safetensors" in str(err.value)
    (dst / "text_encoder" / "model.safetensors").write_bytes(b"")  # presence is what is checked before loading
    ckpt = read_checkpoint(dst)
    check_loadable(ckpt)
    assert identify(ckpt).variant == "Wan2.1-T2V-miniature"
    assert ckpt.components["transformer"].weights == ["transformer/diffusion_pytorch_model.safetensors"]


# ---- broken checkpoints: rejected before loading, naming the component and the fix ----


@needs_configs
def test_missing_vae_folder_rejected(tmp_path):
    dst = _copy("Wan2.2-TI2V-5B-Diffusers", tmp_path)
    shutil.rmtree(dst / "vae")
    with pytest.raises(InputError) as err:
        read_checkpoint(dst)
    assert "'vae'" in str(err.value) and "folder vae/ is missing" in str(err.value)


@needs_configs
def test_vae_not_in_model_index_rejected(tmp_path):
    dst = _copy("Wan2.1-T2V-1.3B-Diffusers", tmp_path)
    _edit(dst / "model_index.json", vae=...)
    with pytest.raises(InputError) as err:
        read_checkpoint(dst)
    assert "'vae'" in str(err.value) and "not listed in model_index.json" in str(err.value)


@needs_configs
def test_missing_transformer_config_rejected(tmp_path):
    dst = _copy("Wan2.2-T2V-A14B-Diffusers", tmp_path)
    (dst / "transformer_2" / "config.json").unlink()
    with pytest.raises(InputError) as err:
        read_checkpoint(dst)
    assert "'transformer_2'" in str(err.value) and "config.json" in str(err.value)


@needs_configs
def test_z_dim_mismatch_rejected(tmp_path):
    dst = _copy("Wan2.1-I2V-14B-480P-Diffusers", tmp_path)
    shutil.rmtree(dst / "vae")
    shutil.copytree(CONFIGS / "Wan2.2-TI2V-5B-Diffusers" / "vae", dst / "vae")  # 48-channel VAE under a 16-channel model
    with pytest.raises(InputError) as err:
        read_checkpoint(dst)
    msg = str(err.value)
    assert "'transformer'" in msg and "z_dim 48" in msg and "out_channels 16" in msg and "in_channels 36" in msg


@needs_configs
def test_i2v_channel_concat_is_accepted_but_wrong_in_channels_is_not(tmp_path):
    dst = _copy("Wan2.2-I2V-A14B-Diffusers", tmp_path)
    assert identify(read_checkpoint(dst)).variant == "Wan2.2-I2V-A14B"  # 36 = 2 × 16 + 4
    _edit(dst / "transformer_2" / "config.json", in_channels=32)
    with pytest.raises(InputError) as err:
        read_checkpoint(dst)
    assert "'transformer_2'" in str(err.value) and "in_channels 32" in str(err.value)


@needs_configs
@pytest.mark.parametrize(
    "name", ["transformer/diffusion_pytorch_model.bin", "vae/model.pt", "transformer/diffusion_pytorch_model.bin.index.json"]
)
def test_pickle_weights_rejected(tmp_path, name):
    dst = _copy("Wan2.1-T2V-1.3B-Diffusers", tmp_path)
    (dst / name).write_bytes(b"\x80\x04not really")
    with pytest.raises(InputError) as err:
        read_checkpoint(dst)
    component = name.split("/")[0]
    assert f"'{component}'" in str(err.value) and "pickle" in str(err.value) and ".safetensors" in str(err.value)


@needs_configs
def test_custom_code_component_rejected(tmp_path):
    dst = _copy("Wan2.1-T2V-1.3B-Diffusers", tmp_path)
    _edit(dst / "model_index.json", transformer=["my_pipeline_code", "MyTransformer"])
    with pytest.raises(InputError) as err:
        read_checkpoint(dst)
    assert "'transformer'" in str(err.value) and "trust_remote_code" in str(err.value)


def test_folder_without_model_index_rejected(tmp_path):
    (tmp_path / "transformer").mkdir()
    with pytest.raises(InputError, match="no model_index.json"):
        read_checkpoint(tmp_path)


# ---- Hugging Face cache lookup (offline) ----


def _fake_cache(cache: Path, repo: str, source: Path) -> Path:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(source, snapshot)
    return snapshot


@needs_configs
def test_repo_id_resolved_through_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = _fake_cache(tmp_path, "Wan-AI/Wan2.2-TI2V-5B-Diffusers", CONFIGS / "Wan2.2-TI2V-5B-Diffusers")
    assert resolve_model("Wan-AI/Wan2.2-TI2V-5B-Diffusers") == snapshot
    assert identify(read_checkpoint("Wan-AI/Wan2.2-TI2V-5B-Diffusers")).variant == "Wan2.2-TI2V-5B"
    with pytest.raises(InputError) as err:
        resolve_model("Wan-AI/Wan2.1-T2V-14B-Diffusers")
    assert "hf download Wan-AI/Wan2.1-T2V-14B-Diffusers" in str(err.value)
    report = inspect_report("Wan-AI/Wan2.2-TI2V-5B-Diffusers")
    # the cached snapshot holds the configs only: found, but not downloaded (no weight files)
    assert report["found"] and not report["downloaded"] and report["weight_files"]["transformer"] == []
    assert report["download"] == "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers"


def test_missing_local_folder_rejected(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        resolve_model(str(tmp_path / "nope" / "deeper"))


# ---- catalogue and inspect report ----


@needs_configs
@pytest.mark.parametrize("repo", sorted(KNOWN))
def test_catalogue_matches_published_configs(repo):
    published = read_checkpoint(CONFIGS / repo.split("/")[1])
    described = catalog_checkpoint(repo)
    assert identify(described).model_dump() == identify(published).model_dump()
    assert {n: s.total for n, s in component_parameters(described).items()} == {
        n: s.total for n, s in component_parameters(published).items()
    }


def test_inspect_uncached_published_repo(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    report = inspect_report("Wan-AI/Wan2.2-I2V-A14B-Diffusers")
    json.dumps(report)
    assert report["found"] is False and report["downloaded"] is False and report["variant"] == "Wan2.2-I2V-A14B"
    assert report["download"] == "hf download Wan-AI/Wan2.2-I2V-A14B-Diffusers"
    assert report["parameters"]["transformer"] == report["parameters"]["transformer_2"] == 14_288_901_184
    with pytest.raises(InputError, match="hf download someone/unknown-model"):
        inspect_report("someone/unknown-model")


@needs_configs
def test_inspect_report_of_a_folder_is_json():
    report = inspect_report(str(CONFIGS / "Wan2.1-FLF2V-14B-720P-diffusers"))
    text = json.dumps(report)
    assert json.loads(text)["variant"] == "Wan2.1-FLF2V-14B-720P"
    assert report["capabilities"] == ["I2V", "FLF2V"]
    assert report["parameters"]["transformer"] == 16_395_536_704
    assert report["parameter_sources"]["text_encoder"] == "default"  # no text_encoder/config.json in the folder
    assert "text_encoder (folder)" in report["missing"]
