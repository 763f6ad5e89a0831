"""Single-file checkpoints (ComfyUI / Wan2GP ``.safetensors`` and ``.gguf``): identified from their
tensor index, loaded through diffusers' ``from_single_file``, rendering like the diffusers folder."""

from __future__ import annotations

import json
import os
import re
import struct
from fractions import Fraction
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import REPO
from wan_pipeline.cli import main
from wan_pipeline.engines.base import ClipRequest
from wan_pipeline.engines.wan_clip import WanI2VClip
from wan_pipeline.errors import InputError
from wan_pipeline.models import doctor_report, identify, read_checkpoint
from wan_pipeline.models.single_file import CONFIGS_DIR, inspect_file_report, read_tensor_index, shipped_configs
from wan_pipeline.models.tiny_single_file import diffusers_to_wan_key, make_tiny_single_files
from wan_pipeline.preflight import preset_problems
from wan_pipeline.preset import load_preset

SIZE = 32
BASE = {"steps": 2, "min_size": 32, "max_frames": 17, "max_sequence_length": 32}
COMFY = "models/tiny/comfyui/models"


@pytest.fixture(scope="module")
def files(storage):
    from wan_pipeline.models.tiny import make_tiny_models

    root = storage / "models" / "tiny"
    return make_tiny_single_files(root, make_tiny_models(root))


def _preset():
    return SimpleNamespace(source_path="workflows/test.yaml", width=SIZE, height=SIZE, fps=16, device="cpu")


def _request(seed=3):
    rng = np.random.default_rng(0)
    first, last = (rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2))
    return ClipRequest(
        scene_id="s1",
        prompt="a cat walks in the city",
        negative_prompt="blurry",
        seed=seed,
        width=SIZE,
        height=SIZE,
        fps=Fraction(16),
        duration_s=0.5,
        first=first,
        last=last,
    )


def _render(duration_s: float | None = None, **params):
    engine = WanI2VClip({**BASE, **params}, _preset())
    try:
        request = _request()
        if duration_s is not None:
            request.duration_s = duration_s
        return engine.render(request), engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def folder_frames(files):
    clip, _ = _render(model="models/tiny/wan21-i2v")
    return clip.frames


# -- key layout --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wan21-i2v", "wan21-vace", "wan22-ti2v"])
def test_wan_layout_keys_convert_back_to_diffusers(files, storage, name):
    """The miniatures' Wan-layout names are what diffusers' own conversion turns back into the
    model's keys (so the files really are in the original layout), except FLF2V's ``emb_pos``,
    which diffusers 0.42 does not convert — the loader renames that one itself."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    state = {k: torch.zeros(1) for k in read_tensor_index(next((storage / "models/tiny" / name / "transformer").glob("*.safetensors")))}
    wan = {diffusers_to_wan_key(k): v for k, v in state.items()}
    assert "blocks.0.self_attn.q.weight" in wan and "head.head.weight" in wan and not any(".attn1." in k for k in wan)
    back = set(convert_wan_transformer_to_diffusers(dict(wan)))
    missing = set(state) - back
    assert missing == ({"condition_embedder.image_embedder.pos_embed"} if name == "wan21-i2v" else set())


# -- inspect -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label,layout,dtype,fmt,variant",
    [
        ("wan21-i2v-fp16", "wan", "float16", "safetensors", "Wan2.1-FLF2V-miniature"),
        ("wan21-i2v-bf16", "comfyui", "bfloat16", "safetensors", "Wan2.1-FLF2V-miniature"),
        ("wan21-i2v-fp8", "wan", "float8_e4m3fn", "safetensors", "Wan2.1-FLF2V-miniature"),
        ("wan21-i2v-gguf", "wan", "F16", "gguf", "Wan2.1-FLF2V-miniature"),
        ("wan22-ti2v-fp16", "wan", "float16", "safetensors", "Wan2.2-TI2V-miniature"),
        ("wan21-vace-fp16", "wan", "float16", "safetensors", "Wan2.1-VACE-miniature"),
        ("wan22-i2v-a14b_low_noise-fp16", "wan", "float16", "safetensors", "Wan2.2-I2V-miniature"),
    ],
)
def test_inspect_tiny_files(files, label, layout, dtype, fmt, variant):
    report = inspect_file_report(files[label])
    assert (report["layout"], report["dtype"], report["format"], report["variant"]) == (layout, dtype, fmt, variant)
    assert report["loadable"] and report["miniature"] and report["config"] is None
    assert report["transformer_config"]["num_layers"] == 2 and report["transformer_config"]["hidden_dim"] == 24
    if label == "wan21-i2v-gguf":
        assert report["dtypes"].get("Q8_0", 0) > 0  # some matrices really are quantized


def _header_file(path, shapes: dict, dtype="BF16", prefix=""):
    """A safetensors file holding only a header (no data): enough for detection, which reads nothing else."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[prefix + name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def _published_shapes(folder, sub="transformer", layout="wan") -> dict:
    import diffusers

    cfg = json.loads((folder / sub / "config.json").read_text())
    cls = getattr(diffusers, cfg["_class_name"])
    with torch.device("meta"):
        model = cls.from_config(cfg)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return state if layout == "diffusers" else {diffusers_to_wan_key(k): v for k, v in state.items()}


