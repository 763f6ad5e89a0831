"""Miniature random-weight Wan checkpoints, so tests run the real diffusers code paths on CPU.

Each checkpoint is a diffusers folder written with ``save_pretrained`` (safetensors only) from
the same classes and config keys as the published Wan checkpoints (see
``shared/reference/wan-configs``), scaled down to about a megabyte: two transformer blocks, a
three-channel-base VAE, a one-layer UMT5 text encoder and a word-level tokenizer built here from a
short vocabulary (no hub access). Weights come from a fixed seed, so two runs write identical
files.

Names (:data:`TINY_MODELS`):

* ``wan21-i2v``: Wan2.1 I2V/FLF2V layout, ``WanImageToVideoPipeline`` with a CLIP image encoder,
  ``image_dim`` and ``pos_embed_seq_len`` set (the FLF2V transformer: two images' embeddings).
* ``wan22-ti2v``: Wan2.2 TI2V-5B layout, ``WanPipeline`` with ``expand_timesteps=True`` and the
  48-channel residual VAE (``z_dim=48``, ``patch_size=2``, spatial factor 16).
* ``wan22-i2v-a14b``: Wan2.2 I2V-A14B layout, two experts ``transformer`` / ``transformer_2`` and
  ``boundary_ratio``, no image encoder.
* ``wan21-vace``: Wan2.1 VACE layout, ``WanVACEPipeline`` with ``vace_layers``.
* ``t2i``: Wan2.1 T2V layout (``WanPipeline``), used for text-to-image with one frame.
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_MODELS = ("wan21-i2v", "wan22-ti2v", "wan22-i2v-a14b", "wan21-vace", "t2i")

_SEED = 20240601
_TEXT_DIM = 32  # UMT5 d_model == transformer text_dim
_HEADS, _HEAD_DIM = 2, 12  # inner dim 24; rope splits 12 into t/h/w parts
_CLIP_HIDDEN, _CLIP_IMAGE, _CLIP_PATCH = 16, 32, 8
_WORDS = (
    "a the of and in on with to at from by cat dog man woman child city street forest river sea sky sun "
    "moon night day light dark red blue green white black walks runs flies looks camera slow fast zoom pan "
    "close wide shot scene film video image picture blurry low quality static bright colour"
).split()


def _seed(offset: int) -> None:
    import torch

    torch.manual_seed(_SEED + offset)


def _tokenizer():
    from transformers import T5TokenizerFast

    # T5 pre-tokenizes with Metaspace: word pieces start with "▁"
    vocab = [("\u2581" + w, -float(i + 1)) for i, w in enumerate(_WORDS)] + [("\u2581", -100.0)]
    # T5 layout: <pad>=0, </s>=1, <unk>=2, then the pieces; no sentinel tokens needed here.
    return T5TokenizerFast(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + vocab, extra_ids=0)


def _text_encoder(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    _seed(1)
    cfg = UMT5Config(
        vocab_size=vocab_size,
        d_model=_TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
    )
    return UMT5EncoderModel(cfg).eval()


def _scheduler(flow_shift: float):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=flow_shift)


def _vae16():
    from diffusers import AutoencoderKLWan

    _seed(2)
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]).eval()


def _vae48():
    """The Wan2.2 TI2V layout: residual blocks, 2x2 patchified input (12 channels), 16x spatial."""
    from diffusers import AutoencoderKLWan

    _seed(3)
    return AutoencoderKLWan(
        base_dim=4,
        decoder_base_dim=4,
        z_dim=48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        in_channels=12,
        out_channels=12,
        is_residual=True,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
    ).eval()


_TRANSFORMER_CONFIG = dict(  # every miniature transformer: two blocks, the published configs' other keys
    patch_size=(1, 2, 2),
    num_attention_heads=_HEADS,
    attention_head_dim=_HEAD_DIM,
    text_dim=_TEXT_DIM,
    freq_dim=16,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=32,
)


def _transformer(offset: int, in_channels: int, out_channels: int, **extra):
    from diffusers import WanTransformer3DModel

    _seed(offset)
    return WanTransformer3DModel(in_channels=in_channels, out_channels=out_channels, **_TRANSFORMER_CONFIG, **extra).eval()


def _image_encoder():
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    _seed(4)
    cfg = CLIPVisionConfig(
        hidden_size=_CLIP_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=_CLIP_IMAGE,
        patch_size=_CLIP_PATCH,
        projection_dim=16,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": _CLIP_IMAGE}, crop_size={"height": _CLIP_IMAGE, "width": _CLIP_IMAGE})
    return CLIPVisionModelWithProjection(cfg).eval(), processor


def build_tiny_pipeline(name: str):
    """Build the miniature pipeline ``name`` (one of :data:`TINY_MODELS`) in memory, float32, CPU.

    Raises ``KeyError`` for an unknown name.
    """
    from diffusers import WanImageToVideoPipeline, WanPipeline, WanVACEPipeline, WanVACETransformer3DModel

    if name not in TINY_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(TINY_MODELS)}")
    tok = _tokenizer()
    common = dict(tokenizer=tok, text_encoder=_text_encoder(len(tok)))
    if name == "wan21-i2v":
        encoder, processor = _image_encoder()
        patches = (_CLIP_IMAGE // _CLIP_PATCH) ** 2 + 1
        # FLF2V transformer: the image embedding of first+last frame, 2 x (patches + class token).
        transformer = _transformer(10, 36, 16, image_dim=_CLIP_HIDDEN, added_kv_proj_dim=_HEADS * _HEAD_DIM, pos_embed_seq_len=2 * patches)
        return WanImageToVideoPipeline(
            vae=_vae16(), scheduler=_scheduler(16.0), image_encoder=encoder, image_processor=processor, transformer=transformer, **common
        )
    if name == "wan22-ti2v":
        return WanPipeline(
            vae=_vae48(),
            scheduler=_scheduler(5.0),
            transformer=_transformer(11, 48, 48),
            transformer_2=None,
            boundary_ratio=None,
            expand_timesteps=True,
            **common,
        )
    if name == "wan22-i2v-a14b":
        return WanImageToVideoPipeline(
            vae=_vae16(),
            scheduler=_scheduler(3.0),
            transformer=_transformer(12, 36, 16),
            transformer_2=_transformer(13, 36, 16),
            boundary_ratio=0.9,
            image_encoder=None,
            image_processor=None,
            **common,
        )
    if name == "wan21-vace":
        _seed(14)
        transformer = WanVACETransformer3DModel(
            in_channels=16, out_channels=16, **_TRANSFORMER_CONFIG, vace_layers=[0], vace_in_channels=96
        ).eval()
        return WanVACEPipeline(vae=_vae16(), scheduler=_scheduler(3.0), transformer=transformer, **common)
    return WanPipeline(vae=_vae16(), scheduler=_scheduler(3.0), transformer=_transformer(15, 16, 16), **common)


def make_tiny_models(directory: str | os.PathLike, names: tuple[str, ...] | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Write the miniature checkpoints under ``directory/<name>`` and return ``{name: folder}``.

    A folder that already holds a ``model_index.json`` is kept unless ``overwrite``. Each folder is
    written to a temporary sibling and renamed into place, so a killed run leaves no half model.
    """
    import shutil
    import tempfile

    from wan_pipeline.models.hub import quiet_hub_progress

    quiet_hub_progress()
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name in names or TINY_MODELS:
        target = root / name
        out[name] = target
        if (target / "model_index.json").is_file() and not overwrite:
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            build_tiny_pipeline(name).save_pretrained(tmp, safe_serialization=True)
            if target.exists() and overwrite:
                shutil.rmtree(target)
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / "model_index.json").is_file():
                    raise  # else another process wrote the same model first: keep it
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out


