"""Speed levers of the diffusers model stages: preset options that make a Wan render faster or
smaller, applied through diffusers' own hooks, and counted so telemetry says what each one did.

Preset fields (every diffusers stage: ``clip``, ``keyframe``, ``film``), declared once in
:class:`LeverParams`:

* ``loras``: preset-level LoRAs (e.g. a step-distillation LoRA: lightx2v, Wan2.2-Lightning),
  fused into the transformer(s) once when the model loads (``expert`` picks the A14B expert);
  a scene's own LoRAs are loaded as adapters on top for that scene (:mod:`.lora`). ``path`` is a
  file (relative paths are under the storage root) or ``hf://owner/repo/path/in/repo.safetensors``,
  read from the Hugging Face cache (never downloaded at run time).
* ``cache``: ``{method: first_block | mag | taylorseer | faster | pab | none, …}``: a diffusers
  cache hook on each denoiser (``transformer.enable_cache``), enabled for each generation and
  removed after it; the other keys are the method's config fields (:data:`CACHE_FIELDS`).
* ``weights``: ``{storage_dtype: float8_e4m3fn | float8_e5m2 | bfloat16 | float16, quantization:
  none | int8_weight_only | float8_weight_only}``: layerwise casting (weights stored in
  ``storage_dtype``, upcast per layer to the compute dtype) and torchao weight-only quantization
  (needs ``torchao``).
* ``attention_backend``: a diffusers attention dispatcher name (``native``, ``flash``, ``sage``,
  ``xformers``, ``flex`` …); one whose package is missing is refused when the engine is built,
  which the preflight does before any rendering.
* ``compile``: ``none`` | ``regional`` (``compile_repeated_blocks``: each transformer block is
  compiled once and reused).

:class:`WorkCounter` is a diffusers ``ModelHook`` registered innermost on each transformer, its
blocks and their attention modules: it counts the forward passes that really run, so the blocks a
cache skips are measured, not assumed (``transformer_blocks_run``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wan_pipeline.engines.lora import LoraEntry, check_lora
from wan_pipeline.errors import InputError

CACHE_METHODS = ("none", "first_block", "mag", "taylorseer", "faster", "pab")

# Preset keys each cache method accepts: the fields of its diffusers config dataclass that are
# plain values (callbacks, module patterns and step counts are set here, not in presets).
CACHE_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "first_block": ("threshold",),
    "mag": ("threshold", "max_skip_steps", "retention_ratio", "mag_ratios", "calibrate"),
    "taylorseer": ("cache_interval", "disable_cache_before_step", "disable_cache_after_step", "max_order", "use_lite_mode"),
    "faster": (
        "spatial_attention_block_skip_range",
        "spatial_attention_timestep_skip_range",
        "unconditional_batch_skip_range",
        "unconditional_batch_timestep_skip_range",
        "alpha_low_frequency",
        "alpha_high_frequency",
    ),
    "pab": (
        "spatial_attention_block_skip_range",
        "spatial_attention_timestep_skip_range",
        "cross_attention_block_skip_range",
        "cross_attention_timestep_skip_range",
    ),
}
_CACHE_CONFIGS = {
    "first_block": "FirstBlockCacheConfig",
    "mag": "MagCacheConfig",
    "taylorseer": "TaylorSeerCacheConfig",
    "faster": "FasterCacheConfig",
    "pab": "PyramidAttentionBroadcastConfig",
}
TAYLORSEER_WAN_BLOCKS = r"blocks\.\d+"
"""The Wan transformer blocks (``blocks.<i>``): TaylorSeer predicts their outputs between full steps."""
CACHE_STREAMS = {"none": 0, "first_block": 2, "mag": 1, "taylorseer": 3, "faster": 2, "pab": 2}
"""Hidden-state-sized tensors (tokens x hidden size) a cache keeps per denoiser and guidance
pass between steps, for the memory planner: first block keeps the first block's residual and the
final residual; MagCache the residual; TaylorSeer (order 1) the output and one difference per
cached module (counted as three streams); FasterCache / PAB the attention outputs of two steps."""

SINGLE_PASS_CACHES = ("pab", "faster")
"""Caches whose diffusers hooks keep ONE attention history per module (no per-``cache_context``
state). Wan pipelines run the conditional and unconditional passes one after the other, so with
guidance > 1 one pass would reuse the other's attention: these run only with guidance 1.0
(guidance-distilled settings, a single pass per step)."""
FASTER_CACHE_FIRST_TIMESTEP = 900
"""FasterCache computes nothing before its first skip: the skip range must end below the first
denoising timestep (≈ 999 on Wan's shifted schedule; diffusers' default range ends at 681)."""

STORAGE_DTYPES = ("float8_e4m3fn", "float8_e5m2", "bfloat16", "float16", "float32")
QUANTIZATIONS = ("none", "int8_weight_only", "float8_weight_only")
CPU_ATTENTION_BACKENDS = ("native", "_native_math", "flex")
"""Backends that run without CUDA (torch SDPA, its math kernel, FlexAttention)."""
LEVER_TELEMETRY_KEYS = (
    "steps",
    "cache",
    "cache_params",
    "transformer_forward_calls",
    "transformer_blocks_run",
    "transformer_blocks_total",
    "transformer_attention_run",
    "storage_dtype",
    "quantization",
    "attention_backend",
    "compile",
    "preset_loras",
    "planned_vram_mib",
    "planned_vram_plain_mib",
)
"""Telemetry keys the diffusers stages add for the levers (see :meth:`LeverState.telemetry`)."""
DENOISERS = ("transformer", "transformer_2")
COUNTER_HOOK = "wan_pipeline_work_counter"


class CacheParams(BaseModel):
    """``cache:`` of a stage: ``method`` plus that method's config fields (:data:`CACHE_FIELDS`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    method: Literal["none", "first_block", "mag", "taylorseer", "faster", "pab"] = "none"

    @property
    def options(self) -> dict[str, Any]:
        """The method's parameters as given in the preset (lists for ranges)."""
        return dict(self.model_extra or {})