PUBLISHED = {  # shipped config → a ComfyUI-style file name for it
    "Wan2.1-T2V-1.3B-Diffusers": "wan2.1_t2v_1.3B_fp16.safetensors",
    "Wan2.1-T2V-14B-Diffusers": "wan2.1_t2v_14B_bf16.safetensors",
    "Wan2.1-I2V-14B-480P-Diffusers": "wan2.1_i2v_480p_14B_fp16.safetensors",
    "Wan2.1-I2V-14B-720P-Diffusers": "wan2.1_i2v_720p_14B_fp16.safetensors",
    "Wan2.1-FLF2V-14B-720P-diffusers": "wan2.1_flf2v_720p_14B_fp16.safetensors",
    "Wan2.1-VACE-1.3B-diffusers": "wan2.1_vace_1.3B_fp16.safetensors",
    "Wan2.1-VACE-14B-diffusers": "wan2.1_vace_14B_fp16.safetensors",
    "Wan2.2-T2V-A14B-Diffusers": "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
    "Wan2.2-I2V-A14B-Diffusers": "wan2.2_i2v_high_noise_14B_fp16.safetensors",
    "Wan2.2-TI2V-5B-Diffusers": "wan2.2_ti2v_5B_fp16.safetensors",
    "Wan2.2-VACE-Fun-A14B-Diffusers": "wan2.2_fun_vace_high_noise_14B_bf16.safetensors",
}


@pytest.mark.parametrize("config", sorted(PUBLISHED))
def test_inspect_published_variants_from_header_only(tmp_path, config):
    folder = CONFIGS_DIR / config
    path = _header_file(tmp_path / PUBLISHED[config], _published_shapes(folder))
    report = inspect_file_report(path)
    expected = identify(read_checkpoint(folder).model_copy(update={"ref": path.name})).variant
    assert report["variant"] == expected and report["config"] == config and report["layout"] == "wan"
    assert report["dtype"] == "bfloat16" and not report["miniature"]
    if "A14B" in config:
        assert report["expert"] == ("transformer_2" if "low_noise" in path.name else "transformer")
    if "480p" in path.name:
        assert report["variant"].endswith("480P") and [832, 480] in report["native_sizes"]


def test_inspect_comfyui_and_diffusers_layouts_and_animate(tmp_path):
    flf = _published_shapes(CONFIGS_DIR / "Wan2.1-FLF2V-14B-720P-diffusers")
    comfy = inspect_file_report(_header_file(tmp_path / "flf2v.safetensors", flf, dtype="F8_E4M3", prefix="model.diffusion_model."))
    assert (comfy["layout"], comfy["dtype"], comfy["variant"]) == ("comfyui", "float8_e4m3fn", "Wan2.1-FLF2V-14B-720P")
    animate = _published_shapes(CONFIGS_DIR / "Wan2.2-Animate-14B-Diffusers", layout="diffusers")
    report = inspect_file_report(_header_file(tmp_path / "animate.safetensors", animate))
    assert (report["layout"], report["variant"], report["config"]) == ("diffusers", "Wan2.2-Animate-14B", "Wan2.2-Animate-14B-Diffusers")


def test_cli_inspect_file_and_refusals(files, tmp_path, capsys):
    assert main(["inspect", str(files["wan21-i2v-gguf"])]) == 0
    assert json.loads(capsys.readouterr().out)["variant"] == "Wan2.1-FLF2V-miniature"
    assert main(["inspect", str(files["vae16"])]) == 2
    assert "looks like a VAE" in capsys.readouterr().err
    (tmp_path / "cut.safetensors").write_bytes(b"\xff" * 12)
    assert main(["inspect", str(tmp_path / "cut.safetensors")]) == 2
    assert "cut.safetensors" in capsys.readouterr().err


def test_scaled_fp8_is_reported_unloadable(tmp_path):
    shapes = _published_shapes(CONFIGS_DIR / "Wan2.1-T2V-1.3B-Diffusers")
    shapes["blocks.0.self_attn.q.scale_weight"] = (1,)
    report = inspect_file_report(_header_file(tmp_path / "wan2.1_t2v_1.3B_fp8_scaled.safetensors", shapes, dtype="F8_E4M3"))
    assert report["scaled_fp8"] and not report["loadable"] and "fp8_scaled" in report["problems"][0]