def make_tiny_lora(path: str | os.PathLike, model: str = "wan21-i2v", rank: int = 4, seed: int = 7, scale: float = 0.5) -> Path:
    """Write a LoRA (safetensors, diffusers key format ``transformer.<module>.lora_A/B.weight``) for
    the miniature ``model``'s transformer: rank ``rank`` on every attention projection
    (``to_q``, ``to_k``, ``to_v``, ``to_out.0``). Both factors are random (``scale`` sets the size of
    B), so, unlike a freshly initialised LoRA, it changes the output. Returns ``path``.
    """
    import torch
    from safetensors.torch import save_file

    from wan_pipeline.media.atomic import atomic_path

    pipe = build_tiny_pipeline(model)
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for mod_name, module in pipe.transformer.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and mod_name.split(".")[-1] in ("to_q", "to_k", "to_v", "0")
            and ".attn" in mod_name
            and (mod_name.endswith("to_out.0") or not mod_name.endswith(".0"))
        ):
            a = torch.randn(rank, module.in_features, generator=gen) / module.in_features**0.5
            b = torch.randn(module.out_features, rank, generator=gen) * scale
            tensors[f"transformer.{mod_name}.lora_A.weight"] = a.contiguous()
            tensors[f"transformer.{mod_name}.lora_B.weight"] = b.contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return path


