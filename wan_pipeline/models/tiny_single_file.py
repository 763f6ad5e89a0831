"""The miniature Wan checkpoints written as the single files ComfyUI / Wan2GP users hold, so tests
load them through diffusers' real ``from_single_file`` path.

From a miniature diffusers folder (:mod:`wan_pipeline.models.tiny`) this writes, under
``<directory>/comfyui/models/`` (the ComfyUI folder layout):

* ``diffusion_models/<name>_fp16.safetensors``: the transformer in the original Wan key layout
  (``blocks.0.self_attn.q.weight``), float16 — for every miniature;
* ``diffusion_models/wan21-i2v_bf16.safetensors``: ComfyUI layout (``model.diffusion_model.``
  prefix), bfloat16;
* ``diffusion_models/wan21-i2v_fp8_e4m3fn.safetensors``: Wan layout, the 2-D+ weights of the blocks
  in float8 e4m3fn and the rest in float16 (as ComfyUI's plain fp8 files);
* ``diffusion_models/wan21-i2v_Q8_0.gguf``: Wan layout, Q8_0 for every matrix whose rows are a
  multiple of the 32-value Q8_0 block, float16 for the other matrices and float32 for vectors (as
  the published Wan GGUF conversions keep small tensors unquantized); the same for the VACE
  miniature (``wan21-vace_Q8_0.gguf``);
* ``vae/<vae>.safetensors``, ``text_encoders/<name>_umt5.safetensors``,
  ``clip_vision/<name>_clip_vision.safetensors``: the other components as single files (VAE in
  diffusers key layout: diffusers' Wan-VAE key conversion assumes the published block counts,
  which the miniature VAE does not have).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# diffusers name → original Wan name, applied in this order to each key (inverse of diffusers'
# ``convert_wan_transformer_to_diffusers``; ``pos_embed`` is FLF2V's ``img_emb.emb_pos``).
_TOP_LEVEL = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
)
_IN_BLOCK = (
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),
    (".proj_in.", ".before_proj."),
    (".proj_out.", ".after_proj."),
)


def diffusers_to_wan_key(key: str) -> str:
    """One ``WanTransformer3DModel`` / ``WanVACETransformer3DModel`` state-dict key in the original
    Wan repository's naming."""
    if key == "condition_embedder.image_embedder.pos_embed":
        return "img_emb.emb_pos"
    if key == "scale_shift_table":
        return "head.modulation"
    if key.startswith("proj_out."):
        return "head.head." + key[len("proj_out.") :]
    for old, new in _TOP_LEVEL:
        if key.startswith(old):
            return new + key[len(old) :]
    if re.match(r"(vace_)?blocks\.\d+\.", key):
        key = key.replace(".scale_shift_table", ".modulation")
        for old, new in _IN_BLOCK:
            key = key.replace(old, new)
    return key


def _save(tensors: dict, path: Path) -> Path:
    from safetensors.torch import save_file

    from wan_pipeline.media.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    return path


def wan_state_dict(folder: Path, subfolder: str = "transformer") -> dict:
    """The transformer of a diffusers folder as a float32 state dict in the original Wan layout."""
    from safetensors.torch import load_file

    files = sorted((folder / subfolder).glob("*.safetensors"))
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return {diffusers_to_wan_key(k): v.float() for k, v in state.items()}


def _fp8(state: dict) -> dict:
    import torch

    return {k: (v.to(torch.float8_e4m3fn) if v.ndim >= 2 and k.startswith("blocks.") else v.half()) for k, v in state.items()}


def write_gguf(state: dict, path: Path, arch: str = "wan") -> Path:
    """Write ``state`` (float tensors) as GGUF: Q8_0 where the last dim is a multiple of 32 and the
    tensor is a matrix, float16 for other matrices, float32 for vectors. Needs the ``gguf`` package."""
    import gguf
    import numpy as np

    from wan_pipeline.media.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch=arch)
        for name, tensor in state.items():
            arr = tensor.float().numpy()
            if arr.ndim >= 2 and arr.shape[-1] % 32 == 0:
                qtype = gguf.GGMLQuantizationType.Q8_0
                writer.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
            elif arr.ndim >= 2:
                writer.add_tensor(name, arr.astype(np.float16))
            else:
                writer.add_tensor(name, arr.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def make_tiny_single_files(directory: str | os.PathLike, folders: dict[str, Path]) -> dict[str, Path]:
    """Write the single-file miniatures (see the module doc) from the miniature folders ``folders``
    (``{name: folder}``, as :func:`wan_pipeline.models.tiny.make_tiny_models` returns them; must
    include ``wan21-i2v``) into ``directory/comfyui/models``. Existing files are kept. Returns
    ``{label: path}``; the GGUF file is left out when the ``gguf`` package is missing."""
    import torch

    root = Path(directory)
    names = tuple(folders)
    comfy = root / "comfyui" / "models"
    out: dict[str, Path] = {}

    def write(label: str, path: Path, make) -> None:
        out[label] = path
        if not path.is_file():
            make(path)

    for name in names:
        folder = folders[name]
        subs = ["transformer"] + (["transformer_2"] if (folder / "transformer_2").is_dir() else [])
        for sub in subs:
            suffix = "" if sub == "transformer" else "_low_noise"
            if len(subs) == 2 and sub == "transformer":
                suffix = "_high_noise"
            write(
                f"{name}{suffix}-fp16",
                comfy / "diffusion_models" / f"{name}{suffix}_fp16.safetensors",
                lambda p, f=folder, s=sub: _save({k: v.half() for k, v in wan_state_dict(f, s).items()}, p),
            )
    src = folders["wan21-i2v"]
    write(
        "wan21-i2v-bf16",
        comfy / "diffusion_models" / "wan21-i2v_bf16.safetensors",
        lambda p: _save({"model.diffusion_model." + k: v.to(torch.bfloat16) for k, v in wan_state_dict(src).items()}, p),
    )
    write("wan21-i2v-fp8", comfy / "diffusion_models" / "wan21-i2v_fp8_e4m3fn.safetensors", lambda p: _save(_fp8(wan_state_dict(src)), p))
    try:
        import gguf  # noqa: F401

        write("wan21-i2v-gguf", comfy / "diffusion_models" / "wan21-i2v_Q8_0.gguf", lambda p: write_gguf(wan_state_dict(src), p))
        if "wan21-vace" in names:  # the VACE model as Wan2GP / ComfyUI-GGUF users hold it (film, clip extension)
            vace = folders["wan21-vace"]
            write("wan21-vace-gguf", comfy / "diffusion_models" / "wan21-vace_Q8_0.gguf", lambda p: write_gguf(wan_state_dict(vace), p))
    except ImportError:  # pragma: no cover - gguf is a dependency
        pass

    def component(sub: str):
        return lambda p: _save({k: v.half() if v.is_floating_point() else v for k, v in _folder_state(src / sub).items()}, p)

    write("vae16", comfy / "vae" / "tiny_wan_vae_fp16.safetensors", component("vae"))
    write("wan21-i2v-umt5", comfy / "text_encoders" / "tiny_umt5_fp16.safetensors", component("text_encoder"))
    write("wan21-i2v-clip-vision", comfy / "clip_vision" / "tiny_clip_vision_fp16.safetensors", component("image_encoder"))
    if "wan22-ti2v" in names:
        write(
            "vae48",
            comfy / "vae" / "tiny_wan2.2_vae_fp16.safetensors",
            lambda p: _save({k: v.half() for k, v in _folder_state(folders["wan22-ti2v"] / "vae").items()}, p),
        )
    return out


def _folder_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state