# -- loading and rendering ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,max_diff",
    [
        ("wan21-i2v_fp16.safetensors", 1),
        ("wan21-i2v_bf16.safetensors", 3),
        ("wan21-i2v_fp8_e4m3fn.safetensors", 6),
        ("wan21-i2v_Q8_0.gguf", 3),
    ],
)
def test_single_files_render_like_the_folder(files, folder_frames, name, max_diff):
    """Same weights through from_single_file (rounded to the file's dtype) → the same clip within
    a few levels of 255."""
    clip, engine = _render(model=name, components="models/tiny/wan21-i2v", comfyui_models=COMFY)
    diff = np.abs(clip.frames.astype(int) - folder_frames.astype(int))
    assert clip.frames.shape == folder_frames.shape == (9, SIZE, SIZE, 3)
    assert diff.max() <= max_diff and diff.mean() < 0.05
    assert clip.meta["variant"] == "Wan2.1-FLF2V-miniature" and clip.meta["flf2v"] is True


def test_gguf_keeps_quantized_weights(files):
    from diffusers.quantizers.gguf.utils import GGUFParameter

    from wan_pipeline.models.model_files import load_transformer

    model = load_transformer(files["wan21-i2v-gguf"], files["wan21-i2v-fp16"].parents[3] / "wan21-i2v", "transformer", torch.float32)
    quantized = [n for n, p in model.named_parameters() if isinstance(p, GGUFParameter)]
    assert quantized and all(p.device.type == "cpu" for p in model.parameters())