_WAN_LORA_NAMES = (
    # (diffusers module suffix, original Wan module suffix) of one transformer block
    ("attn1.to_q", "self_attn.q"),
    ("attn1.to_k", "self_attn.k"),
    ("attn1.to_v", "self_attn.v"),
    ("attn1.to_out.0", "self_attn.o"),
    ("attn2.to_q", "cross_attn.q"),
    ("attn2.to_k", "cross_attn.k"),
    ("attn2.to_v", "cross_attn.v"),
    ("attn2.to_out.0", "cross_attn.o"),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
)
# Wan (original checkpoint) names of the transformer linears a distillation LoRA adapts, as in
# the lightx2v / Wan2.2-Lightning releases: the modules above plus the image key/value
# projections ``k_img``/``v_img`` of I2V transformers.
_DISTILL_NAMES = (
    *_WAN_LORA_NAMES[:8],
    ("attn2.add_k_proj", "cross_attn.k_img"),
    ("attn2.add_v_proj", "cross_attn.v_img"),
    *_WAN_LORA_NAMES[8:],
)
DISTILL_LORA = "loras/wan21-i2v-distill-4step.safetensors"
"""Where :func:`make_all_tiny_models` writes the miniature distillation LoRA (under its folder)."""


def _write_wan_lora(path, transformer, names, rank: int, seed: int, scale: float, bias_scale: float | None) -> Path:
    """Write random LoRA factors in the original Wan key layout for the ``names`` ((diffusers,
    Wan) module suffixes) of every block of ``transformer`` that exist as linears; ``diff_b`` bias
    deltas too unless ``bias_scale`` is None."""
    import torch
    from safetensors.torch import save_file

    from wan_pipeline.media.atomic import atomic_path

    modules = dict(transformer.named_modules())
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(len(transformer.blocks)):
        for ours, theirs in names:
            module = modules.get(f"blocks.{i}.{ours}")
            if not isinstance(module, torch.nn.Linear):
                continue  # e.g. no image projections in a T2V / TI2V transformer
            key = f"diffusion_model.blocks.{i}.{theirs}"
            tensors[f"{key}.lora_down.weight"] = (
                torch.randn(rank, module.in_features, generator=gen) / module.in_features**0.5
            ).contiguous()
            tensors[f"{key}.lora_up.weight"] = (torch.randn(module.out_features, rank, generator=gen) * scale).contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
            if bias_scale is not None:
                tensors[f"{key}.diff_b"] = (torch.randn(module.out_features, generator=gen) * bias_scale).contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return path


def make_tiny_wan_lora(
    path: str | os.PathLike, model: str = "wan21-i2v", rank: int = 4, seed: int = 11, scale: float = 0.5, bias_scale: float = 0.5
) -> Path:
    """Write a LoRA in the original Wan / ComfyUI key layout for the miniature ``model``'s
    transformer, with bias deltas, as CausVid and the lightx2v distill LoRAs ship them:
    ``diffusion_model.blocks.<i>.<self_attn|cross_attn>.<q|k|v|o>`` and ``ffn.0`` / ``ffn.2`` each
    with ``lora_down.weight`` (rank x in), ``lora_up.weight`` (out x rank), ``alpha`` (= rank) and
    ``diff_b`` (out,), the bias delta. All random (``scale`` / ``bias_scale`` set the size of the
    up factor and of the bias delta), so the LoRA changes the output. Returns ``path``.
    """
    return _write_wan_lora(path, build_tiny_pipeline(model).transformer, _WAN_LORA_NAMES, rank, seed, scale, bias_scale)


