"""Pydantic models of the JSON configs in a diffusers checkpoint folder (never the weights).

Defaults are those of the diffusers classes' ``__init__`` (diffusers 0.42.1:
``WanTransformer3DModel``, ``AutoencoderKLWan``), because older files omit keys that newer
diffusers versions write (e.g. ``pos_embed_seq_len``, ``scale_factor_spatial``). Unknown keys are
kept (``extra="allow"``): a config written by another diffusers version (e.g. the Wan2.2 VAE's
``clip_output``) must still be readable.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ComponentEntry(BaseModel):
    """One ``model_index.json`` component: ``[library, class]``, both None for a component saved as None."""

    model_config = ConfigDict(frozen=True)

    name: str
    library: str | None
    class_name: str | None

    @property
    def present(self) -> bool:
        return self.library is not None and self.class_name is not None


class ModelIndex(BaseModel):
    """``model_index.json``: the pipeline class, its components and its registered config values.

    boundary_ratio: fraction of ``num_train_timesteps`` above which the high-noise expert
    (``transformer``) runs and below which ``transformer_2`` runs (Wan2.2 A14B: 0.875 T2V, 0.9 I2V).
    expand_timesteps: Wan2.2 TI2V-5B conditions the first frame through per-token timesteps.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_name: str = Field(alias="_class_name")
    diffusers_version: str | None = Field(None, alias="_diffusers_version")
    components: dict[str, ComponentEntry] = Field(default_factory=dict)
    boundary_ratio: float | None = None
    expand_timesteps: bool | None = None

    @classmethod
    def from_json(cls, data: dict) -> ModelIndex:
        """Split a parsed ``model_index.json`` into components (2-lists) and config values."""
        components, values = {}, {}
        for key, value in data.items():
            if not key.startswith("_") and isinstance(value, list) and len(value) == 2:
                components[key] = ComponentEntry(name=key, library=value[0], class_name=value[1])
            else:
                values[key] = value
        return cls.model_validate({**values, "components": components})

    def component(self, name: str) -> ComponentEntry | None:
        return self.components.get(name)

    def has(self, name: str) -> bool:
        entry = self.components.get(name)
        return bool(entry and entry.present)


class TransformerConfig(BaseModel):
    """``transformer/config.json`` of a Wan denoiser (``WanTransformer3DModel`` and its VACE /
    Animate subclasses).

    hidden size = ``num_attention_heads × attention_head_dim``; ``in_channels`` is the VAE
    ``z_dim`` for text-to-video, ``2 × z_dim + 4`` for image-to-video (noise + 4 mask channels +
    condition latents: ``prepare_latents`` of diffusers' ``pipeline_wan_i2v.py``).
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_name: str = Field("WanTransformer3DModel", alias="_class_name")
    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 40
    attention_head_dim: int = 128
    in_channels: int = 16
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    image_dim: int | None = None
    added_kv_proj_dim: int | None = None
    rope_max_seq_len: int = 1024
    pos_embed_seq_len: int | None = None
    vace_layers: list[int] | None = None
    vace_in_channels: int | None = None

    @property
    def hidden_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


class VaeConfig(BaseModel):
    """``vae/config.json`` of ``AutoencoderKLWan``.

    z_dim: latent channels (16 for the Wan2.1 VAE, 48 for the Wan2.2 VAE of TI2V-5B).
    scale_factor_spatial: pixels per latent cell side (8, or 16 for the Wan2.2 VAE, whose
    ``patch_size`` 2 folds 2×2 pixels into channels); scale_factor_temporal: frames per latent frame (4).
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_name: str = Field("AutoencoderKLWan", alias="_class_name")
    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: list[int] = [1, 2, 4, 4]
    num_res_blocks: int = 2
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int | None = 4
    scale_factor_spatial: int | None = 8

    @property
    def spatial_factor(self) -> int:
        return int(self.scale_factor_spatial or 8)

    @property
    def temporal_factor(self) -> int:
        return int(self.scale_factor_temporal or 4)


class SchedulerConfig(BaseModel):
    """``scheduler/scheduler_config.json`` (UniPC with ``flow_shift``, or flow-match Euler with ``shift``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    class_name: str = Field(alias="_class_name")
    num_train_timesteps: int = 1000
    prediction_type: str | None = None
    flow_shift: float | None = None
    shift: float | None = None
    use_flow_sigmas: bool | None = None

    @property
    def effective_shift(self) -> float | None:
        return self.flow_shift if self.flow_shift is not None else self.shift