def test_every_component_from_comfyui_files(files, storage):
    """Transformer, VAE, text encoder and CLIP vision all from single files found by bare name in a
    ComfyUI models/ tree; their weights are the folder's, rounded to float16."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5EncoderModel

    engine = WanI2VClip(
        {
            **BASE,
            "model": "wan21-i2v_fp16.safetensors",
            "vae": "tiny_wan_vae_fp16.safetensors",
            "text_encoder": "tiny_umt5_fp16.safetensors",
            "image_encoder": "tiny_clip_vision_fp16.safetensors",
            "components": "models/tiny/wan21-i2v",
            "comfyui_models": COMFY,
        },
        _preset(),
    )
    try:
        clip = engine.render(_request())
        pipe = engine.pipe
        folder = storage / "models" / "tiny" / "wan21-i2v"
        for loaded, ref in (
            (pipe.vae, AutoencoderKLWan.from_pretrained(folder / "vae")),
            (pipe.text_encoder, UMT5EncoderModel.from_pretrained(folder / "text_encoder")),
        ):
            got, want = loaded.state_dict(), ref.state_dict()
            assert set(want) <= set(got)
            assert all(torch.equal(got[k].float(), want[k].half().float()) for k in want if want[k].is_floating_point())
    finally:
        engine.close()
    assert clip.frames.shape == (9, SIZE, SIZE, 3)


def test_two_expert_files_and_ti2v_file(files):
    clip, engine = _render(
        model="wan22-i2v-a14b_high_noise_fp16.safetensors",
        model_2="wan22-i2v-a14b_low_noise_fp16.safetensors",
        components="models/tiny/wan22-i2v-a14b",
        comfyui_models=COMFY,
    )
    assert clip.frames.shape == (9, SIZE, SIZE, 3) and clip.meta["variant"] == "Wan2.2-I2V-miniature"
    ref, _ = _render(model="models/tiny/wan22-i2v-a14b")
    assert np.abs(clip.frames.astype(int) - ref.frames.astype(int)).max() <= 1
    ti2v, _ = _render(
        model="wan22-ti2v_fp16.safetensors",
        vae="tiny_wan2.2_vae_fp16.safetensors",
        components="models/tiny/wan22-ti2v",
        comfyui_models=COMFY,
    )
    assert ti2v.frames.shape == (9, SIZE, SIZE, 3) and ti2v.meta["variant"] == "Wan2.2-TI2V-miniature"


# -- checks before loading ---------------------------------------------------------------------


def test_bad_file_sets_are_refused_before_loading(files):
    def problems(**params):
        with pytest.raises(InputError) as err:
            WanI2VClip({**BASE, "comfyui_models": COMFY, **params}, _preset())
        return str(err.value)

    msg = problems(model="nope_fp16.safetensors", components="models/tiny/wan21-i2v")
    assert "nope_fp16.safetensors not found" in msg and "diffusion_models" in msg
    msg = problems(model="wan22-ti2v_fp16.safetensors", vae="tiny_wan_vae_fp16.safetensors", components="models/tiny/wan22-ti2v")
    assert "z_dim" in msg and "16" in msg and "48" in msg and "Wan2.2 VAE" in msg
    msg = problems(model="wan21-i2v_fp16.safetensors", vae="tiny_wan_vae_fp16.safetensors")
    assert "components" in msg and "match no published Wan checkpoint" in msg
    assert "no VAE" in problems(model="wan21-i2v_fp16.safetensors")
    msg = problems(model="wan21-i2v_fp16.safetensors", model_2="wan21-i2v_bf16.safetensors", components="models/tiny/wan21-i2v")
    assert "model_2: wan21-i2v is a one-expert model" in msg
    assert "looks like a VAE" in problems(
        model=str(files["vae16"]), vae="tiny_wan_vae_fp16.safetensors", components="models/tiny/wan21-i2v"
    )


def test_component_gaps_are_named(files, storage, tmp_path):
    """A components folder holding only configs and tokenizer (the few-MB download) cannot supply
    weights; an original-layout Wan2.2 VAE file is refused with the folder to use instead; a text
    encoder file in another key layout is refused when it would load, not left half random."""
    import shutil

    folder = storage / "models" / "tiny" / "wan21-i2v"
    configs_only = tmp_path / "configs-only"
    shutil.copytree(folder, configs_only, ignore=shutil.ignore_patterns("*.safetensors"))

    def problems(**params):
        with pytest.raises(InputError) as err:
            WanI2VClip({**BASE, "comfyui_models": COMFY, **params}, _preset())
        return str(err.value)

    msg = problems(model="wan21-i2v_fp16.safetensors", components=str(configs_only))
    assert all(f"{r}: {configs_only}/{r}/ has no .safetensors weights" in msg for r in ("vae", "text_encoder", "image_encoder"))
    # with every weighted component given as a file, the configs-only folder is enough
    engine = WanI2VClip(
        {
            **BASE,
            "model": "wan21-i2v_fp16.safetensors",
            "vae": "tiny_wan_vae_fp16.safetensors",
            "text_encoder": "tiny_umt5_fp16.safetensors",
            "image_encoder": "tiny_clip_vision_fp16.safetensors",
            "components": str(configs_only),
            "comfyui_models": COMFY,
        },
        _preset(),
    )
    engine.close()
    vae22 = _header_file(
        tmp_path / "wan2.2_vae.safetensors",
        {"conv1.weight": (96, 96, 1, 1, 1), "decoder.upsamples.0.upsamples.0.residual.0.gamma": (256, 1, 1, 1)},
    )
    msg = problems(model="wan22-ti2v_fp16.safetensors", vae=str(vae22), components="models/tiny/wan22-ti2v")
    assert "Wan2.2 VAE in its original key layout" in msg and "Wan2.2-TI2V-5B-Diffusers --include 'vae/*'" in msg
    wrong = tmp_path / "umt5_wrong_layout.safetensors"
    from safetensors.torch import save_file

    save_file({"t5.layers.0.weight": torch.zeros(2)}, str(wrong))
    engine = WanI2VClip(
        {
            **BASE,
            "model": "wan21-i2v_fp16.safetensors",
            "text_encoder": str(wrong),
            "components": "models/tiny/wan21-i2v",
            "comfyui_models": COMFY,
        },
        _preset(),
    )
    with pytest.raises(InputError, match="weights are not in this file"):
        engine.render(_request())
    engine.close()


def test_preflight_and_doctor_accept_single_files(workspace, files, tmp_path):
    data = yaml.safe_load((REPO / "workflows" / "tiny.yaml").read_text())
    comfy = str(files["wan21-i2v-fp16"].parents[1])
    tiny = files["wan21-i2v-fp16"].parents[3]
    data["stages"]["clip"].update(
        model="wan21-i2v_fp16.safetensors",
        components=str(tiny / "wan21-i2v"),
        comfyui_models=comfy,
        extension_model=str(tiny / "wan21-vace"),  # the miniatures lie outside this workspace's storage root
    )
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert preset_problems(load_preset("tiny"), stages=("clip",)) == []
    data["stages"]["clip"].update(vae="tiny_wan2.2_vae_fp16.safetensors")
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    found = preset_problems(load_preset("tiny"), stages=("clip",))
    assert len(found) == 1 and "z_dim" in found[0] and found[0].startswith("stages.clip")

    # a published FLF2V-14B file (header only) with the Wan2.1 VAE: the doctor plans it from the shipped config
    flf = _header_file(
        tmp_path / "wan2.1_flf2v_720p_14B_fp16.safetensors", _published_shapes(CONFIGS_DIR / "Wan2.1-FLF2V-14B-720P-diffusers")
    )
    vae = _header_file(tmp_path / "wan_2.1_vae.safetensors", {"conv1.weight": (32, 32, 1, 1, 1), "conv2.weight": (16, 16, 1, 1, 1)})
    data["stages"]["clip"].update(model=str(flf), vae=str(vae), components=None, comfyui_models=None, memory_strategy="auto")
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    report = doctor_report(load_preset("tiny"), machine={"cpu": {}, "ram": {"total_mib": 65536, "available_mib": 60000}, "gpus": []})
    entry = next(m for m in report["models"] if m["stage"] == "clip")
    assert entry["kind"] == "single file" and entry["variant"] == "Wan2.1-FLF2V-14B-720P" and entry["layout"] == "wan"
    assert entry["config"] == "Wan2.1-FLF2V-14B-720P-diffusers" and entry["parameters"] > 16e9 and entry["chosen_strategy"]
    # no text encoder, tokenizer or CLIP vision given: named, with the fix
    lacks = " ".join(report["lacks"])
    assert not report["ready"] and "tokenizer" in lacks and "text_encoder: not given" in lacks and "image_encoder: not given" in lacks


def test_shipped_configs_are_the_reference_data():
    assert len(shipped_configs()) == 12
    for folder in shipped_configs().values():
        identify(read_checkpoint(folder))  # every shipped folder reads and identifies


def test_fp8_file_can_stay_fp8_in_memory(files, storage):
    """On CUDA an fp8 file is kept in fp8 and computed in the stage dtype (layerwise casting):
    the blocks' matrices are float8 in memory and the output equals the upcast model's within
    the rounding of the few higher-precision tensors the fp8 file stored (biases)."""
    from wan_pipeline.models.model_files import load_transformer

    folder = storage / "models" / "tiny" / "wan21-i2v"
    upcast = load_transformer(files["wan21-i2v-fp8"], folder, "transformer", torch.float32)
    kept = load_transformer(files["wan21-i2v-fp8"], folder, "transformer", torch.float32, keep_fp8=True)
    assert kept.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn and upcast.blocks[0].attn1.to_q.weight.dtype == torch.float32
    assert kept.blocks[0].norm2.weight.dtype == torch.float32  # norms are never stored in fp8
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 36, 3, 8, 8, generator=gen),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 8, 32, generator=gen),
        "encoder_hidden_states_image": torch.randn(2, 17, 16, generator=gen),  # first + last frame (FLF2V)
        "return_dict": False,
    }
    with torch.no_grad():
        a, b = upcast(**inputs)[0], kept(**inputs)[0]
    assert a.shape == b.shape == (1, 16, 3, 8, 8)
    assert torch.allclose(a, b, atol=0.05 * a.abs().max().item()) and not torch.equal(a, b)


def test_keyframe_from_a_t2v_file(files):
    """The keyframe stage (Wan T2V with one frame) from a single file renders the folder's image."""
    from wan_pipeline.engines.base import KeyframeRequest
    from wan_pipeline.engines.diffusers_keyframe import DiffusersT2IKeyframe

    def keyframe(**params):
        engine = DiffusersT2IKeyframe({"steps": 2, "max_sequence_length": 32, **params}, _preset())
        try:
            return engine.render(KeyframeRequest(scene_id="s1", prompt="a red cat", negative_prompt="", seed=5, width=SIZE, height=SIZE))
        finally:
            engine.close()

    from_file = keyframe(model="t2i_fp16.safetensors", components="models/tiny/t2i", comfyui_models=COMFY)
    from_folder = keyframe(model="models/tiny/t2i")
    assert from_file.shape == from_folder.shape == (SIZE, SIZE, 3)
    assert np.abs(from_file.astype(int) - from_folder.astype(int)).max() <= 1


