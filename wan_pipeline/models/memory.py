"""Memory planning: parameter counts from configs, weight bytes, activation estimates, and the
offload strategy that fits a GPU.

Parameter counts come from instantiating each component's diffusers/transformers class from its
config on the ``meta`` device (no memory, no weights), cached per config.

Estimates (MiB = 2**20 bytes; b = bytes per element of the dtype):

* weights of a component = params × b (VAE and image encoder in float32, as the diffusers Wan
  examples load them; denoisers and text encoder in the stage ``dtype``);
* latent tokens ``L = ((frames − 1) / t + 1) × (H / (s·p)) × (W / (s·p))`` with VAE temporal
  factor t = 4, spatial factor s (8 Wan2.1 VAE, 16 Wan2.2 VAE) and patch p = 2; e.g. Wan2.1 at
  832×480, 81 frames: 21 × 30 × 52 = 32 760 tokens;
* denoiser activations ``A_t = L × (6·d + f) × b`` (d hidden size, f FFN size): residual stream,
  norm output, q/k/v and attention output (≈ 6·d per token) plus the FFN hidden layer; attention
  runs through fused SDPA, so there is no L² term; classifier-free guidance runs the two passes
  one after the other (batch 1);
* VAE decode ``A_v = 8 × t × (H/p_v) × (W/p_v) × C × b_vae + frames × 3 × H × W × b_vae``: the
  full-resolution stage (C = ``decoder_base_dim`` or ``base_dim`` channels, p_v = VAE
  ``patch_size`` or 1) for one latent frame (t output frames) with its causal-conv caches (factor
  8, heuristic), plus the decoded video itself; with tiling, H×W is one 256×256 tile (diffusers'
  ``AutoencoderKLWan`` default tile);
* text encoder ``512 × (6·d + f) × b`` (512 prompt tokens); a fixed overhead of 1024 MiB for the
  CUDA context and allocator fragmentation.

Peak VRAM per strategy (W_c weights of component c, A_c the activations while c runs):
``full_gpu`` = ΣW + max A + overhead; ``model_cpu_offload`` = max_c (W_c + A_c) + overhead (one
component on the GPU at a time); ``group_offload`` (block level, one block per group, streamed
prefetch) = max_c (W_c outside its blocks + 2 blocks + A_c) + overhead; ``sequential_cpu_offload``
= max_c (largest parameter tensor + A_c) + overhead.

Host RAM (the planner checks it too: a 64 GB desktop holding the 69 GB of Wan2.2 I2V-A14B is
OOM-killed or swaps for hours). diffusers' ``from_pretrained`` materialises every component in
host RAM before it is placed, and the offload strategies keep all weights there, so every
strategy needs ``ΣW + host overhead`` (on a machine without a GPU, plus the largest activation);
group offload to disk (diffusers ``offload_to_disk_path``, components loaded one at a time and
each offloaded to disk before the next is read) needs ``max_c W_c + host overhead``. ``auto``
takes the weakest strategy whose VRAM and host RAM both fit, then group offload to disk; when
nothing fits the plan says so with the numbers and the engines refuse before loading.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from functools import lru_cache

from pydantic import BaseModel, Field

from wan_pipeline.errors import InputError
from wan_pipeline.models.checkpoint import Checkpoint

MIB = 2**20
STRATEGIES = ("full_gpu", "model_cpu_offload", "group_offload", "sequential_cpu_offload")
"""Weakest to strongest: each keeps less of the model on the GPU (and runs slower)."""
DTYPE_BYTES = {
    "float32": 4,
    "fp32": 4,
    "float16": 2,
    "fp16": 2,
    "bfloat16": 2,
    "bf16": 2,
    "float8": 1,
    "fp8": 1,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}
OVERHEAD_MIB = 1024.0
"""CUDA context + allocator fragmentation (estimate)."""
VAE_CACHE_FACTOR = 8
VAE_TILE = 256
"""Default tile side of diffusers' AutoencoderKLWan (``tile_sample_min_height/width``)."""
PROMPT_TOKENS = 512
"""``max_sequence_length`` of the Wan pipelines (diffusers ``pipeline_wan*.py``)."""
VRAM_MARGIN = 0.95
"""Fraction of the free VRAM a plan may use."""
RAM_MARGIN = 0.9
"""Fraction of the available host RAM a plan may use (page cache, other processes)."""
HOST_OVERHEAD_MIB = 3072.0
"""Host RAM of the process besides the weights: Python, torch and CUDA libraries, pinned staging
buffers, decoded frames (estimate)."""
DISK_OFFLOAD = "group_offload_to_disk"
"""Key of group offload to disk in :attr:`MemoryPlan.host_ram_by_strategy_mib` (chosen as
``group_offload`` with ``offload_to_disk``)."""

