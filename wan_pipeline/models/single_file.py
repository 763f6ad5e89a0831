"""Single-file Wan checkpoints (ComfyUI / Wan2GP ``.safetensors``, ``.gguf``): what a file holds,
read from its tensor index only, never its weights.

A ``.safetensors`` file starts with an 8-byte little-endian header length and a JSON header naming
every tensor with its dtype and shape (safetensors format spec); a ``.gguf`` file lists its tensors'
names, ggml types and dims before the data (GGUF spec; read with the ``gguf`` package, which maps
the file without reading the data). From the shapes alone this module tells:

* the **key layout**: ``wan`` (the original Wan repository's names, ``blocks.0.self_attn.q.weight``),
  ``comfyui`` (the same names under ``model.diffusion_model.``), or ``diffusers``
  (``blocks.0.attn1.to_q.weight``);
* the **variant**: dims (``patch_embedding.weight``: hidden size × input channels), the number of
  blocks, CLIP image conditioning (``img_emb.*``, with ``img_emb.emb_pos`` for FLF2V), VACE blocks,
  the Animate motion encoder; matched against the shipped configs of the published checkpoints
  (:data:`CONFIGS_DIR`), so ``from_single_file`` gets a local ``config=`` and works offline;
* the **dtype** (fp32 / fp16 / bf16 / fp8 e4m3fn / fp8 e5m2, or the GGUF quantization types).

Files whose shapes are identical across variants are told apart by their file name only where
nothing else can (Wan2.1 I2V 480P vs 720P; Wan2.1 T2V-14B vs a Wan2.2 T2V-A14B expert; the A14B
high- vs low-noise expert), and the report says so.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from pydantic import BaseModel, Field

from wan_pipeline.errors import InputError

CONFIGS_DIR = Path(__file__).parent / "wan_configs"
"""Diffusers configs of the published Wan checkpoints (see its README for source and licence)."""
SINGLE_FILE_SUFFIXES = (".safetensors", ".gguf")
COMFY_PREFIX = "model.diffusion_model."
MAX_HEADER_BYTES = 100 * 1024 * 1024
"""A safetensors header larger than this is not a checkpoint (the spec caps it at 100 MB)."""

SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class TensorInfo(BaseModel):
    """One tensor of a file's index: name, shape (numpy order), dtype (torch-style name, or the
    GGUF type name such as ``Q8_0``)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    reshaped: bool = False
    """GGUF only: stored flattened, its shape from ComfyUI-GGUF's ``comfy.gguf.orig_shape.<name>``."""


def is_single_file(ref: str | Path) -> bool:
    """True when ``ref`` names a ``.safetensors`` or ``.gguf`` file (existing or not)."""
    return str(ref).lower().endswith(SINGLE_FILE_SUFFIXES)


