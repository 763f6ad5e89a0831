"""The miniature checkpoints: real diffusers layouts, small, deterministic, loadable offline."""

import hashlib
import json
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from wan_pipeline.models.tiny import TINY_MODELS, make_tiny_lora, make_tiny_models

REFERENCE = Path("/work/shared/reference/wan-configs")
if not REFERENCE.is_dir():
    REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "wan-configs"
# the published checkpoint each miniature copies
LAYOUT = {
    "wan21-i2v": "Wan2.1-FLF2V-14B-720P-diffusers",
    "wan22-ti2v": "Wan2.2-TI2V-5B-Diffusers",
    "wan22-i2v-a14b": "Wan2.2-I2V-A14B-Diffusers",
    "wan21-vace": "Wan2.1-VACE-1.3B-diffusers",
    "t2i": "Wan2.1-T2V-1.3B-Diffusers",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("tiny"))


def _config(folder: Path, component: str) -> dict:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((folder / component / name).read_text())


def test_every_model_is_written_small_and_safetensors_only(tiny):
    assert sorted(tiny) == sorted(TINY_MODELS)
    for name, folder in tiny.items():
        files = [f for f in folder.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        assert 50_000 < size < 1_500_000, (name, size)
        assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt")], name
        assert any(f.suffix == ".safetensors" for f in files)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_layout_matches_the_published_checkpoint(tiny, name):
    ref_dir = REFERENCE / LAYOUT[name]
    if not ref_dir.is_dir():
        pytest.skip("reference configs not present")
    index = json.loads((tiny[name] / "model_index.json").read_text())
    ref_index = json.loads((ref_dir / "model_index.json").read_text())
    assert index["_class_name"] == ref_index["_class_name"]
    for comp in ("transformer", "transformer_2", "vae", "scheduler", "image_encoder", "text_encoder"):
        assert (index.get(comp) or [None])[0] == (ref_index.get(comp) or [None])[0] or comp == "text_encoder", comp
    for comp in ("transformer", "vae", "scheduler"):
        mine, ref = _config(tiny[name], comp), _config(ref_dir, comp)
        assert mine["_class_name"] == ref["_class_name"]
        assert set(ref) - set(mine) <= {"clip_output"}, (comp, set(ref) - set(mine))
    t, v = _config(tiny[name], "transformer"), _config(tiny[name], "vae")
    rt, rv = _config(ref_dir, "transformer"), _config(ref_dir, "vae")
    # the keys detection relies on carry the published values' meaning
    assert v["z_dim"] == rv["z_dim"] and t["in_channels"] == rt["in_channels"]
    for key in ("image_dim", "pos_embed_seq_len"):
        assert (t.get(key) is None) == (rt.get(key) is None), key
    assert ("vace_layers" in t) == ("vace_layers" in rt)
    assert index.get("boundary_ratio") == ref_index.get("boundary_ratio")
    assert bool(index.get("expand_timesteps")) == bool(ref_index.get("expand_timesteps"))


def test_two_runs_write_identical_files(tiny, tmp_path):
    again = make_tiny_models(tmp_path, names=("wan21-i2v", "wan22-ti2v"))

    def digest(folder):
        return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*")) if f.is_file()}

    for name, folder in again.items():
        assert digest(folder) == digest(tiny[name])


def test_models_load_offline_through_from_pretrained(tiny):
    import numpy as np
    import torch
    from diffusers import WanImageToVideoPipeline, WanPipeline, WanVACEPipeline

    i2v = WanImageToVideoPipeline.from_pretrained(tiny["wan21-i2v"])
    assert i2v.image_encoder is not None and i2v.transformer.config.image_dim == 16
    a14b = WanImageToVideoPipeline.from_pretrained(tiny["wan22-i2v-a14b"])
    assert a14b.transformer_2 is not None and a14b.config.boundary_ratio == 0.9
    ti2v = WanPipeline.from_pretrained(tiny["wan22-ti2v"])
    assert ti2v.vae.config.z_dim == 48 and ti2v.config.expand_timesteps
    vace = WanVACEPipeline.from_pretrained(tiny["wan21-vace"])
    assert list(vace.transformer.config.vace_layers) == [0]
    t2i = WanPipeline.from_pretrained(tiny["t2i"])
    t2i.set_progress_bar_config(disable=True)
    ids = t2i.tokenizer("a cat walks in the city").input_ids
    assert ids[-1] == t2i.tokenizer.eos_token_id and t2i.tokenizer.unk_token_id not in ids
    out = t2i(
        prompt="a red cat",
        height=32,
        width=32,
        num_frames=1,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert out.shape == (1, 1, 32, 32, 3) and np.isfinite(out).all()


def test_missing_tiny_model_is_made_by_the_explicit_step_only(tmp_path, monkeypatch):
    from wan_pipeline.engines.diffusers_support import resolve_model_source
    from wan_pipeline.errors import InputError
    from wan_pipeline.models.tiny import ensure_tiny_models_for
    from wan_pipeline.preset import load_preset

    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path))
    with pytest.raises(InputError, match="make-tiny-models"):
        resolve_model_source("models/tiny/t2i")
    assert ensure_tiny_models_for(load_preset("preview"), tmp_path) == {}  # no miniature named: nothing made
    made = ensure_tiny_models_for(load_preset("tiny"), tmp_path)
    assert made["t2i"] == tmp_path / "models" / "tiny" / "t2i" and (tmp_path / "models" / "tiny" / "rife" / "flownet.pkl").is_file()
    src = resolve_model_source("models/tiny/t2i")
    assert Path(src) == tmp_path / "models" / "tiny" / "t2i"
    assert (Path(src) / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert resolve_model_source("Wan-AI/Wan2.2-TI2V-5B-Diffusers") == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    # the clip stage's extension_model counts too (the VACE miniature continuing long FLF2V scenes)
    real = load_preset("wan21-flf2v-14b")
    assert ensure_tiny_models_for(real, tmp_path) == {}
    clip = real.stages.clip.model_copy(update={"extension_model": "models/tiny/wan21-vace"})
    ext_only = real.model_copy(update={"stages": real.stages.model_copy(update={"clip": clip})})
    assert ensure_tiny_models_for(ext_only, tmp_path)["wan21-vace"] == tmp_path / "models" / "tiny" / "wan21-vace"


def test_tiny_lora_targets_the_attention_projections(tmp_path):
    from safetensors.torch import load_file

    state = load_file(make_tiny_lora(tmp_path / "l.safetensors", rank=4))
    assert any(k.endswith("blocks.0.attn1.to_q.lora_A.weight") for k in state)
    assert any(k.endswith("blocks.1.attn2.to_out.0.lora_B.weight") for k in state)
    a = state["transformer.blocks.0.attn1.to_q.lora_A.weight"]
    assert tuple(a.shape) == (4, 24)
