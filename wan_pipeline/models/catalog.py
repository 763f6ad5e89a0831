"""The published Wan diffusers checkpoints, described by their architecture configs.

Used when a preset names a Hugging Face repo that is not downloaded yet, so ``doctor`` can still
say what the model is and how much memory it needs (and give the download command). Only the
keys that differ from the class defaults and decide detection and parameter counts are listed;
values are those of diffusers' conversion script ``scripts/convert_wan_to_diffusers.py`` (see
``shared/reference/wan-configs/README.md``); tests check each entry against the published
configs (same variant, same parameter counts).
"""

from __future__ import annotations

from wan_pipeline.models.checkpoint import Checkpoint, ComponentInfo, parse_component_configs
from wan_pipeline.models.configs import ModelIndex

_T = {
    "_class_name": "WanTransformer3DModel",
    "patch_size": [1, 2, 2],
    "attention_head_dim": 128,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-06,
    "rope_max_seq_len": 1024,
    "in_channels": 16,
    "out_channels": 16,
}
_T13 = {**_T, "num_attention_heads": 12, "num_layers": 30, "ffn_dim": 8960}
_T14 = {**_T, "num_attention_heads": 40, "num_layers": 40, "ffn_dim": 13824}
_T5 = {**_T, "num_attention_heads": 24, "num_layers": 30, "ffn_dim": 14336, "in_channels": 48, "out_channels": 48}
_I2V21 = {**_T14, "in_channels": 36, "image_dim": 1280, "added_kv_proj_dim": 5120}
_VACE = {"_class_name": "WanVACETransformer3DModel", "vace_in_channels": 96}
_VAE21 = {
    "_class_name": "AutoencoderKLWan",
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}
_VAE22 = {
    **_VAE21,
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "is_residual": True,
    "in_channels": 12,
    "out_channels": 12,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
    "latents_mean": [0.0] * 48,
    "latents_std": [1.0] * 48,
}
_TEXT = {"text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"]}
_CLIP = {"image_encoder": ["transformers", "CLIPVisionModelWithProjection"], "image_processor": ["transformers", "CLIPImageProcessor"]}

# repo id → (pipeline class, extra model_index values, transformer config, transformer_2 config or None,
#            vae config, flow_shift)
KNOWN: dict[str, tuple] = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": ("WanPipeline", {}, _T13, None, _VAE21, 3.0),
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": ("WanPipeline", {}, _T14, None, _VAE21, 3.0),
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": ("WanImageToVideoPipeline", _CLIP, _I2V21, None, _VAE21, 3.0),
    "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers": ("WanImageToVideoPipeline", _CLIP, _I2V21, None, _VAE21, 3.0),
    "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers": ("WanImageToVideoPipeline", _CLIP, {**_I2V21, "pos_embed_seq_len": 514}, None, _VAE21, 16.0),
    "Wan-AI/Wan2.1-VACE-1.3B-diffusers": (
        "WanVACEPipeline",
        {},
        {**_T13, **_VACE, "vace_layers": list(range(0, 30, 2))},
        None,
        _VAE21,
        3.0,
    ),
    "Wan-AI/Wan2.1-VACE-14B-diffusers": ("WanVACEPipeline", {}, {**_T14, **_VACE, "vace_layers": list(range(0, 40, 5))}, None, _VAE21, 3.0),
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": ("WanPipeline", {"boundary_ratio": 0.875, "expand_timesteps": False}, _T14, _T14, _VAE21, 3.0),
    "Wan-AI/Wan2.2-I2V-A14B-Diffusers": (
        "WanImageToVideoPipeline",
        {"boundary_ratio": 0.9},
        {**_T14, "in_channels": 36},
        {**_T14, "in_channels": 36},
        _VAE21,
        3.0,
    ),
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": ("WanPipeline", {"boundary_ratio": None, "expand_timesteps": True}, _T5, None, _VAE22, 5.0),
}


def catalog_checkpoint(repo_id: str) -> Checkpoint | None:
    """A configs-only :class:`Checkpoint` for a known published repo (no files on disk), or None."""
    entry = KNOWN.get(repo_id)
    if entry is None:
        return None
    pipeline, extra, t1, t2, vae, shift = entry
    index = {
        "_class_name": pipeline,
        **_TEXT,
        **extra,
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "transformer": ["diffusers", t1["_class_name"]],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    if t2 is not None:
        index["transformer_2"] = ["diffusers", t2["_class_name"]]
    configs = {
        "transformer": t1,
        "transformer_2": t2,
        "vae": vae,
        "scheduler": {
            "_class_name": "UniPCMultistepScheduler",
            "flow_shift": shift,
            "prediction_type": "flow_prediction",
            "use_flow_sigmas": True,
        },
    }
    mi = ModelIndex.from_json(index)
    components = {
        name: ComponentInfo(
            name=name, library=e.library, class_name=e.class_name, folder_exists=False, has_config=False, config=configs.get(name)
        )
        for name, e in mi.components.items()
        if e.present
    }
    return parse_component_configs(
        Checkpoint(ref=repo_id, source=f"catalogue:{repo_id}", index=mi, components=components), f"catalogue:{repo_id}"
    )
