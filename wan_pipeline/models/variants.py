"""Which Wan model a checkpoint is, decided from its component configs (never the folder name).

Decision (transformer config ``t``, VAE config ``v``, ``model_index.json``):

* experts = 2 when ``transformer_2`` is listed non-null **and** its config was read (a
  ``boundary_ratio`` alone does not make two experts: diffusers' conversion script writes one
  for single-expert models too);
* ``WanAnimateTransformer3DModel`` → Wan2.2-Animate; ``vace_layers`` set → VACE (Wan2.2-VACE-Fun
  with two experts, else Wan2.1-VACE);
* ``v.z_dim == 48`` and ``t.in_channels == 48`` → Wan2.2-TI2V;
* ``t.in_channels == 2·z_dim + 4`` (image-to-video): ``image_dim`` set (CLIP image tokens) →
  Wan2.1, with ``pos_embed_seq_len`` set → FLF2V, else I2V; ``image_dim`` null → Wan2.2-I2V;
* otherwise text-to-video: Wan2.2-T2V with two experts, else Wan2.1-T2V.

Size class from the transformer dims (layers / hidden size): 30/1536 → 1.3B, 40/5120 → 14B
(A14B with two experts), 30/3072 → 5B; ≤ 4 layers and head dim ≤ 32 → ``miniature`` (random-weight
test checkpoints built from the same classes); anything else → ``custom``. Wan2.1 I2V-14B 480P and
720P have identical configs (checked: the published files do not differ), so their resolution
tier is the only thing taken from the name, and reported as such.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from wan_pipeline.models.checkpoint import Checkpoint

CAPABILITIES = ("T2V", "I2V", "FLF2V", "T2I", "VACE", "TI2V")
FRAME_STEP = 4
"""Wan generates 4k+1 frames: the VAE compresses 4 frames per latent frame after the first
(``scale_factor_temporal`` 4; diffusers docs ``wan.md``: "num_frames should be 4k+1")."""

# Native frame rate, frame limit and sizes (W, H) per family and size class.
# Sources: Wan2.1 model cards / repo (Wan-AI/Wan2.1-*: 480P and 720P for 14B, 480P for 1.3B,
# 81 frames at 16 fps, `sample_fps = 16` in its configs); Wan2.2 model card and repo configs
# (TI2V-5B: 1280×704 or 704×1280, 121 frames at 24 fps; A14B: 480P and 720P, 81 frames, 16 fps);
# Wan2.2-Animate: diffusers docs (fps 30, 77-frame segments, 1280×720).
P480, P720, TI2V_SIZES = [(832, 480), (480, 832)], [(1280, 720), (720, 1280)], [(1280, 704), (704, 1280)]
FAMILY_FACTS: dict[str, dict] = {
    "Wan2.1-T2V": {"fps": 16, "max_frames": 81, "sizes": {"1.3B": P480, "14B": P480 + P720}},
    "Wan2.1-I2V": {"fps": 16, "max_frames": 81, "sizes": {"14B": P480 + P720, "480P": P480, "720P": P720}},
    "Wan2.1-FLF2V": {"fps": 16, "max_frames": 81, "sizes": {"14B": P720}},
    "Wan2.1-VACE": {"fps": 16, "max_frames": 81, "sizes": {"1.3B": P480, "14B": P480 + P720}},
    "Wan2.2-TI2V": {"fps": 24, "max_frames": 121, "sizes": {"5B": TI2V_SIZES}},
    "Wan2.2-T2V": {"fps": 16, "max_frames": 81, "sizes": {"A14B": P480 + P720}},
    "Wan2.2-I2V": {"fps": 16, "max_frames": 81, "sizes": {"A14B": P480 + P720}},
    "Wan2.2-VACE-Fun": {"fps": 16, "max_frames": 81, "sizes": {"A14B": P480 + P720}},
    "Wan2.2-Animate": {"fps": 30, "max_frames": 77, "sizes": {"14B": P720}},
}
FAMILY_CAPABILITIES: dict[str, list[str]] = {
    "Wan2.1-T2V": ["T2V", "T2I"],
    "Wan2.1-I2V": ["I2V"],
    "Wan2.1-FLF2V": ["I2V", "FLF2V"],
    "Wan2.1-VACE": ["VACE"],
    "Wan2.2-TI2V": ["T2V", "I2V", "TI2V", "T2I"],
    "Wan2.2-T2V": ["T2V", "T2I"],
    "Wan2.2-I2V": ["I2V", "FLF2V"],
    "Wan2.2-VACE-Fun": ["VACE"],
    "Wan2.2-Animate": [],
}
CAPABILITY_PIPELINES = {
    "T2V": "WanPipeline",
    "T2I": "WanPipeline",
    "I2V": "WanImageToVideoPipeline",
    "FLF2V": "WanImageToVideoPipeline",
    "TI2V": "WanImageToVideoPipeline",
    "VACE": "WanVACEPipeline",
}
FAMILY_NOTES: dict[str, str] = {
    "Wan2.1-I2V": "Wan2.1 I2V-14B 480P and 720P have identical configs; the resolution tier comes from the name only",
    "Wan2.2-I2V": "FLF2V through WanImageToVideoPipeline(last_image=...); not a separately trained FLF2V model",
    "Wan2.2-Animate": "character animation/replacement (WanAnimatePipeline); no stage of this project uses it",
    "Wan2.2-TI2V": "published as WanPipeline (text-to-video); load WanImageToVideoPipeline from the same folder for I2V",
}


class ModelInfo(BaseModel):
    """What a checkpoint is and what the stages can do with it.

    fps: native frame rate (frames/s); max_frames: frames per generation; valid frame counts are
    ``4k+1`` up to ``max_frames``; size_multiple: width and height must be multiples of it
    (VAE spatial factor × transformer patch size, pixels); native_sizes: (width, height) pairs
    the model was trained at.
    """

    variant: str
    family: str
    size: str
    miniature: bool
    pipeline_class: str
    pipeline_classes: dict[str, str] = Field(default_factory=dict)
    capabilities: list[str] = Field(default_factory=list)
    experts: int = 1
    boundary_ratio: float | None = None
    expand_timesteps: bool = False
    vae_z_dim: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    frame_step: int = FRAME_STEP
    size_multiple: int | None = None
    native_sizes: list[tuple[int, int]] = Field(default_factory=list)
    flow_shift: float | None = None
    transformer: dict | None = None
    notes: list[str] = Field(default_factory=list)

    def valid_frames(self, frames: int) -> int:
        """The nearest valid frame count (4k+1, at least 1, at most ``max_frames``) to ``frames``."""
        k = max(0, int((frames - 1) / self.frame_step + 0.5))  # ties round up
        n = k * self.frame_step + 1
        if self.max_frames:
            n = min(n, (self.max_frames - 1) // self.frame_step * self.frame_step + 1)
        return n


def size_class(t) -> str:
    """``1.3B`` / ``14B`` / ``5B`` / ``miniature`` / ``custom`` from a transformer config's dims."""
    dims = (t.num_layers, t.hidden_dim)
    if t.num_layers <= 4 and t.attention_head_dim <= 32:
        return "miniature"
    return {(30, 1536): "1.3B", (40, 5120): "14B", (30, 3072): "5B"}.get(dims, "custom")