def test_gguf_with_reshaped_tensors_is_refused(storage, tmp_path):
    """ComfyUI-GGUF may store a tensor flattened with its shape in ``comfy.gguf.orig_shape.<name>``;
    detection reads that shape, and the file is refused because diffusers' loader would not."""
    import gguf

    from wan_pipeline.models.tiny_single_file import wan_state_dict

    state = wan_state_dict(storage / "models" / "tiny" / "wan21-i2v")
    path = tmp_path / "reshaped.gguf"
    writer = gguf.GGUFWriter(str(path), arch="wan")
    for name, tensor in state.items():
        arr = tensor.half().numpy()
        if name == "blocks.0.ffn.0.weight":
            writer.add_array(f"comfy.gguf.orig_shape.{name}", list(arr.shape))
            arr = arr.reshape(-1)
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    report = inspect_file_report(path)
    assert report["transformer_config"]["ffn_dim"] == 32 and report["variant"] == "Wan2.1-FLF2V-miniature"
    assert not report["loadable"] and "orig_shape" in report["problems"][0] and "blocks.0.ffn.0.weight" in report["problems"][0]


# -- speed levers on single files ---------------------------------------------------------------


def test_weight_levers_on_single_files(files, folder_frames):
    """fp8 storage applies to a transformer loaded from a single fp16 file (stored fp8, clip close
    to the folder's, planner with the lever below the plain one); a GGUF transformer is quantized
    already, so storage_dtype and a preset LoRA are refused by name before loading."""
    with pytest.raises(InputError) as err:
        WanI2VClip(
            {
                **BASE,
                "model": "wan21-i2v_Q8_0.gguf",
                "components": "models/tiny/wan21-i2v",
                "comfyui_models": COMFY,
                "weights": {"storage_dtype": "float8_e4m3fn"},
                "loras": [{"path": "models/tiny/loras/any.safetensors"}],
            },
            _preset(),
        )
    text = str(err.value)
    assert "stages.clip.weights.storage_dtype: wan21-i2v_Q8_0.gguf is GGUF-quantized already" in text
    assert "stages.clip.loras: a LoRA cannot be fused into the quantized weights of wan21-i2v_Q8_0.gguf" in text
    fp8 = {"weights": {"storage_dtype": "float8_e4m3fn"}}
    clip, engine = _render(model="wan21-i2v_fp16.safetensors", components="models/tiny/wan21-i2v", comfyui_models=COMFY, **fp8)
    assert clip.meta["storage_dtype"] == "float8_e4m3fn" and clip.frames.shape == folder_frames.shape
    assert np.abs(clip.frames.astype(int) - folder_frames.astype(int)).mean() < 8  # fp8 rounding of the weights
    assert 0 < clip.meta["planned_vram_mib"] <= clip.meta["planned_vram_plain_mib"]  # miniature: 0.1 MiB rounding