def make_tiny_distill_lora(
    path: str | os.PathLike,
    model: str = "wan21-i2v",
    expert: str = "transformer",
    rank: int = 4,
    seed: int = 11,
    scale: float = 0.3,
    transformer=None,
) -> Path:
    """Write a LoRA in the key format of the published Wan distillation LoRAs (lightx2v,
    Wan2.2-Lightning: original Wan module names, ``diffusion_model.blocks.<i>.<module>.lora_down /
    lora_up.weight`` and ``.alpha``) for the miniature ``model``'s ``expert`` (``transformer`` or
    ``transformer_2``), rank ``rank`` on every attention projection and FFN layer
    (:data:`_DISTILL_NAMES`), so diffusers' Wan LoRA conversion is exercised. Random factors
    (``scale`` sets the size of ``lora_up``); the weights are not a real distillation. A given
    ``transformer`` (a ``WanTransformer3DModel``) is used instead of the miniature. Returns ``path``.
    """
    if transformer is None:
        transformer = getattr(build_tiny_pipeline(model), expert)
    return _write_wan_lora(path, transformer, _DISTILL_NAMES, rank, seed, scale, None)


def make_all_tiny_models(
    directory: str | os.PathLike, kinds: tuple[str, ...] = ("wan", "rife", "esrgan", "single", "lora")
) -> dict[str, Path]:
    """Every miniature the ``tiny`` and ``tiny-fast`` presets use, under ``directory``: the Wan
    checkpoints (``<name>/``), RIFE (``rife/flownet.pkl|.safetensors``), Real-ESRGAN
    (``esrgan/*.pth``), the Wan miniatures as single files in a ComfyUI ``comfyui/models/`` tree
    (:mod:`wan_pipeline.models.tiny_single_file`) and the distillation LoRA (:data:`DISTILL_LORA`).
    Returns ``{name: path}``; existing files are kept."""
    from wan_pipeline.models.tiny_esrgan import make_tiny_esrgan
    from wan_pipeline.models.tiny_rife import make_tiny_rife_files

    root = Path(directory)
    written: dict[str, Path] = {}
    folders = make_tiny_models(root) if ("wan" in kinds or "single" in kinds) else {}
    if "wan" in kinds:
        written.update(folders)
    if "rife" in kinds:
        written.update({f"rife-{k}": v for k, v in make_tiny_rife_files(root / "rife").items()})
    if "esrgan" in kinds:
        written.update({f"esrgan-{k}": v for k, v in make_tiny_esrgan(root / "esrgan").items()})
    if "single" in kinds:
        from wan_pipeline.models.tiny_single_file import make_tiny_single_files

        written.update({f"file-{k}": v for k, v in make_tiny_single_files(root, folders).items()})
    if "lora" in kinds:
        lora = root / DISTILL_LORA
        written["distill-lora"] = lora if lora.is_file() else make_tiny_distill_lora(lora)
    return written


def ensure_tiny_models(storage_root: str | os.PathLike) -> dict[str, Path]:
    """Make every miniature of the ``tiny`` presets under ``<storage_root>/models/tiny`` where
    missing (the explicit step that ``wan-pipeline render`` takes for a preset whose models lie
    there; ``make-tiny-models`` does the same by hand). Returns ``{name: path}``."""
    return make_all_tiny_models(Path(storage_root) / "models" / "tiny")


def ensure_tiny_models_for(preset, storage_root: str | os.PathLike) -> dict[str, Path]:
    """:func:`ensure_tiny_models` when any stage of ``preset`` names a model under
    ``models/tiny/`` (the ``tiny`` presets) as its ``model`` or the clip stage's
    ``extension_model``; nothing otherwise. Returns what exists or was made."""
    sections = (preset.stages.model_extra or {}).values()
    models = [m for section in sections for m in (section.model, (section.model_extra or {}).get("extension_model"))]
    if any(isinstance(m, str) and Path(m).parts[:2] == ("models", "tiny") for m in models):
        return ensure_tiny_models(storage_root)
    return {}