# Used when a checkpoint has no text_encoder/ or image_encoder/ config (configs-only folder or
# the catalogue): google/umt5-xxl config.json (Wan's text encoder, encoder half only: ≈5.7 B
# parameters, matching the 11.4 GB bf16 `models_t5_umt5-xxl-enc-bf16.pth` of the Wan2.1 release)
# and the ViT-H/14 vision tower of laion/CLIP-ViT-H-14 (Wan2.1 I2V/FLF2V image encoder).
DEFAULT_COMPONENT_CONFIGS = {
    "UMT5EncoderModel": {
        "model_type": "umt5",
        "d_model": 4096,
        "d_ff": 10240,
        "d_kv": 64,
        "num_heads": 64,
        "num_layers": 24,
        "vocab_size": 256384,
        "feed_forward_proj": "gated-gelu",
        "relative_attention_num_buckets": 32,
        "tie_word_embeddings": False,
    },
    "CLIPVisionModelWithProjection": {
        "model_type": "clip_vision_model",
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_attention_heads": 16,
        "num_hidden_layers": 32,
        "patch_size": 14,
        "image_size": 224,
        "projection_dim": 1024,
        "hidden_act": "gelu",
    },
}
DEFAULT_COMPONENT_CONFIGS["CLIPVisionModel"] = DEFAULT_COMPONENT_CONFIGS["CLIPVisionModelWithProjection"]
DENOISERS = ("transformer", "transformer_2", "unet")
FULL_PRECISION_COMPONENTS = ("vae", "image_encoder")


class ParamStats(BaseModel):
    """Parameter statistics of one module: total, in its largest ``ModuleList`` (the blocks),
    number of blocks, and the largest single parameter tensor (elements)."""

    total: int
    in_blocks: int = 0
    blocks: int = 0
    largest_tensor: int = 0
    source: str = "config"