def test_fp8_file_kept_in_fp8_takes_only_its_own_storage_dtype(files, storage):
    """An fp8 file kept in fp8 (what CUDA gets) already stores its weights by layerwise casting:
    the levers keep it (storage_dtype may repeat its dtype) and refuse another dtype or a fused
    preset LoRA, naming the field. A GGUF transformer's storage is reported as its GGUF type."""
    from diffusers import WanImageToVideoPipeline

    from wan_pipeline.engines.diffusers_support import stored_weight_bytes
    from wan_pipeline.engines.levers import LeverParams, apply_levers, layerwise_storage, stored_as
    from wan_pipeline.engines.wan_clip import WanClipParams
    from wan_pipeline.models.model_files import load_files_pipeline, load_transformer, resolve_model_files

    params = WanClipParams.model_validate(
        {"model": "wan21-i2v_fp8_e4m3fn.safetensors", "components": "models/tiny/wan21-i2v", "comfyui_models": COMFY}
    )
    found = resolve_model_files(params, "workflows/test.yaml", storage)
    pipe = load_files_pipeline(WanImageToVideoPipeline, found, torch.float32, keep_fp8=True)
    assert layerwise_storage(pipe.transformer) == "float8_e4m3fn"
    measured = stored_weight_bytes(pipe, str(found.config_dir))["transformer"]  # what the planner counts
    assert 1.0 <= measured < 0.75 * 4  # fp8 matrices; norms, biases and embeddings stay float32
    for levers, message in [
        ({"weights": {"storage_dtype": "float8_e5m2"}}, r"stages\.clip\.weights\.storage_dtype: .*already stored in float8_e4m3fn"),
        ({"loras": [{"path": "x.safetensors"}]}, r"stages\.clip\.loras: .*stored in float8_e4m3fn.*rounded"),
    ]:
        with pytest.raises(InputError, match=message):
            apply_levers(pipe, LeverParams.model_validate(levers), "clip", "workflows/test.yaml")
    state = apply_levers(pipe, LeverParams.model_validate({"weights": {"storage_dtype": "float8_e4m3fn"}}), "clip", None)
    assert state.storage_dtype == "float8_e4m3fn" and pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    gguf = load_transformer(files["wan21-i2v-gguf"], storage / "models" / "tiny" / "wan21-i2v", "transformer", torch.float32)
    assert stored_as(gguf).startswith("gguf_")


# -- the clip stage's VACE extension model as a single file ------------------------------------


def _long_scene(**params):
    """A 25-frame FLF2V scene in 9-frame generations: every segment from the extension model."""
    return _render(duration_s=1.5, **{"model": "models/tiny/wan21-i2v", "max_frames": 9, **params})


@pytest.fixture(scope="module")
def extension_folder_frames(files):
    clip, _ = _long_scene(extension_model="models/tiny/wan21-vace")
    return clip.frames


@pytest.mark.parametrize("name,max_diff", [("wan21-vace_fp16.safetensors", 1), ("wan21-vace_Q8_0.gguf", 4)])
def test_long_flf2v_scene_through_a_single_file_extension_model(files, extension_folder_frames, name, max_diff):
    """The VACE extension given as a ComfyUI / Wan2GP file (configs and tokenizer from
    extension_components, the clip model a diffusers folder) makes the same 5 segments as the
    diffusers VACE folder, within a few levels of 255 (the weights rounded to the file's dtype)."""
    clip, engine = _long_scene(extension_model=name, comfyui_models=COMFY, extension_components="models/tiny/wan21-vace")
    m = clip.meta
    assert clip.frames.shape == extension_folder_frames.shape == (25, SIZE, SIZE, 3)
    assert m["continuation"] == "vace_extension" and m["segments"] == 5 and m["extension_model"] == name
    assert m["extension_variant"] == "Wan2.1-VACE-miniature" and m["flf2v"] is True
    diff = np.abs(clip.frames.astype(int) - extension_folder_frames.astype(int))
    assert diff.max() <= max_diff and diff.mean() < 0.1