class WeightsParams(BaseModel):
    """``weights:`` of a stage: how the denoisers' weights are stored (None keeps the load dtype)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    storage_dtype: Literal["float8_e4m3fn", "float8_e5m2", "bfloat16", "float16", "float32"] | None = None
    quantization: Literal["none", "int8_weight_only", "float8_weight_only"] = "none"


class LeverParams(BaseModel):
    """The lever fields every diffusers model stage accepts (module doc)."""

    loras: list[LoraEntry] = Field(default_factory=list)
    cache: CacheParams = Field(default_factory=CacheParams)
    weights: WeightsParams = Field(default_factory=WeightsParams)
    attention_backend: str | None = Field(None, description="diffusers attention dispatcher name; None keeps the default")
    compile: Literal["none", "regional"] = "none"

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_shorthand(cls, value):
        return {"method": value} if isinstance(value, str) else value


# -- validation ------------------------------------------------------------------------------
def build_cache_config(cache: CacheParams, steps: int, pipe=None):
    """The diffusers cache config for ``cache`` (None for ``none``) for a generation of ``steps``
    denoising steps; ``pipe`` gives the timestep callback PAB and FasterCache need.

    Raises ValueError / TypeError with the diffusers message for bad values, KeyError naming an
    unknown field.
    """
    if cache.method == "none":
        return None
    import diffusers.hooks as hooks

    cls = getattr(hooks, _CACHE_CONFIGS[cache.method], None)
    if cls is None:
        raise KeyError(f"the installed diffusers has no {_CACHE_CONFIGS[cache.method]}: upgrade diffusers or pick another method")
    allowed = CACHE_FIELDS[cache.method]
    values: dict[str, Any] = {}
    for key, value in cache.options.items():
        if key not in allowed:
            raise KeyError(f"{key!r} is no parameter of cache method {cache.method!r}; allowed: {', '.join(allowed) or 'none'}")
        values[key] = tuple(value) if isinstance(value, list) and key.endswith("_range") else value
    timestep = (lambda: pipe.current_timestep) if pipe is not None else (lambda: 0)
    if cache.method == "mag":
        values["num_inference_steps"] = steps
    if cache.method == "taylorseer":
        values.setdefault("taylor_factors_dtype", None)  # keep the compute dtype (bf16 default loses fp32 runs)
        # diffusers' default patterns ("^blocks.*attn", full match) hook no Wan module: predict whole blocks
        values.setdefault("cache_identifiers", [TAYLORSEER_WAN_BLOCKS])
    if cache.method == "faster":
        # Wan pipelines run the guidance passes one after the other (batch 1), not batched: only
        # the attention skipping of FasterCache applies, so it is told there is no batched CFG.
        values.update(current_timestep_callback=timestep, tensor_format="BCFHW", is_guidance_distilled=True)
    if cache.method == "pab":
        values["current_timestep_callback"] = timestep
        if not any(k.endswith("_block_skip_range") for k in cache.options):
            values["spatial_attention_block_skip_range"] = 2  # diffusers' documented example value
    names = {f.name for f in dataclasses.fields(cls)}
    missing = [k for k in values if k not in names]
    if missing:
        raise KeyError(f"the installed diffusers' {cls.__name__} has no field {missing[0]!r}")
    return cls(**values)


def single_pass_problem(cache: CacheParams, guidance: float | None) -> str | None:
    """Why ``cache`` cannot run with ``guidance`` (None when it can): see :data:`SINGLE_PASS_CACHES`."""
    if cache.method in SINGLE_PASS_CACHES and guidance is not None and guidance > 1.0:
        return (
            f"method {cache.method!r} keeps one attention history while Wan runs the guidance passes one after the "
            f"other: with guidance {guidance:g} > 1 the unconditional pass would reuse the conditional one's attention; "
            "use it with guidance 1.0 (distilled settings) or pick first_block, mag or taylorseer"
        )
    return None


def validate_levers(
    params: LeverParams, stage: str, file: str | None, device: str, steps: int = 4, guidance: tuple[float | None, ...] = ()
) -> None:
    """Check the lever fields against what is installed, before anything loads.

    Raises :class:`InputError` naming ``file`` and ``stages.<stage>.<field>`` for: a cache method
    the installed diffusers lacks or a bad cache parameter; a storage dtype this torch lacks;
    torchao quantization without torchao; an attention backend diffusers does not know, whose
    package is missing, that downloads kernels at run time (``*_hub``), or that needs CUDA on a
    CPU device; a PAB / FasterCache cache with any of ``guidance`` above 1 or a FasterCache
    skip range that starts at the first step; and a preset LoRA that is not a ``.safetensors``
    file or ``hf://`` reference.
    """
    import torch

    problems: list[str] = []
    where = f"stages.{stage}"
    try:
        build_cache_config(params.cache, steps)
    except (KeyError, ValueError, TypeError) as exc:
        text = exc.args[0] if exc.args else str(exc)
        problems.append(f"{where}.cache: {text}".strip())
    for g in guidance:
        problem = single_pass_problem(params.cache, g)
        if problem:
            problems.append(f"{where}.cache: {problem}")
            break
    skip_range = params.cache.options.get("spatial_attention_timestep_skip_range")
    if params.cache.method == "faster" and isinstance(skip_range, list) and len(skip_range) == 2:
        if skip_range[1] >= FASTER_CACHE_FIRST_TIMESTEP:
            problems.append(
                f"{where}.cache.spatial_attention_timestep_skip_range: {skip_range} reaches the first steps; FasterCache "
                f"must compute them in full: end the range below {FASTER_CACHE_FIRST_TIMESTEP} (diffusers default [-1, 681])"
            )
    dtype = params.weights.storage_dtype
    if dtype is not None and not isinstance(getattr(torch, dtype, None), torch.dtype):
        problems.append(f"{where}.weights.storage_dtype: this torch ({torch.__version__}) has no {dtype}")
    if params.weights.quantization != "none" and dtype is not None:
        problems.append(f"{where}.weights: give storage_dtype or quantization, not both (torchao already stores the weights)")
    if params.weights.quantization != "none":
        import importlib.util

        if importlib.util.find_spec("torchao") is None:
            problems.append(
                f"{where}.weights.quantization: {params.weights.quantization} needs torchao, which is not installed "
                "(pip install torchao), or use weights.storage_dtype: float8_e4m3fn"
            )
    if params.attention_backend is not None:
        problem = attention_backend_problem(params.attention_backend, device)
        if problem:
            problems.append(f"{where}.attention_backend: {problem}")
    for i, entry in enumerate(params.loras):
        if not entry.path.endswith(".safetensors"):
            problems.append(f"{where}.loras[{i}].path: {entry.path!r} is no .safetensors file (pickled weights are not loaded)")
        elif entry.path.startswith("hf://") and entry.path[5:].count("/") < 2:
            problems.append(f"{where}.loras[{i}].path: {entry.path!r}: write hf://<owner>/<repo>/<file in the repo>")
    if problems:
        raise InputError(file, problems)


def single_file_problems(params: LeverParams, stage: str, files) -> list[str]:
    """What the levers cannot do to a single-file model set (``files``: resolved
    :class:`~wan_pipeline.models.model_files.ModelFiles`): a ``.gguf`` transformer is already
    quantized (diffusers dequantizes it per layer), so ``weights.storage_dtype``, torchao
    quantization and fusing a preset LoRA into it are refused, naming the field and the fix."""
    gguf = [p.name for p in (files.transformer, files.transformer_2) if p is not None and p.suffix.lower() == ".gguf"]
    if not gguf:
        return []
    where, name, out = f"stages.{stage}", gguf[0], []
    if params.weights.storage_dtype is not None:
        out.append(f"{where}.weights.storage_dtype: {name} is GGUF-quantized already (stored at its own bits per weight): remove it")
    if params.weights.quantization != "none":
        out.append(f"{where}.weights.quantization: {name} is GGUF-quantized already: remove it")
    if params.loras:
        out.append(
            f"{where}.loras: a LoRA cannot be fused into the quantized weights of {name}: give it in the scene "
            "(applied as an adapter) or use a bf16/fp16/fp8 model file"
        )
    return out


def attention_backend_problem(name: str, device: str) -> str | None:
    """Why ``name`` cannot run here (None when it can): unknown to the installed diffusers, its
    package missing (diffusers' own requirement check), a run-time kernel download, or CUDA-only
    on a CPU device."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    known = sorted(b.value for b in AttentionBackendName if not b.value.startswith("_"))
    try:
        backend = AttentionBackendName(name.lower())
    except ValueError:
        return f"{name!r} is no diffusers attention backend; known: {', '.join(known)}"
    if backend.value.endswith("_hub"):
        return f"{name!r} downloads its kernel from the Hugging Face Hub at run time; install the package and use {name[:-4]!r}"
    try:
        _check_attention_backend_requirements(backend)
    except RuntimeError as exc:
        return str(exc)
    if not str(device).startswith("cuda") and backend.value not in CPU_ATTENTION_BACKENDS:
        return f"{name!r} needs a CUDA device (this stage runs on {device}); on CPU use one of {', '.join(CPU_ATTENTION_BACKENDS)}"
    return None


# -- counting --------------------------------------------------------------------------------
class WorkCounter:
    """Counts the forward passes that run in the denoisers: ``forward_calls`` (transformer),
    ``blocks_run`` (transformer blocks) and ``attention_run`` (attention modules of the blocks).
    Registered innermost (before any cache hook), so a pass a cache skips is not counted."""

    def __init__(self) -> None:
        self.counts = {"forward_calls": 0, "blocks_run": 0, "attention_run": 0}
        self.blocks_per_forward: dict[int, int] = {}
        self._calls_by_model: dict[int, int] = {}

    def reset(self) -> None:
        for key in self.counts:
            self.counts[key] = 0
        self._calls_by_model.clear()

    def attach(self, transformer) -> None:
        """Register the counting hook on ``transformer``, its ``blocks`` and their attention modules."""
        import torch
        from diffusers.hooks import HookRegistry, ModelHook

        counter = self

        class _Count(ModelHook):
            def __init__(self, key: str, model_id: int | None = None) -> None:
                super().__init__()
                self.key, self.model_id = key, model_id

            @torch.compiler.disable
            def pre_forward(self, module, *args, **kwargs):
                counter.counts[self.key] += 1
                if self.model_id is not None:
                    counter._calls_by_model[self.model_id] = counter._calls_by_model.get(self.model_id, 0) + 1
                return args, kwargs

        blocks = getattr(transformer, "blocks", None) or []
        self.blocks_per_forward[id(transformer)] = len(blocks)
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(_Count("forward_calls", id(transformer)), COUNTER_HOOK)
        for block in blocks:
            HookRegistry.check_if_exists_or_initialize(block).register_hook(_Count("blocks_run"), COUNTER_HOOK)
            for name in ("attn1", "attn2"):
                attn = getattr(block, name, None)
                if attn is not None:
                    HookRegistry.check_if_exists_or_initialize(attn).register_hook(_Count("attention_run"), COUNTER_HOOK)

    def blocks_total(self) -> int:
        """Blocks the counted forward passes would have run with no cache."""
        return sum(n * self.blocks_per_forward.get(model, 0) for model, n in self._calls_by_model.items())


# -- applying --------------------------------------------------------------------------------
def resolve_lora_path(path: str, file: str | None, where: str, resolve=None) -> Path:
    """A preset LoRA's file: ``hf://owner/repo/file`` from the Hugging Face cache (offline, never
    downloaded here), an absolute path, or a path under the storage root (``resolve(path)`` when
    the engine context gives one, e.g. ``ctx.model_path``). Raises
    :class:`InputError` naming the download command for a file not in the cache."""
    from wan_pipeline.storage import storage_root

    if path.startswith("hf://"):
        owner, repo, filename = path[5:].split("/", 2)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(f"{owner}/{repo}", filename, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError):
            raise InputError(
                file, f"{where}: {path} is not in the Hugging Face cache; download it with: hf download {owner}/{repo} {filename}"
            ) from None
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return Path(resolve(path)) if resolve is not None else storage_root() / p


def denoisers(pipe) -> list[tuple[str, Any]]:
    """``[(name, module)]`` of the pipeline's transformers (``transformer``, ``transformer_2``)."""
    return [(n, getattr(pipe, n)) for n in DENOISERS if getattr(pipe, n, None) is not None]


def fuse_preset_loras(pipe, loras: list[LoraEntry], file: str | None, stage: str, log=lambda m: None, resolve=None) -> list[dict]:
    """Fuse ``loras`` into the pipeline's transformer(s) (each at its strength, into the expert it
    names) and drop the adapter layers, so the bare weights carry them for every scene. Returns
    ``[{path, strength, expert, into}]``. Raises :class:`InputError` for a missing file or a LoRA
    that does not fit the model (:func:`~wan_pipeline.engines.lora.check_lora`)."""
    done: list[dict] = []
    for i, entry in enumerate(loras):
        where = f"stages.{stage}.loras[{i}].path"
        path = resolve_lora_path(entry.path, file, where, resolve)
        wanted = ("transformer",) if entry.expert == "high_noise" else ("transformer_2",) if entry.expert == "low_noise" else DENOISERS
        targets = [(n, m) for n, m in denoisers(pipe) if n in wanted]
        if not targets:
            raise InputError(file, f"stages.{stage}.loras[{i}].expert: {entry.expert!r}: this model has no such transformer")
        for _, transformer in targets:
            check_lora(pipe, path, transformer)
        name = f"preset{i}"
        for component, _ in targets:
            pipe.load_lora_weights(str(path), adapter_name=name, load_into_transformer_2=component == "transformer_2")
        pipe.set_adapters([name], [float(entry.strength)])
        pipe.fuse_lora(components=[c for c, _ in targets], adapter_names=[name], lora_scale=1.0)
        pipe.unload_lora_weights()
        done.append({"path": entry.path, "strength": entry.strength, "expert": entry.expert, "into": [c for c, _ in targets]})
        log(f"preset LoRA {path.name} fused into {', '.join(c for c, _ in targets)} at strength {entry.strength}")
    return done


@dataclasses.dataclass
class LeverState:
    """What :func:`apply_levers` did to a loaded pipeline, and its work counter."""

    params: LeverParams
    counter: WorkCounter
    preset_loras: list[dict]
    storage_dtype: str | None
    attention_backend: str | None
    planned_vram_mib: float | None = None
    planned_vram_plain_mib: float | None = None

    @contextlib.contextmanager
    def generation(self, pipe, steps: int, guidance: tuple[float | None, ...] = ()) -> Iterator[None]:
        """One pipeline call: the cache hook enabled on each denoiser for ``steps`` steps (fresh
        state, removed afterwards even on failure); counts accumulate until :meth:`reset`.
        Raises :class:`InputError` when the call's ``guidance`` rules the cache out
        (:func:`single_pass_problem`, e.g. a scene's own guidance_scale)."""
        for g in guidance:
            problem = single_pass_problem(self.params.cache, g)
            if problem:
                raise InputError(None, f"cache: {problem}")
        config_needed = self.params.cache.method != "none"
        enabled = []
        try:
            if config_needed:
                for _, transformer in denoisers(pipe):
                    transformer.enable_cache(build_cache_config(self.params.cache, steps, pipe))
                    enabled.append(transformer)
            yield
        finally:
            for transformer in enabled:
                transformer.disable_cache()

    def reset(self) -> None:
        self.counter.reset()

    def telemetry(self, steps: int | None) -> dict:
        """The lever record of the generations since :meth:`reset` (keys: :data:`LEVER_TELEMETRY_KEYS`)."""
        c = self.counter.counts
        return {
            "steps": steps,
            "cache": self.params.cache.method,
            "cache_params": self.params.cache.options,
            "transformer_forward_calls": c["forward_calls"],
            "transformer_blocks_run": c["blocks_run"],
            "transformer_blocks_total": self.counter.blocks_total(),
            "transformer_attention_run": c["attention_run"],
            "storage_dtype": self.storage_dtype,
            "quantization": self.params.weights.quantization,
            "attention_backend": self.attention_backend,
            "compile": self.params.compile,
            "preset_loras": self.preset_loras,
            "planned_vram_mib": self.planned_vram_mib,
            "planned_vram_plain_mib": self.planned_vram_plain_mib,
        }


LAYERWISE_CASTING_HOOK = "layerwise_casting"
"""The name diffusers registers its layerwise casting hook under (``diffusers.hooks.layerwise_casting``)."""


def layerwise_storage(transformer) -> str | None:
    """The storage dtype name of the layerwise casting ``transformer`` already has (an fp8
    single file kept in fp8 by :func:`~wan_pipeline.models.model_files.load_transformer`, or a
    denoiser cast before its weights went to disk, :mod:`.disk_offload`); None without."""
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(LAYERWISE_CASTING_HOOK) if registry is not None else None
        if hook is not None:
            return str(hook.storage_dtype).removeprefix("torch.")
    return None


def stored_as(transformer) -> str:
    """How ``transformer``'s weights are stored, for telemetry: ``gguf_<type>`` for a GGUF file
    (the quantization type of most weights, e.g. ``gguf_Q8_0``), else the dtype name."""
    counts: dict[str, int] = {}
    for param in transformer.parameters():
        quant = getattr(param, "quant_type", None)
        if quant is not None and type(param).__name__ == "GGUFParameter":
            name = f"gguf_{getattr(quant, 'name', quant)}"
            counts[name] = counts.get(name, 0) + param.numel()
    if counts:
        return max(counts, key=counts.get)
    return str(transformer.dtype).removeprefix("torch.")


def _stored_problems(params: LeverParams, stage: str, name: str, dtype: str) -> list[str]:
    """What the levers cannot do to a denoiser whose weights are already stored in ``dtype``
    through layerwise casting: another storage dtype, torchao quantization, or fusing a preset
    LoRA (fused deltas would be rounded to ``dtype``)."""
    where, out = f"stages.{stage}", []
    wanted = params.weights.storage_dtype
    if wanted is not None and wanted != dtype:
        out.append(
            f"{where}.weights.storage_dtype: the {name}'s weights are already stored in {dtype} (as loaded); "
            f"{wanted} cannot be applied on top: remove it or give {dtype}"
        )
    if params.weights.quantization != "none":
        out.append(f"{where}.weights.quantization: the {name}'s weights are already stored in {dtype}; remove the quantization")
    if params.loras:
        out.append(
            f"{where}.loras: the {name}'s weights are stored in {dtype}, and a preset LoRA fused into them would be rounded "
            "to it: use a bf16/fp16 model file, or give the LoRA in the scene (applied as an adapter)"
        )
    return out


def apply_levers(pipe, params: LeverParams, stage: str, file: str | None, log=lambda m: None, resolve=None) -> LeverState:
    """Apply the load-time levers to a freshly loaded pipeline (before it is placed on the GPU, so
    fp8 weights are what moves there), in the order that keeps each one
    valid: preset LoRAs fused (into full-precision weights), torchao quantization or layerwise
    casting, the work counter (before any cache hook, so it sits innermost), the attention
    backend, then regional compilation. The cache is enabled per generation
    (:meth:`LeverState.generation`); ``resolve`` maps a relative LoRA path to its file (default:
    under the storage root). A denoiser that already stores its weights through layerwise casting
    (:func:`layerwise_storage`) keeps them as they are. Raises :class:`InputError` for a LoRA
    problem, or for a lever such a denoiser cannot take (:func:`_stored_problems`)."""
    import torch

    cast = {name: layerwise_storage(t) for name, t in denoisers(pipe)}
    problems = [p for name, dtype in cast.items() if dtype is not None for p in _stored_problems(params, stage, name, dtype)]
    if problems:
        raise InputError(file, problems)
    fused = fuse_preset_loras(pipe, params.loras, file, stage, log, resolve) if params.loras else []
    storage = None
    for name, transformer in denoisers(pipe):
        if cast[name] is not None:  # cast while loading (fp8 file kept in fp8, or cast before offloading to disk)
            storage = cast[name]
            continue
        if params.weights.quantization != "none":
            import torchao.quantization as tq

            config = tq.Int8WeightOnlyConfig() if params.weights.quantization == "int8_weight_only" else tq.Float8WeightOnlyConfig()
            tq.quantize_(transformer, config)
        if params.weights.storage_dtype is not None:
            transformer.enable_layerwise_casting(
                storage_dtype=getattr(torch, params.weights.storage_dtype), compute_dtype=transformer.dtype
            )
            storage = params.weights.storage_dtype
    counter = WorkCounter()
    for _, transformer in denoisers(pipe):
        counter.attach(transformer)
    backend = None
    if params.attention_backend is not None:
        for _, transformer in denoisers(pipe):
            transformer.set_attention_backend(params.attention_backend)
        backend = params.attention_backend
    if params.compile == "regional":
        for _, transformer in denoisers(pipe):
            transformer.compile_repeated_blocks(fullgraph=False)  # the counting/cache hooks break graphs on purpose
    if storage is None and denoisers(pipe):
        storage = stored_as(denoisers(pipe)[0][1])
    return LeverState(params=params, counter=counter, preset_loras=fused, storage_dtype=storage, attention_backend=backend or "default")


def plan_overrides(params: LeverParams, ckpt, width: int, height: int, frames: int, dtype: str) -> dict:
    """Keyword arguments of :func:`wan_pipeline.models.memory.plan_memory` for the levers: the
    denoisers' weight bytes per element (fp8 storage: 1; torchao int8/fp8: 1; read in ``dtype``
    first, which bounds the host RAM while loading) and the cache's extra activations
    (:data:`CACHE_STREAMS` hidden-state tensors per denoiser and guidance pass)."""
    from wan_pipeline.models.memory import MIB, dtype_bytes, latent_tokens

    out: dict = {}
    per = None
    if params.weights.quantization != "none":
        per = 1.0
    elif params.weights.storage_dtype is not None:
        per = float(dtype_bytes(params.weights.storage_dtype))
    if per is not None:
        out["weight_bytes"] = {n: per for n in DENOISERS}
        out["loaded_weight_bytes"] = {n: float(dtype_bytes(dtype)) for n in DENOISERS}  # cast after loading
    streams = CACHE_STREAMS.get(params.cache.method, 0)
    t = ckpt.transformer or ckpt.transformer_2
    if streams and t is not None:
        passes = 2  # cond + uncond state kept apart (diffusers cache_context)
        extra = streams * passes * latent_tokens(ckpt, width, height, frames) * t.hidden_dim * dtype_bytes(dtype) / MIB
        out["extra_activation_mib"] = {"transformer": extra}
    return out


def lever_plan_kwargs(source: str, params: LeverParams, width: int, height: int, frames: int, dtype: str) -> dict:
    """The memory planner's arguments for the preset's speed levers (fp8 weight bytes, cache
    activations): :func:`plan_overrides` on the configs of the checkpoint at ``source``."""
    from wan_pipeline.models import read_checkpoint

    return plan_overrides(params, read_checkpoint(source), width, height, frames, dtype)


def planned_vram(
    source: str, device: str, params, plan_size, stored: dict | None = None, loaded: dict | None = None
) -> tuple[float | None, float | None]:
    """``(with the levers, without)``: the planner's estimated peak VRAM (MiB) of one generation
    of ``plan_size`` (width, height, frames) under the strategy it would choose on ``device``
    (``full_gpu`` on a CPU device); None when the checkpoint cannot be planned. ``params``: an
    engine's ``ModelParams`` (levers plus ``dtype`` and ``memory_strategy``). stored / loaded:
    measured bytes per parameter of the denoisers with / without the levers (single files: a
    GGUF file at its size), which replace the estimates."""
    from wan_pipeline.models import plan_for_model

    width, height, frames = plan_size
    dtype = "bfloat16" if params.dtype == "auto" else params.dtype
    strategy = params.memory_strategy
    try:
        levers = lever_plan_kwargs(source, params, width, height, frames, dtype)
        if stored:
            levers["weight_bytes"] = {**levers.get("weight_bytes", {}), **stored}
        plain = {"weight_bytes": loaded} if loaded else {}
        kw = dict(width=width, height=height, frames=frames, dtype=dtype, strategy=strategy, device=device)
        return plan_for_model(source, **kw, **levers)[1].estimated_peak_mib, plan_for_model(source, **kw, **plain)[1].estimated_peak_mib
    except (InputError, KeyError, ValueError):
        return None, None


def describe_levers(params: LeverParams, state: LeverState | None) -> dict:
    """The levers as configured (``state`` None: not loaded yet) or as applied: static telemetry."""
    out = {
        "cache": params.cache.method,
        "cache_params": params.cache.options,
        "storage_dtype": params.weights.storage_dtype,
        "quantization": params.weights.quantization,
        "attention_backend": params.attention_backend or "default",
        "compile": params.compile,
        "preset_loras": [e.model_dump() for e in params.loras],
    }
    if state is not None:
        out.update(storage_dtype=state.storage_dtype, preset_loras=state.preset_loras)
        out.update(planned_vram_mib=state.planned_vram_mib, planned_vram_plain_mib=state.planned_vram_plain_mib)
    return out