def read_tensor_index(path: str | Path) -> dict[str, TensorInfo]:
    """``{name: TensorInfo}`` of a ``.safetensors`` (its JSON header) or ``.gguf`` (its tensor info)
    file, without reading any weight.

    Raises :class:`InputError` naming the file when it is missing, truncated or not in that format.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(str(p), "no such file: give the path of a .safetensors or .gguf checkpoint")
    if p.suffix.lower() == ".gguf":
        return _gguf_index(p)
    if p.suffix.lower() != ".safetensors":
        raise InputError(str(p), "a single-file checkpoint is a .safetensors or .gguf file (pickle .pt/.pth/.ckpt files are never loaded)")
    with p.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InputError(str(p), "file too short to be safetensors (no header): re-download it")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER_BYTES or size > p.stat().st_size - 8:
            raise InputError(str(p), f"safetensors header length {size} bytes is impossible: truncated or not a safetensors file")
        try:
            header = json.loads(fh.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(str(p), "safetensors header is not JSON: truncated or not a safetensors file; re-download it") from None
    out = {}
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        dtype = SAFETENSORS_DTYPES.get(str(entry.get("dtype")), str(entry.get("dtype")).lower())
        out[name] = TensorInfo(name=name, shape=tuple(int(s) for s in entry.get("shape", [])), dtype=dtype)
    return out


def _gguf_index(p: Path) -> dict[str, TensorInfo]:
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - gguf is a dependency
        raise InputError(str(p), "reading .gguf files needs the `gguf` package: pip install gguf") from None
    try:
        reader = GGUFReader(str(p))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise InputError(str(p), f"not a readable GGUF file ({type(exc).__name__}: {exc}); re-download it") from None
    out = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))  # ggml dims are innermost-first
        orig = reader.get_field(f"comfy.gguf.orig_shape.{t.name}")
        if orig is not None:
            shape = tuple(int(orig.parts[i][0]) for i in orig.data)
        out[t.name] = TensorInfo(name=t.name, shape=shape, dtype=t.tensor_type.name, reshaped=orig is not None)
    return out


# -- layout and dims --------------------------------------------------------------------------

# Tensor names in each layout for the few tensors the detection reads.
_NAMES = {
    "wan": {
        "patch": "patch_embedding.weight",
        "head": "head.head.weight",
        "ffn": "blocks.0.ffn.0.weight",
        "text": "text_embedding.0.weight",
        "time": "time_embedding.0.weight",
        "img_norm": "img_emb.proj.0.weight",
        "img_pos": "img_emb.emb_pos",
        "vace_patch": "vace_patch_embedding.weight",
        "motion": "motion_encoder.dec.direction.weight",
    },
    "diffusers": {
        "patch": "patch_embedding.weight",
        "head": "proj_out.weight",
        "ffn": "blocks.0.ffn.net.0.proj.weight",
        "text": "condition_embedder.text_embedder.linear_1.weight",
        "time": "condition_embedder.time_embedder.linear_1.weight",
        "img_norm": "condition_embedder.image_embedder.norm1.weight",
        "img_pos": "condition_embedder.image_embedder.pos_embed",
        "vace_patch": "vace_patch_embedding.weight",
        "motion": "motion_encoder.motion_synthesis_weight",
    },
}


class TransformerShape(BaseModel):
    """What a Wan denoiser file is, from its tensor shapes.

    layout: ``wan`` / ``comfyui`` / ``diffusers``; dims in channels / features; ``vace_layers``:
    number of VACE blocks; ``dtypes``: tensor count per dtype; ``scaled_fp8``: ComfyUI's
    ``fp8_scaled`` files (per-tensor ``scale_weight`` factors), which diffusers cannot load.
    """

    layout: str
    num_layers: int
    hidden_dim: int
    in_channels: int
    out_channels: int
    ffn_dim: int
    text_dim: int
    freq_dim: int
    image_dim: int | None = None
    pos_embed_seq_len: int | None = None
    vace_layers: int = 0
    vace_in_channels: int | None = None
    animate: bool = False
    dtypes: dict[str, int] = Field(default_factory=dict)
    scaled_fp8: bool = False
    reshaped: list[str] = Field(default_factory=list)
    parameters: int = 0

    @property
    def dtype(self) -> str:
        """The dtype holding most of the file's elements' tensors (``float8_e4m3fn`` for an fp8
        file even though its norms stay in higher precision)."""
        return max(self.dtypes, key=lambda d: (self.dtypes[d], d)) if self.dtypes else "unknown"


def transformer_shape(index: dict[str, TensorInfo], file: str = "") -> TransformerShape:
    """Read layout and dims of a Wan denoiser from a tensor index (see :func:`read_tensor_index`).

    Raises :class:`InputError` when the file holds no Wan denoiser (e.g. a VAE, a text encoder, a
    LoRA), naming what it looks like instead.
    """
    prefixed = any(k.startswith(COMFY_PREFIX) for k in index)
    keys = {k[len(COMFY_PREFIX) :] if k.startswith(COMFY_PREFIX) else k: v for k, v in index.items()}
    if "blocks.0.self_attn.q.weight" in keys:
        layout, names = ("comfyui" if prefixed else "wan"), _NAMES["wan"]
    elif "blocks.0.attn1.to_q.weight" in keys:
        layout, names = "diffusers", _NAMES["diffusers"]
    else:
        raise InputError(
            file,
            f"no Wan transformer in this file ({_looks_like(keys)}); give the diffusion model file (ComfyUI: models/diffusion_models/)",
        )
    if names["patch"] not in keys or names["head"] not in keys:
        raise InputError(
            file, "a Wan transformer file without patch_embedding / head tensors: truncated or a partial export; re-download it"
        )

    def shape(role: str) -> tuple[int, ...] | None:
        t = keys.get(names[role])
        return t.shape if t is not None else None

    patch = shape("patch")  # (dim, in_channels, 1, 2, 2)
    head = shape("head")  # (out_channels * prod(patch), dim)
    patch_elems = 1
    for d in patch[2:]:
        patch_elems *= d
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    vace = {int(m.group(1)) for k in keys if (m := re.match(r"vace_blocks\.(\d+)\.", k))}
    img_norm, img_pos, vace_patch = shape("img_norm"), shape("img_pos"), shape("vace_patch")
    dtypes: dict[str, int] = {}
    params = 0
    for t in keys.values():
        n = 1
        for d in t.shape:
            n *= d
        params += n
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + n
    return TransformerShape(
        layout=layout,
        num_layers=len(blocks),
        hidden_dim=patch[0],
        in_channels=patch[1],
        out_channels=head[0] // max(1, patch_elems),
        ffn_dim=(shape("ffn") or (0,))[0],
        text_dim=(shape("text") or (0, 0))[1],
        freq_dim=(shape("time") or (0, 0))[1],
        image_dim=img_norm[0] if img_norm else None,
        pos_embed_seq_len=img_pos[1] if img_pos else None,
        vace_layers=len(vace),
        vace_in_channels=vace_patch[1] if vace_patch else None,
        animate=names["motion"] in keys,
        dtypes=dtypes,
        scaled_fp8=any(k.endswith("scale_weight") for k in keys),
        reshaped=sorted(k for k, t in keys.items() if t.reshaped),
        parameters=params,
    )


def _looks_like(keys: dict) -> str:
    if any(k.startswith(("encoder.downsamples", "decoder.upsamples", "encoder.down_blocks", "decoder.up_blocks")) for k in keys):
        return "it looks like a VAE: give it as `vae:`"
    if any(k.startswith(("encoder.block.", "shared.")) for k in keys):
        return "it looks like a T5 text encoder: give it as `text_encoder:`"
    if any(k.startswith(("vision_model.", "visual.")) for k in keys):
        return "it looks like a CLIP vision encoder: give it as `image_encoder:`"
    if any("lora_" in k or ".diff" in k for k in keys):
        return "it looks like a LoRA: list it under `loras:`"
    return f"{len(keys)} tensors, none named like a Wan transformer's"


# -- matching the shipped configs --------------------------------------------------------------


def shipped_configs() -> dict[str, Path]:
    """``{folder name: folder}`` of the shipped diffusers configs (:data:`CONFIGS_DIR`)."""
    return {p.name: p for p in sorted(CONFIGS_DIR.iterdir()) if (p / "model_index.json").is_file()}


def _config_signature(cfg: dict) -> tuple:
    heads, head_dim = cfg.get("num_attention_heads", 40), cfg.get("attention_head_dim", 128)
    return (
        cfg.get("num_layers", 40),
        heads * head_dim,
        cfg.get("in_channels", 16),
        cfg.get("out_channels", 16),
        cfg.get("ffn_dim", 13824),
        cfg.get("image_dim"),
        cfg.get("pos_embed_seq_len"),
        len(cfg.get("vace_layers") or []),
        "Animate" in str(cfg.get("_class_name")),
    )


def _shape_signature(s: TransformerShape) -> tuple:
    return (
        s.num_layers,
        s.hidden_dim,
        s.in_channels,
        s.out_channels,
        s.ffn_dim,
        s.image_dim,
        s.pos_embed_seq_len,
        s.vace_layers,
        s.animate,
    )


def matching_configs(shape: TransformerShape) -> list[str]:
    """Names of the shipped config folders whose transformer has exactly these dims."""
    out = []
    for name, folder in shipped_configs().items():
        for sub in ("transformer", "transformer_2"):
            cfg_file = folder / sub / "config.json"
            if cfg_file.is_file() and _config_signature(json.loads(cfg_file.read_text())) == _shape_signature(shape):
                out.append(name)
                break
    return out


def expert_from_name(name: str) -> str | None:
    """``transformer`` (high-noise expert) / ``transformer_2`` (low-noise) from a Wan2.2 A14B file
    name (``…high_noise…`` / ``…low_noise…``), None when the name says neither."""
    low = name.lower()
    if re.search(r"high[_-]?noise", low):
        return "transformer"
    if re.search(r"low[_-]?noise", low):
        return "transformer_2"
    return None


def pick_config(shape: TransformerShape, file_name: str) -> tuple[str | None, list[str]]:
    """(shipped config folder name or None, notes) for a transformer file: the single match, or
    among identical-shape candidates the one the file name points to (``wan2.2`` / ``high_noise`` /
    ``low_noise`` → the A14B model, ``480p`` / ``720p`` → the I2V tier)."""
    candidates = matching_configs(shape)
    notes: list[str] = []
    if len(candidates) <= 1:
        return (candidates[0] if candidates else None), notes
    low = file_name.lower()
    wan22 = "wan2.2" in low or "wan22" in low or expert_from_name(low) is not None
    narrowed = [c for c in candidates if c.startswith("Wan2.2") == wan22] or candidates
    tier = re.search(r"(480|720)p", low)
    if tier and len(narrowed) > 1:
        narrowed = [c for c in narrowed if f"{tier.group(1)}P" in c] or narrowed
    choice = narrowed[0]
    notes.append(
        f"shapes match {', '.join(candidates)}; chose {choice} from the file name"
        if len(narrowed) < len(candidates) or tier
        else f"shapes match {', '.join(candidates)} (identical configs); chose {choice}; rename the file to say which"
    )
    return choice, notes


# -- the report -------------------------------------------------------------------------------


def inspect_file_report(path: str | Path) -> dict:
    """What a single-file Wan transformer is (JSON-serialisable), from its tensor index only.

    Keys: ``model``, ``source``, ``format`` (safetensors / gguf), ``layout``, ``dtype`` (of most
    weights) and ``dtypes`` (elements per dtype), ``scaled_fp8``, ``variant``, ``family``, ``size``,
    ``miniature``, ``config`` (shipped config folder or None), ``expert`` (A14B: transformer /
    transformer_2), ``pipeline_class``, ``capabilities``, ``fps``, ``max_frames``, ``native_sizes``,
    ``flow_shift``, ``vae_z_dim``, ``transformer_config`` (dims read), ``parameters``,
    ``size_bytes``, ``loadable`` and ``problems``, ``notes``. Raises :class:`InputError` for a file
    that is missing, unreadable or holds no Wan transformer.
    """
    from wan_pipeline.models.variants import identify

    p = Path(path).expanduser().resolve()
    index = read_tensor_index(p)
    shape = transformer_shape(index, str(p))
    config, notes = pick_config(shape, p.name)
    ckpt = checkpoint_for_shape(shape, p.name, config)
    info = identify(ckpt)
    problems = file_problems(shape, p)
    expert = None
    if info.experts == 2 or (config and (CONFIGS_DIR / config / "transformer_2").is_dir()):
        expert = expert_from_name(p.name)
        notes.append(
            f"one expert of a two-expert model: {'high-noise (transformer)' if expert == 'transformer' else 'low-noise (transformer_2)' if expert else 'which one is not in the file name; give the high-noise file as model: and the low-noise file as model_2:'}"
        )
    report = {
        "model": str(path),
        "source": str(p),
        "format": p.suffix.lower().lstrip("."),
        "layout": shape.layout,
        "dtype": shape.dtype,
        "dtypes": shape.dtypes,
        "scaled_fp8": shape.scaled_fp8,
        "config": config,
        "expert": expert,
    }
    report.update(
        info.model_dump(
            include={
                "variant",
                "family",
                "size",
                "miniature",
                "pipeline_class",
                "capabilities",
                "fps",
                "max_frames",
                "flow_shift",
                "vae_z_dim",
                "size_multiple",
            }
        )
    )
    if config is None and not info.miniature:
        notes.append("no shipped config matches these dims: give a diffusers folder of the same model as `components:`")
    if info.miniature:
        notes.append("miniature test checkpoint: give its diffusers folder as `components:` (the configs of the same weights)")
    report.update(
        native_sizes=[list(s) for s in info.native_sizes],
        transformer_config=shape.model_dump(exclude={"dtypes", "scaled_fp8", "reshaped", "parameters", "layout"}),
        parameters=shape.parameters,
        size_bytes=p.stat().st_size,
        loadable=not problems,
        problems=problems,
        notes=notes + info.notes,
    )
    return report


def file_problems(shape: TransformerShape, path: Path) -> list[str]:
    """Reasons diffusers cannot load this transformer file (empty: loadable)."""
    out = []
    if shape.scaled_fp8:
        out.append(
            f"{path.name} is a ComfyUI 'fp8_scaled' file (per-tensor scale_weight factors), which diffusers cannot load: "
            "use the fp16 / bf16 / plain fp8_e4m3fn file or a GGUF quantization of the same model"
        )
    if shape.reshaped:
        out.append(
            f"{path.name} stores {len(shape.reshaped)} tensors flattened with ComfyUI-GGUF's orig_shape metadata "
            f"(e.g. {shape.reshaped[0]}), which diffusers' GGUF loader does not read: use a GGUF without it or the safetensors file"
        )
    if path.suffix.lower() == ".gguf":
        try:
            import gguf  # noqa: F401
        except ImportError:  # pragma: no cover - gguf is a dependency
            out.append("loading .gguf files needs the `gguf` package: pip install gguf")
    return out


def checkpoint_for_shape(shape: TransformerShape, name: str, config: str | None):
    """A :class:`~wan_pipeline.models.checkpoint.Checkpoint` describing the file: the shipped config
    folder's (``ref`` = the file name, so name-only facts such as the I2V tier are read from it), or
    for unmatched dims one built from the shapes (heads unknown: head dim 128 when the hidden size
    allows, as in every published Wan model)."""
    from wan_pipeline.models.checkpoint import Checkpoint, read_checkpoint
    from wan_pipeline.models.configs import ModelIndex, TransformerConfig

    if config is not None:
        # the whole model the file belongs to (both experts of an A14B: its ``expert`` is reported apart)
        return read_checkpoint(CONFIGS_DIR / config).model_copy(update={"ref": name})
    head_dim = 128 if shape.hidden_dim % 128 == 0 else shape.hidden_dim
    transformer = TransformerConfig(
        _class_name="WanVACETransformer3DModel"
        if shape.vace_layers
        else "WanAnimateTransformer3DModel"
        if shape.animate
        else "WanTransformer3DModel",
        num_attention_heads=shape.hidden_dim // head_dim,
        attention_head_dim=head_dim,
        in_channels=shape.in_channels,
        out_channels=shape.out_channels,
        text_dim=shape.text_dim,
        freq_dim=shape.freq_dim,
        ffn_dim=shape.ffn_dim,
        num_layers=shape.num_layers,
        image_dim=shape.image_dim,
        pos_embed_seq_len=shape.pos_embed_seq_len,
        vace_layers=list(range(shape.vace_layers)) or None,
        vace_in_channels=shape.vace_in_channels,
    )
    cls = "WanVACEPipeline" if shape.vace_layers else "WanImageToVideoPipeline" if shape.in_channels > shape.out_channels else "WanPipeline"
    index = ModelIndex.from_json({"_class_name": cls, "transformer": ["diffusers", transformer.class_name]})
    return Checkpoint(ref=name, source=name, index=index, components={}, transformer=transformer)