def test_single_file_extension_shares_the_clip_files(files, storage):
    """With the clip model a single file too, the extension gets the section's vae / text_encoder /
    comfyui_models (the Wan2.1 VAE and UMT5 are shared by every Wan2.1 model), never its
    components (the FLF2V configs) or image_encoder; it loads those very weights."""
    from wan_pipeline.engines.wan_clip import ExtensionParams, WanClipParams

    section = {
        **BASE,
        "model": "wan21-i2v_fp16.safetensors",
        "vae": "tiny_wan_vae_fp16.safetensors",
        "image_encoder": "tiny_clip_vision_fp16.safetensors",
        "components": "models/tiny/wan21-i2v",
        "comfyui_models": COMFY,
        "extension_model": "wan21-vace_fp16.safetensors",
        "extension_components": "models/tiny/wan21-vace",
    }
    ext = ExtensionParams.from_clip(WanClipParams.model_validate(section))
    assert (ext.model, ext.vae, ext.comfyui_models, ext.components) == (
        "wan21-vace_fp16.safetensors",
        "tiny_wan_vae_fp16.safetensors",
        COMFY,
        "models/tiny/wan21-vace",
    )
    assert ext.image_encoder is None and ext.model_2 is None
    engine = WanI2VClip(section, _preset())
    try:
        vae = engine._extension.pipe.vae
        from safetensors.torch import load_file

        want = load_file(str(files["vae16"]))
        got = vae.state_dict()
        assert all(torch.equal(got[k].float(), want[k].float()) for k in want)
        assert engine._extension.pipe.transformer.config.vace_layers  # a VACE transformer from the file
    finally:
        engine.close()
    folder = ExtensionParams.from_clip(WanClipParams.model_validate({**section, "extension_model": "models/tiny/wan21-vace"}))
    assert folder.vae is None and folder.components is None and folder.comfyui_models is None  # a diffusers VACE holds its own


def test_bad_single_file_extension_models_are_refused_before_loading(files):
    def problems(**params):
        with pytest.raises(InputError) as err:
            WanI2VClip({**BASE, "model": "models/tiny/wan21-i2v", "comfyui_models": COMFY, **params}, _preset())
        return list(err.value.problems)

    found = problems(extension_model="wan21-i2v_fp16.safetensors", extension_components="models/tiny/wan21-vace")
    assert any(
        p.startswith("stages.clip.extension_model: ")
        and "wan21-i2v_fp16.safetensors is a Wan2.1-FLF2V-miniature transformer file" in p
        and "no VACE blocks" in p
        for p in found
    ), found
    found = problems(extension_model="wan21-vace_fp16.safetensors", extension_components="models/tiny/wan21-i2v")
    assert any(p.startswith("stages.clip.extension_model: ") and "holds the configs of Wan2.1-FLF2V-miniature" in p for p in found), found
    found = problems(extension_model="nope_vace_fp16.safetensors", extension_components="models/tiny/wan21-vace")
    assert any(p.startswith("stages.clip.extension_model: model: nope_vace_fp16.safetensors not found") for p in found), found
    found = " ".join(problems(extension_model="wan21-vace_fp16.safetensors", vae="tiny_wan_vae_fp16.safetensors"))
    assert "stages.clip.extension_model: tokenizer: none found: set `extension_components:`" in found
    found = problems(extension_model="models/tiny/wan21-vace", extension_components="models/tiny/wan21-vace")
    assert found[0].startswith("stages.clip.extension_components: only for a single-file extension_model")
    # the film stage refuses a non-VACE file the same way, before loading
    from wan_pipeline.engines.vace_film import WanVaceFilm

    with pytest.raises(InputError, match=r"stages\.film\.model: wan21-i2v_fp16\.safetensors is a Wan2\.1-FLF2V-miniature transformer file"):
        WanVaceFilm({"model": "wan21-i2v_fp16.safetensors", "components": "models/tiny/wan21-vace", "comfyui_models": COMFY}, _preset())