def _family(ckpt: Checkpoint, t, experts: int) -> str:
    z = ckpt.vae.z_dim if ckpt.vae else t.out_channels
    temporal = ckpt.vae.temporal_factor if ckpt.vae else 4
    if "Animate" in t.class_name:
        return "Wan2.2-Animate"
    if t.vace_layers:
        return "Wan2.2-VACE-Fun" if experts == 2 else "Wan2.1-VACE"
    if z == 48 and t.in_channels == 48:
        return "Wan2.2-TI2V"
    if t.in_channels == 2 * z + temporal:
        if t.image_dim:
            return "Wan2.1-FLF2V" if t.pos_embed_seq_len else "Wan2.1-I2V"
        return "Wan2.2-I2V"
    return "Wan2.2-T2V" if experts == 2 else "Wan2.1-T2V"


def _text_to_image_classes() -> set[str]:
    try:
        from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING
    except Exception:  # pragma: no cover - very old diffusers
        return set()
    return {cls.__name__ for cls in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values()}


def identify(ckpt: Checkpoint) -> ModelInfo:
    """Identify the checkpoint's variant from its configs (see the module docstring).

    A non-Wan pipeline is reported as family ``other`` with ``T2I`` when diffusers'
    ``AutoPipelineForText2Image`` knows its class.
    """
    cls = ckpt.index.class_name
    t = ckpt.transformer or ckpt.transformer_2
    if not cls.startswith("Wan") or t is None:
        caps = ["T2I"] if cls in _text_to_image_classes() else []
        return ModelInfo(
            variant=cls,
            family="other",
            size="unknown",
            miniature=False,
            pipeline_class=cls,
            pipeline_classes={c: cls for c in caps},
            capabilities=caps,
            flow_shift=ckpt.scheduler.effective_shift if ckpt.scheduler else None,
        )

    experts = int(ckpt.transformer is not None) + int(ckpt.transformer_2 is not None)
    family = _family(ckpt, t, experts)
    size = size_class(t)
    if size == "14B" and family.startswith("Wan2.2") and family != "Wan2.2-Animate":
        size = "A14B"
    variant = f"{family}-{size}"
    notes = [FAMILY_NOTES[family]] if family in FAMILY_NOTES else []
    facts = FAMILY_FACTS[family]
    sizes = facts["sizes"].get(size, [])
    if family == "Wan2.1-I2V" and size == "14B":
        tier = re.search(r"(480|720)p", ckpt.name_hint, re.IGNORECASE)
        if tier:
            variant += f"-{tier.group(1)}P"
            sizes = facts["sizes"][f"{tier.group(1)}P"]
    if family == "Wan2.1-FLF2V" and size == "14B":
        variant += "-720P"
    if experts == 1 and family in ("Wan2.2-I2V", "Wan2.2-T2V", "Wan2.2-VACE-Fun"):
        notes.append("only one of the two experts is present")
    if experts == 2 and ckpt.index.boundary_ratio is None:
        notes.append("two experts but no boundary_ratio in model_index.json: diffusers would never switch expert")

    caps = list(FAMILY_CAPABILITIES[family])
    patch = t.patch_size[1]
    spatial = ckpt.vae.spatial_factor if ckpt.vae else 8
    return ModelInfo(
        variant=variant,
        family=family,
        size=size,
        miniature=size == "miniature",
        pipeline_class=cls,
        pipeline_classes={c: CAPABILITY_PIPELINES[c] for c in caps} or ({"Animate": cls} if "Animate" in cls else {}),
        capabilities=caps,
        experts=experts,
        boundary_ratio=ckpt.index.boundary_ratio if experts == 2 or ckpt.index.boundary_ratio is not None else None,
        expand_timesteps=bool(ckpt.index.expand_timesteps) or family == "Wan2.2-TI2V",
        vae_z_dim=ckpt.vae.z_dim if ckpt.vae else None,
        fps=facts["fps"],
        max_frames=facts["max_frames"],
        size_multiple=spatial * patch,
        native_sizes=sizes,
        flow_shift=ckpt.scheduler.effective_shift if ckpt.scheduler else None,
        transformer={
            "class": t.class_name,
            "num_layers": t.num_layers,
            "hidden_dim": t.hidden_dim,
            "num_attention_heads": t.num_attention_heads,
            "attention_head_dim": t.attention_head_dim,
            "ffn_dim": t.ffn_dim,
            "in_channels": t.in_channels,
            "out_channels": t.out_channels,
            "image_dim": t.image_dim,
            "pos_embed_seq_len": t.pos_embed_seq_len,
            "vace_layers": len(t.vace_layers) if t.vace_layers else 0,
        },
        notes=notes,
    )