@contextmanager
def _quiet():
    loggers = [logging.getLogger(n) for n in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _stats(module, source: str) -> ParamStats:
    import torch.nn as nn

    total = sum(p.numel() for p in module.parameters())
    largest = max((p.numel() for p in module.parameters()), default=0)
    lists = [m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    blocks = max(lists, key=lambda m: sum(p.numel() for p in m.parameters()), default=None)
    in_blocks = sum(p.numel() for p in blocks.parameters()) if blocks is not None else 0
    return ParamStats(
        total=total, in_blocks=in_blocks, blocks=len(blocks) if blocks is not None else 0, largest_tensor=largest, source=source
    )


@lru_cache(maxsize=128)
def _count_cached(library: str, class_name: str, config_json: str, source: str) -> ParamStats:
    import torch

    config = json.loads(config_json)
    with _quiet(), torch.device("meta"):
        if library == "diffusers":
            import diffusers

            module = getattr(diffusers, class_name).from_config(config)
        else:
            import transformers

            cfg = dict(config)
            model_type = cfg.pop("model_type")
            module = getattr(transformers, class_name)(transformers.AutoConfig.for_model(model_type, **cfg))
    return _stats(module, source)


def count_parameters(library: str, class_name: str, config: dict, source: str = "config") -> ParamStats:
    """Parameters of ``class_name`` (a diffusers or transformers class) built from ``config`` on
    the meta device. Cached per (class, config). Raises :class:`InputError` if the class is unknown."""
    clean = {k: v for k, v in config.items() if k not in ("architectures", "_name_or_path", "auto_map")}
    try:
        return _count_cached(library, class_name, json.dumps(clean, sort_keys=True), source)
    except AttributeError:
        raise InputError(None, f"{library} has no class {class_name!r}; upgrade {library} or fix model_index.json") from None


def component_parameters(ckpt: Checkpoint) -> dict[str, ParamStats]:
    """Parameter statistics per weighted component (denoisers, VAE, text and image encoders).

    A text/image encoder without a config on disk is counted from the documented default
    (UMT5-XXL encoder, CLIP ViT-H/14 vision tower) with ``source='default'``.
    """
    out: dict[str, ParamStats] = {}
    for name, comp in ckpt.components.items():
        if not comp.needs_weights or comp.library is None or comp.class_name is None:
            continue
        if comp.config is not None:
            try:
                out[name] = count_parameters(comp.library, comp.class_name, comp.config)
                continue
            except (KeyError, TypeError, ValueError, InputError):
                pass  # a config this library version cannot build: fall back to the default, if any
        if comp.class_name in DEFAULT_COMPONENT_CONFIGS:
            out[name] = count_parameters(comp.library, comp.class_name, DEFAULT_COMPONENT_CONFIGS[comp.class_name], source="default")
    return out


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name (``auto`` counts as bfloat16, the GPU default)."""
    name = "bfloat16" if dtype in (None, "auto") else str(dtype).replace("torch.", "")
    try:
        return DTYPE_BYTES[name]
    except KeyError:
        raise InputError(None, f"dtype {dtype!r} unknown; use float32, float16 or bfloat16") from None


def latent_tokens(ckpt: Checkpoint, width: int, height: int, frames: int) -> int:
    """Transformer tokens for one generation (formula in the module docstring)."""
    t = ckpt.transformer or ckpt.transformer_2
    if t is None or ckpt.vae is None:
        return 0
    s, tf = ckpt.vae.spatial_factor, ckpt.vae.temporal_factor
    lat_frames = (max(frames, 1) - 1) // tf + 1
    return lat_frames * (height // (s * t.patch_size[1])) * (width // (s * t.patch_size[2]))


class MemoryPlan(BaseModel):
    """How a model fits a GPU. All sizes in MiB; params in elements.

    peak_vram_mib / peak_vram_tiled_mib: estimated peak per strategy without / with VAE tiling.
    chosen_strategy: one of :data:`STRATEGIES`; reason: why (fit, forced by the preset, no GPU).
    """

    model: str
    variant: str
    dtype: str
    width: int
    height: int
    frames: int
    latent_tokens: int
    params: dict[str, int]
    param_sources: dict[str, str]
    total_params: int
    weights_mib: dict[str, float]
    total_weights_mib: float
    activation_mib: dict[str, float]
    peak_vram_mib: dict[str, float]
    peak_vram_tiled_mib: dict[str, float]
    chosen_strategy: str
    vae_tiling: bool
    vae_slicing: bool
    estimated_peak_mib: float
    fits: bool | None = None
    reason: str
    vram_total_mib: float | None = None
    vram_free_mib: float | None = None
    host_ram_mib: float = Field(description="estimated peak host RAM of the chosen strategy (MiB)")
    host_ram_by_strategy_mib: dict[str, float] = Field(default_factory=dict, description="per strategy and group_offload_to_disk")
    ram_available_mib: float | None = None
    fits_ram: bool | None = None
    offload_to_disk: bool = Field(False, description="group offload with diffusers' offload_to_disk_path")


def stronger_strategy(name: str) -> str | None:
    """The next strategy that keeps less on the GPU (``full_gpu`` → ``model_cpu_offload`` →
    ``group_offload`` → ``sequential_cpu_offload`` → None). Raises ValueError for an unknown name."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown memory strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    i = STRATEGIES.index(name)
    return STRATEGIES[i + 1] if i + 1 < len(STRATEGIES) else None


def _activations(
    ckpt: Checkpoint, stats: dict[str, ParamStats], width: int, height: int, frames: int, b: int, b_vae: int
) -> dict[str, float]:
    t = ckpt.transformer or ckpt.transformer_2
    act: dict[str, float] = {}
    if t is not None:
        act["transformer"] = latent_tokens(ckpt, width, height, frames) * (6 * t.hidden_dim + t.ffn_dim) * b / MIB
    elif any(n in stats for n in DENOISERS):
        act["transformer"] = 1024.0  # non-Wan denoiser: not modelled, a flat allowance
    if ckpt.vae is not None:
        v = ckpt.vae
        pv = v.patch_size or 1
        channels = v.decoder_base_dim or v.base_dim
        output = frames * 3 * height * width * b_vae

        def decode(h, w):
            return (VAE_CACHE_FACTOR * v.temporal_factor * (h // pv) * (w // pv) * channels * b_vae + output) / MIB

        act["vae"] = decode(height, width)
        act["vae_tiled"] = decode(min(height, VAE_TILE), min(width, VAE_TILE))
    elif "vae" in stats:
        act["vae"] = act["vae_tiled"] = 512.0
    te = ckpt.components.get("text_encoder")
    if te is not None and "text_encoder" in stats:
        cfg = te.config or DEFAULT_COMPONENT_CONFIGS.get(te.class_name or "", {})
        d, f = cfg.get("d_model", cfg.get("hidden_size", 4096)), cfg.get("d_ff", cfg.get("intermediate_size", 10240))
        act["text_encoder"] = PROMPT_TOKENS * (6 * d + f) * b / MIB
    if "image_encoder" in stats:
        act["image_encoder"] = 64.0
    return act


def plan_memory(
    ckpt: Checkpoint,
    *,
    variant: str = "",
    width: int,
    height: int,
    frames: int,
    dtype: str = "bfloat16",
    vram_total_mib: float | None = None,
    vram_free_mib: float | None = None,
    strategy: str = "auto",
    ram_available_mib: float | None = None,
    weight_bytes: dict[str, float] | None = None,
    extra_activation_mib: dict[str, float] | None = None,
    loaded_weight_bytes: dict[str, float] | None = None,
) -> MemoryPlan:
    """Estimate the memory a checkpoint needs for one ``width``×``height``×``frames`` generation
    and choose a strategy.

    vram_free_mib: free memory of the target GPU (NVML), None on a machine without a GPU (then
    the plan is ``full_gpu`` on the CPU device: offloading does not apply). strategy: ``auto`` or
    one of :data:`STRATEGIES` (the preset key ``memory_strategy``): forced strategies are kept,
    with VAE tiling switched on when the untiled decode would not fit. ram_available_mib: host
    RAM available (psutil), None to leave host RAM unchecked; a forced ``group_offload`` that
    does not fit it goes to disk, any other strategy that does not fit it gives ``fits=False``.
    weight_bytes: bytes per parameter of named components that are stored differently from
    ``dtype`` (speed levers: fp8 layerwise casting 1.0; a GGUF file its size / parameters, e.g.
    ≈0.56 for Q4_K); extra_activation_mib: MiB added to a component's activations (a cache's
    kept residuals; ``transformer`` covers both denoisers); loaded_weight_bytes: bytes per
    parameter of named components as they are read, where ``weight_bytes`` is applied only after
    loading (layerwise casting: the host holds the load dtype first); host RAM is planned with them.
    Raises :class:`InputError` for an unknown strategy or dtype.
    """
    if strategy != "auto" and strategy not in STRATEGIES:
        raise InputError(None, f"memory_strategy: {strategy!r} unknown; use auto or one of {', '.join(STRATEGIES)}")
    b = dtype_bytes(dtype)
    stats = component_parameters(ckpt)
    per_param = {n: (4 if n in FULL_PRECISION_COMPONENTS else b) for n in stats}
    per_param.update({n: v for n, v in (weight_bytes or {}).items() if n in stats})
    weights = {n: s.total * per_param[n] / MIB for n, s in stats.items()}
    load_param = {**per_param, **{n: v for n, v in (loaded_weight_bytes or {}).items() if n in stats}}
    loaded = {n: s.total * load_param[n] / MIB for n, s in stats.items()}  # host RAM while loading
    act = _activations(ckpt, stats, width, height, frames, b, 4)
    for name, extra in (extra_activation_mib or {}).items():
        act[name] = act.get(name, 0.0) + extra

    def act_of(name: str, tiled: bool) -> float:
        if name in DENOISERS:
            return act.get("transformer", 0.0)
        if name == "vae":
            return act.get("vae_tiled" if tiled else "vae", 0.0)
        return act.get(name, 0.0)

    def resident(name: str, strat: str) -> float:
        s, bytes_ = stats[name], per_param[name]
        if strat == "group_offload" and s.blocks:
            return ((s.total - s.in_blocks) + 2 * s.in_blocks / s.blocks) * bytes_ / MIB
        if strat == "sequential_cpu_offload":
            return s.largest_tensor * bytes_ / MIB
        return weights[name]

    def peak(strat: str, tiled: bool) -> float:
        if not stats:
            return OVERHEAD_MIB
        if strat == "full_gpu":
            return sum(weights.values()) + max(act_of(n, tiled) for n in stats) + OVERHEAD_MIB
        return max(resident(n, strat) + act_of(n, tiled) for n in stats) + OVERHEAD_MIB

    peaks = {s: round(peak(s, False), 1) for s in STRATEGIES}
    tiled_peaks = {s: round(peak(s, True), 1) for s in STRATEGIES}
    budget = vram_free_mib * VRAM_MARGIN if vram_free_mib is not None else None
    total_w = sum(loaded.values())
    if budget is None:  # CPU device: weights and activations all in host RAM
        in_memory = total_w + max((act_of(n, False) for n in stats), default=0.0) + HOST_OVERHEAD_MIB
    else:
        in_memory = total_w + HOST_OVERHEAD_MIB
    host_by = {s: round(in_memory, 1) for s in STRATEGIES}
    host_by[DISK_OFFLOAD] = round(max(loaded.values(), default=0.0) + HOST_OVERHEAD_MIB, 1)
    ram_budget = ram_available_mib * RAM_MARGIN if ram_available_mib is not None else None

    def ram_ok(host: float) -> bool:
        return ram_budget is None or host <= ram_budget

    to_disk = False
    if strategy != "auto":
        chosen = strategy
        tiling = budget is not None and peaks[chosen] > budget
        est = tiled_peaks[chosen] if tiling else peaks[chosen]
        fits = None if budget is None else est <= budget
        reason = f"forced by the preset (memory_strategy: {strategy})" + (
            "" if fits in (None, True) else f"; estimated {est:.0f} MiB exceeds {budget:.0f} MiB usable: expect out-of-memory"
        )
        if budget is not None and chosen == "group_offload" and not ram_ok(host_by[chosen]) and ram_ok(host_by[DISK_OFFLOAD]):
            to_disk = True
            reason += f"; weights offloaded to disk: {host_by[chosen]:.0f} MiB would not fit {ram_budget:.0f} MiB of host RAM"
    elif budget is None:
        chosen, tiling, est, fits = "full_gpu", False, peaks["full_gpu"], None
        reason = "no CUDA device: the whole model runs on the CPU device (offloading does not apply)"
    else:
        candidates = [
            ("full_gpu", False),
            ("full_gpu", True),
            ("model_cpu_offload", False),
            ("model_cpu_offload", True),
            ("group_offload", True),
            ("sequential_cpu_offload", True),
        ]
        ram_note = "" if ram_budget is None else f" and ~{in_memory:.0f} MiB host RAM fits {ram_budget:.0f} MiB usable"
        for chosen, tiling in candidates:
            est = tiled_peaks[chosen] if tiling else peaks[chosen]
            if est <= budget:
                fits = True
                reason = (
                    f"weakest strategy whose estimated peak {est:.0f} MiB fits {budget:.0f} MiB usable "
                    f"({VRAM_MARGIN:.0%} of {vram_free_mib:.0f} MiB free)"
                ) + ("; VAE tiling needed" if tiling else "")
                break
        else:
            fits = False
            reason = (
                f"does not fit: even sequential_cpu_offload with VAE tiling needs ~{est:.0f} MiB and "
                f"{budget:.0f} MiB are usable; lower the resolution or frames, or use a smaller model"
            )
        if fits and ram_ok(in_memory):
            reason += ram_note
        elif fits and tiled_peaks["group_offload"] <= budget and ram_ok(host_by[DISK_OFFLOAD]):
            chosen, tiling, est, to_disk = "group_offload", True, tiled_peaks["group_offload"], True
            reason = (
                f"host RAM: the weights ({total_w:.0f} MiB, ~{in_memory:.0f} MiB with the process) do not fit "
                f"{ram_budget:.0f} MiB usable ({RAM_MARGIN:.0%} of {ram_available_mib:.0f} MiB available), so group "
                f"offload to disk: ~{host_by[DISK_OFFLOAD]:.0f} MiB host RAM (largest component + process), "
                f"estimated peak {est:.0f} MiB VRAM"
            )
    host = host_by[DISK_OFFLOAD] if to_disk else host_by[chosen]
    fits_ram = None if ram_budget is None else ram_ok(host)
    if fits_ram is False:
        fits = False
        reason = (
            f"host RAM: ~{host:.0f} MiB needed with {chosen} (weights {total_w:.0f} MiB"
            + (", kept in RAM by offloading" if budget is not None and chosen != "full_gpu" else "")
            + f"), {ram_budget:.0f} MiB usable ({RAM_MARGIN:.0%} of {ram_available_mib:.0f} MiB available)"
            + (f"; even group offload to disk needs ~{host_by[DISK_OFFLOAD]:.0f} MiB" if budget is not None else "")
            + "; close other programs, use a machine with more RAM, or a smaller model"
        )
    total_params = sum(s.total for s in stats.values())
    return MemoryPlan(
        model=ckpt.ref,
        variant=variant,
        dtype=str(dtype),
        width=width,
        height=height,
        frames=frames,
        latent_tokens=latent_tokens(ckpt, width, height, frames),
        params={n: s.total for n, s in stats.items()},
        param_sources={n: s.source for n, s in stats.items()},
        total_params=total_params,
        weights_mib={n: round(w, 1) for n, w in weights.items()},
        total_weights_mib=round(sum(weights.values()), 1),
        activation_mib={k: round(v, 1) for k, v in act.items()},
        peak_vram_mib=peaks,
        peak_vram_tiled_mib=tiled_peaks,
        chosen_strategy=chosen,
        vae_tiling=tiling,
        vae_slicing=tiling,
        estimated_peak_mib=round(est, 1),
        fits=fits,
        reason=reason,
        vram_total_mib=vram_total_mib,
        vram_free_mib=vram_free_mib,
        host_ram_mib=host,
        host_ram_by_strategy_mib=host_by,
        ram_available_mib=ram_available_mib,
        fits_ram=fits_ram,
        offload_to_disk=to_disk,
    )