def test_doctor_and_preflight_plan_a_single_file_extension_model(workspace, files, tmp_path):
    """The published VACE-14B file (header only) as extension_model of an FLF2V clip stage: the
    doctor identifies and plans it from the shipped config with the section's VAE file; a
    non-VACE file there is a problem naming stages.clip.extension_model, before anything loads."""
    data = yaml.safe_load((REPO / "workflows" / "tiny.yaml").read_text())
    tiny = files["wan21-i2v-fp16"].parents[3]
    data["stages"]["clip"].update(
        model=str(tiny / "wan21-i2v"),
        comfyui_models=str(files["wan21-i2v-fp16"].parents[1]),
        extension_model="wan21-vace_fp16.safetensors",
        extension_components=str(tiny / "wan21-vace"),
    )
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert preset_problems(load_preset("tiny"), stages=("clip",)) == []
    data["stages"]["clip"].update(extension_model="wan21-i2v_fp16.safetensors")
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    found = preset_problems(load_preset("tiny"), stages=("clip",))
    assert found and all(p.startswith("stages.clip.extension_model: ") for p in found) and "no VACE blocks" in found[0]

    vace = _header_file(tmp_path / "wan2.1_vace_14B_fp16.safetensors", _published_shapes(CONFIGS_DIR / "Wan2.1-VACE-14B-diffusers"))
    vae = _header_file(tmp_path / "wan_2.1_vae.safetensors", {"conv1.weight": (32, 32, 1, 1, 1), "conv2.weight": (16, 16, 1, 1, 1)})
    data["stages"]["clip"].update(
        extension_model=vace.name, vae=vae.name, comfyui_models=None, extension_components=None, memory_strategy="auto"
    )
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    machine = {
        "cpu": {},
        "ram": {"total_mib": 65536, "available_mib": 60000},
        "gpus": [{"index": 0, "total_mib": 24576, "free_mib": 24000, "name": "test"}],
    }
    import shutil

    workspace["storage"].mkdir(parents=True, exist_ok=True)
    shutil.copy(vace, workspace["storage"] / vace.name)
    shutil.copy(vae, workspace["storage"] / vae.name)
    report = doctor_report(load_preset("tiny"), machine=machine)
    entry = next(m for m in report["models"] if m.get("label") == "clip.extension_model")
    assert entry["kind"] == "single file" and entry["variant"] == "Wan2.1-VACE-14B" and entry["config"] == "Wan2.1-VACE-14B-diffusers"
    assert entry["parameters"] > 16e9 and entry["chosen_strategy"] and entry["host_ram_mib"] > 30 * 1024
    lacks = " ".join(report["lacks"])
    assert "tokenizer" in lacks and "extension_model" in lacks
    flf = _header_file(
        tmp_path / "wan2.1_flf2v_720p_14B_fp16.safetensors", _published_shapes(CONFIGS_DIR / "Wan2.1-FLF2V-14B-720P-diffusers")
    )
    shutil.copy(flf, workspace["storage"] / flf.name)
    data["stages"]["clip"].update(extension_model=flf.name)
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    report = doctor_report(load_preset("tiny"), machine=machine)
    entry = next(m for m in report["models"] if m.get("label") == "clip.extension_model")
    assert len(entry["problems"]) == 1 and entry["problems"][0].startswith(
        "stages.clip.extension_model: wan2.1_flf2v_720p_14B_fp16.safetensors is a Wan2.1-FLF2V-14B-720P transformer file (no VACE blocks)"
    ), entry["problems"]
    # a VACE file whose extension_components are another model's configs
    data["stages"]["clip"].update(extension_model=vace.name, extension_components=str(tiny / "wan21-i2v"))
    (workspace["workflows"] / "tiny.yaml").write_text(yaml.safe_dump(data))
    entry = next(m for m in doctor_report(load_preset("tiny"), machine=machine)["models"] if m.get("label") == "clip.extension_model")
    assert any("is a VACE file but extension_components holds the configs of Wan2.1-FLF2V-miniature" in p for p in entry["problems"])


@pytest.mark.parametrize("preset", ["wan21-flf2v-14b", "wan21-flf2v-14b-lightx2v"])
def test_preset_comments_show_a_valid_single_file_extension(preset):
    """The commented single-file form in the FLF2V presets is a valid clip section whose extension
    is the VACE-14B file with the section's VAE and the VACE configs folder."""
    from wan_pipeline.engines.wan_clip import ExtensionParams, WanClipParams

    text = (REPO / "workflows" / f"{preset}.yaml").read_text()
    block = text[text.index("# With the ComfyUI / Wan2GP single files") :].split("\n  interpolated:")[0]
    keys = yaml.safe_load("\n".join(m.group(1) for m in re.finditer(r"^ {4}# ([a-z_0-9]+: \S+)", block, re.M)))
    section = {**yaml.safe_load(text)["stages"]["clip"], **keys}
    section.pop("engine")
    ext = ExtensionParams.from_clip(WanClipParams.model_validate(section))
    assert ext.model == "wan2.1_vace_14B_fp16.safetensors" and ext.vae == "wan_2.1_vae.safetensors"
    assert ext.components == "models/wan21-vace-configs" and ext.comfyui_models == "/home/me/ComfyUI/models"
    assert ext.image_encoder is None and ext.text_encoder == "umt5_xxl_fp16.safetensors"
