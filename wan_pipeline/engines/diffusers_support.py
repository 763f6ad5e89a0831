"""What the diffusers-backed engines share: where a model comes from, how a pipeline is loaded
onto the device under a memory strategy, how it is released, and how its output becomes frames.

A preset stage section of a model engine carries ``model`` (a Hugging Face repo id, an absolute
folder, or a folder relative to the storage root), the memory fields of :class:`ModelParams` and
the speed levers of :class:`~wan_pipeline.engines.levers.LeverParams` (LoRAs, cache, weight
storage, attention backend, compilation).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field

from wan_pipeline.devices import free_device_memory
from wan_pipeline.engines.levers import (
    LeverParams,
    LeverState,
    apply_levers,
    describe_levers,
    lever_plan_kwargs,
    planned_vram,
    single_file_problems,
    validate_levers,
)
from wan_pipeline.errors import InputError
from wan_pipeline.models.hub import quiet_hub_progress  # noqa: F401 (loaders below and callers use it)
from wan_pipeline.models.model_files import ModelFileFields, uses_single_file
from wan_pipeline.storage import storage_root

MemoryStrategy = Literal["auto", "full_gpu", "model_cpu_offload", "group_offload", "sequential_cpu_offload"]


class ModelParams(ModelFileFields, LeverParams):
    """Preset fields every model engine accepts (with the single-file keys of
    :class:`ModelFileFields` and the speed levers of :class:`LeverParams`).

    model: repo id (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``), absolute folder, or folder relative to
        the storage root (``models/tiny/wan21-i2v``); or a single ``.safetensors`` / ``.gguf``
        transformer file, with the other single-file keys of :class:`ModelFileFields`.
    memory_strategy: how the pipeline sits on the GPU (ignored on CPU); ``auto`` is ``full_gpu``.
    vae_tiling / vae_slicing: decode the VAE in spatial tiles / one sample at a time.
    dtype: of the denoisers and text encoder: ``auto`` (bf16 on CUDA, fp16 only on a GPU without
        bf16, fp32 on CPU), ``float32``, ``float16``, ``bfloat16``; VAE and image encoder: float32.
    max_sequence_length: prompt tokens given to the text encoder (Wan: 512).
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    memory_strategy: MemoryStrategy = "auto"
    vae_tiling: bool = False
    vae_slicing: bool = False
    dtype: str = "auto"
    negative_prompt: str = Field("", description="used when the scene gives none")
    max_sequence_length: int = Field(512, ge=8, le=512, description="text tokens (UMT5: 512)")


def resolve_model_source(model: str, root: Path | None = None) -> str:
    """Turn a preset's ``model`` into what ``from_pretrained`` takes.

    An absolute path or a path relative to the storage root (``root``, default
    :func:`storage_root`) that exists is returned as a folder path; a string shaped like
    ``owner/name`` that is no local folder is a Hugging Face repo id, returned as is. Nothing is
    written (a missing miniature says to run ``wan-pipeline make-tiny-models``). Anything else
    raises :class:`InputError` naming the folder looked at.
    """
    from wan_pipeline.models.tiny import TINY_MODELS

    root = root or storage_root()
    path = Path(model).expanduser()
    local = path if path.is_absolute() else root / path
    if uses_single_file(model):  # a transformer file: found by models.model_files (ComfyUI folders too)
        return str(local) if local.is_file() else model
    if (local / "model_index.json").is_file():
        return str(local)
    if local.parent.name == "tiny" and local.name in TINY_MODELS:
        raise InputError(
            str(local),
            f"the miniature checkpoint is not made yet: run `wan-pipeline make-tiny-models {local.parent}` (or render, which makes it)",
        )
    if path.is_absolute() or model.startswith(".") or local.exists():
        raise InputError(
            str(local),
            "no diffusers checkpoint here (model_index.json missing): point `model:` at a diffusers folder or a Hugging Face repo id",
        )
    if model.count("/") == 1:
        return model
    raise InputError(str(local), f"model {model!r} is neither a folder under {root} nor a repo id 'owner/name'")


def load_pipeline(
    pipeline_cls,
    model: str,
    device: str,
    params: ModelParams,
    file: str | None = None,
    plan_size: tuple[int, int, int] | None = None,
    root: Path | None = None,
    prepare=None,
):
    """Load ``pipeline_cls`` from ``model`` (safetensors only, no remote code) and place it.

    Before any weight is read the checkpoint's configs are checked (:mod:`wan_pipeline.models`):
    a repo id must be in the HF cache (else :class:`InputError` with the download command), every
    component must be present with safetensors weights, and a Wan checkpoint is identified from
    its configs (``pipe.wan_model_info``). plan_size: (width, height, frames) of one generation,
    for the memory planner when ``memory_strategy`` is ``auto`` on CUDA. prepare: called with the
    pipeline after loading and before it is placed (the speed levers: fp8 storage must shrink the
    weights before they go to the GPU).

    The pipeline carries ``plan_source`` (the folder whose configs the memory planner reads) and,
    from single files, ``loaded_weight_bytes`` / ``stored_weight_bytes``: the denoisers' measured
    bytes per parameter before and after ``prepare`` (:func:`stored_weight_bytes`).

    Returns ``(pipeline, memory_strategy)`` where ``memory_strategy`` is what was applied: ``cpu``
    on a CPU device, else the preset's strategy or the planner's choice for ``auto``.
    """
    from wan_pipeline.models import check_loadable, identify, read_checkpoint

    if uses_single_file(params):
        from wan_pipeline.models.model_files import load_files_pipeline, resolve_model_files

        files = resolve_model_files(params, file, root or storage_root())
        quiet_hub_progress()
        dtype, dtype_note = model_dtype(params.dtype, device)
        pipe = load_files_pipeline(pipeline_cls, files, dtype, keep_fp8=device.startswith("cuda"))
        pipe.set_progress_bar_config(disable=True)
        pipe.wan_model_info = files.info
        pipe.dtype_note = dtype_note
        pipe.plan_source = source = str(files.config_dir)
        pipe.loaded_weight_bytes = stored_weight_bytes(pipe, source)  # a GGUF file at its size, fp8 kept in fp8
        if prepare is not None:
            prepare(pipe)
        pipe.stored_weight_bytes = stored_weight_bytes(pipe, source)
        plan = memory_plan(source, device, params, dtype, plan_size, stored=pipe.stored_weight_bytes) if device.startswith("cuda") else None
        return pipe, apply_memory_strategy(pipe, device, params, source, plan_size, plan=plan)
    source = resolve_model_source(model, root)
    try:
        ckpt = read_checkpoint(source)
        check_loadable(ckpt)
    except InputError as exc:
        raise InputError(file, f"model {model!r}: {exc}") from None
    info = None
    if str(ckpt.index.class_name or "").startswith("Wan"):
        info = identify(ckpt)
    dtype, dtype_note = model_dtype(params.dtype, device)
    plan = memory_plan(str(ckpt.source), device, params, dtype, plan_size)
    if plan is not None and plan.fits_ram is False:
        raise InputError(file, f"model {model!r}: {plan.reason}")
    quiet_hub_progress()
    components, folder = {}, None
    if plan is not None and plan.offload_to_disk and device.startswith("cuda"):
        from wan_pipeline.engines.disk_offload import load_components_to_disk, offload_folder

        problems = disk_offload_problems(params)
        if problems:
            raise InputError(file, [f"model {model!r}: {p} ({plan.reason})" for p in problems])
        folder = offload_folder(plan.total_weights_mib)
        storage = params.weights.storage_dtype  # cast before the weights are written: fp8 on disk and in transfer
        components = load_components_to_disk(ckpt, component_dtype_map(dtype), device, folder, storage_dtype=storage)
    pipe = pipeline_cls.from_pretrained(str(ckpt.source), dtype=component_dtype_map(dtype), use_safetensors=True, **components)
    pipe.set_progress_bar_config(disable=True)
    pipe.wan_model_info = info
    pipe.dtype_note = dtype_note
    pipe.offload_folder = folder
    pipe.plan_source = str(ckpt.source)
    if prepare is not None:
        prepare(pipe)
    strategy = apply_memory_strategy(pipe, device, params, str(ckpt.source), plan_size, plan=plan)
    return pipe, strategy


def memory_plan(source: str, device: str, params: ModelParams, dtype, plan_size, stored: dict[str, float] | None = None):
    """The memory plan of one generation of ``plan_size`` (width, height, frames) with the
    preset's ``memory_strategy`` and speed levers on ``device`` (free VRAM and host RAM measured
    now), made before any weight is read; None without a ``plan_size``. stored: measured bytes
    per parameter of loaded denoisers (:func:`stored_weight_bytes`), which replace the levers'
    estimate. See :func:`wan_pipeline.models.plan_memory`."""
    if plan_size is None:
        return None
    from wan_pipeline.models import plan_for_model

    width, height, frames = plan_size
    name = str(dtype).removeprefix("torch.")
    levers = lever_plan_kwargs(source, params, width, height, frames, name)
    if stored:
        levers["weight_bytes"] = {**levers.get("weight_bytes", {}), **stored}
    _, plan = plan_for_model(
        source, width=width, height=height, frames=frames, dtype=name, strategy=params.memory_strategy, device=device, **levers
    )
    return plan


def stored_weight_bytes(pipe, source: str) -> dict[str, float]:
    """``{denoiser: bytes per parameter}`` as the loaded weights are stored (a ``.gguf`` file at
    its quantized size, an fp8 file kept in fp8: 1.0), measured from the tensors against the
    parameter count of the configs at ``source``; denoisers that cannot be measured are left out."""
    from wan_pipeline.engines.levers import denoisers
    from wan_pipeline.models import read_checkpoint
    from wan_pipeline.models.memory import component_parameters

    try:
        counts = component_parameters(read_checkpoint(source))
    except InputError:
        return {}
    out = {}
    for name, module in denoisers(pipe):
        stats = counts.get(name)
        if stats is None or not stats.total:
            continue
        stored = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
        out[name] = stored / stats.total
    return out


def disk_offload_problems(params: ModelParams) -> list[str]:
    """The speed levers that cannot apply to a pipeline whose weights are offloaded to disk while
    loading (:mod:`~wan_pipeline.engines.disk_offload`): preset LoRAs (fused into weights that
    already sit in the offload files) and torchao quantization; fp8 ``weights.storage_dtype``
    does apply (cast before the files are written)."""
    out = []
    if params.loras:
        out.append(
            "loras: preset LoRAs cannot be fused into weights offloaded to disk while loading: give them in the "
            "scenes (applied as adapters), or run on a machine with more host RAM"
        )
    if params.weights.quantization != "none":
        out.append("weights.quantization: torchao cannot quantize weights offloaded to disk: use weights.storage_dtype")
    return out


def model_dtype(name: str, device: str):
    """``(torch dtype, note)`` for a stage's ``dtype``. ``auto``: bfloat16 on a CUDA GPU with native
    bf16 (compute capability 8.0+; Wan was trained in bf16: Wan2.1 report), float16 on an older
    GPU with a note saying so (fp16 activations can overflow), float32 on the CPU. A named dtype
    is taken as is (note None). Raises :class:`InputError` for an unknown name."""
    import torch

    from wan_pipeline.devices import torch_dtype

    if name != "auto" or not device.startswith("cuda"):
        return torch_dtype(name, device), None
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16, None
    return torch.float16, (
        "this GPU has no native bfloat16: running in float16 although Wan was trained in bf16; "
        "set `dtype: float32` if frames come out black or noisy"
    )


def component_dtype_map(dtype) -> dict:
    """The per-component dtype map given to diffusers' ``from_pretrained``: ``dtype`` for the
    denoisers and text encoder, float32 for the VAE and the CLIP image encoder (the diffusers Wan
    examples and the official Wan code keep both in float32: conditioning latents, VACE context
    and every decode keep their precision; :data:`FULL_PRECISION_COMPONENTS`)."""
    import torch

    from wan_pipeline.models.memory import FULL_PRECISION_COMPONENTS

    return {"default": dtype, **{name: torch.float32 for name in FULL_PRECISION_COMPONENTS}}


def component_dtypes(pipe) -> dict[str, str]:
    """``{component: dtype name}`` of a loaded pipeline's weighted components, e.g.
    ``{"transformer": "bfloat16", "vae": "float32", "image_encoder": "float32", ...}``
    (telemetry key ``component_dtypes``)."""
    import torch

    out = {}
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            counts: dict[str, int] = {}
            for param in module.parameters():
                key = str(param.dtype).removeprefix("torch.")
                counts[key] = counts.get(key, 0) + param.numel()
            if counts:  # the dtype of most weights (diffusers keeps a few norms/tables in float32)
                out[name] = max(counts, key=counts.get)
    return out


def planned_strategy(source: str, device: str, params: ModelParams, plan_size, plan=None) -> tuple[str, bool, bool]:
    """``(strategy, vae_tiling, vae_slicing)``: the preset's, or for ``auto`` the memory planner's
    choice (``plan``, else planned now) from the checkpoint's parameter counts, the device's free
    VRAM (NVML/torch) and the available host RAM."""
    if params.memory_strategy != "auto":
        return params.memory_strategy, params.vae_tiling, params.vae_slicing
    if plan is None and plan_size is None:
        return "full_gpu", params.vae_tiling, params.vae_slicing
    if plan is None:
        plan = memory_plan(source, device, params, "bfloat16" if params.dtype == "auto" else params.dtype, plan_size)
    return plan.chosen_strategy, params.vae_tiling or plan.vae_tiling, params.vae_slicing or plan.vae_slicing


def apply_memory_strategy(pipe, device: str, params: ModelParams, source: str | None = None, plan_size=None, plan=None) -> str:
    """Place ``pipe`` with diffusers' own offload methods; returns the strategy applied
    (``group_offload`` for a pipeline whose components :mod:`~wan_pipeline.engines.disk_offload`
    already offloaded to disk: ``pipe.offload_folder`` set)."""
    from wan_pipeline.devices import device_index

    if device.startswith("cuda") and (source is not None or plan is not None):
        strategy, tiling, slicing = planned_strategy(source, device, params, plan_size, plan)
    else:
        strategy, tiling, slicing = params.memory_strategy, params.vae_tiling, params.vae_slicing
    vae = getattr(pipe, "vae", None)
    if vae is not None and tiling:
        vae.enable_tiling()
    if vae is not None and slicing:
        vae.enable_slicing()
    if not device.startswith("cuda"):
        pipe.to(device)
        return "cpu"
    strategy = "full_gpu" if strategy == "auto" else strategy
    gpu = device_index(device) or 0
    if getattr(pipe, "offload_folder", None) is not None:
        return "group_offload"  # placed while loading (disk_offload)
    if strategy == "full_gpu":
        pipe.to(device)
    elif strategy == "model_cpu_offload":
        pipe.enable_model_cpu_offload(gpu_id=gpu)
    elif strategy == "sequential_cpu_offload":
        pipe.enable_sequential_cpu_offload(gpu_id=gpu)
    elif strategy == "group_offload":
        import torch

        # use_stream: the next block is copied on a side CUDA stream while this one computes
        pipe.enable_group_offload(
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=True,
        )
    return strategy


def release_pipeline(pipe) -> None:
    """Drop the pipeline's hooks and free its memory (host and CUDA cache)."""
    if pipe is None:
        return
    try:
        pipe.remove_all_hooks()
    except Exception:  # noqa: BLE001 - a pipeline without hooks has nothing to remove
        pass
    from wan_pipeline.engines.disk_offload import remove_offload_folder

    remove_offload_folder(pipe)
    del pipe
    free_device_memory()


def to_uint8_frames(video) -> np.ndarray:
    """diffusers ``output_type='np'`` video float [0, 1] (1, T, H, W, 3) or (T, H, W, 3) → uint8 (T, H, W, 3)."""
    arr = np.asarray(video)
    if arr.ndim == 5:
        arr = arr[0]
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def checkpoint_variant(pipe) -> str | None:
    """The Wan variant of the loaded checkpoint (e.g. ``Wan2.1-FLF2V-14B``), as identified from its
    configs by :func:`wan_pipeline.models.identify` when it was loaded; None for other models."""
    info = getattr(pipe, "wan_model_info", None)
    return info.variant if info is not None else None


NATIVE_SIZE_TOLERANCE = 0.05
"""Relative difference of width and height from a native size still counted as that size
(1280x720 vs TI2V's 1280x704: 2.3 %)."""


def native_size_warning(pipe, width: int, height: int) -> str | None:
    """A warning when ``width``×``height`` is not near any native size of the loaded Wan model
    (e.g. VACE-1.3B, a 480P model, at 1280x704), None when it is or when the sizes are unknown
    (miniatures, non-Wan models)."""
    info = getattr(pipe, "wan_model_info", None)
    sizes = [tuple(s) for s in (info.native_sizes if info is not None else [])]
    if not sizes:
        return None
    if any(abs(width - w) <= NATIVE_SIZE_TOLERANCE * w and abs(height - h) <= NATIVE_SIZE_TOLERANCE * h for w, h in sizes):
        return None
    native = ", ".join(f"{w}x{h}" for w, h in sizes)
    return f"{info.variant} was trained at {native}; {width}x{height} is outside that range (expect unstable output; use a model made for this size)"


def pipeline_class_name(model: str) -> str | None:
    """``_class_name`` from a local checkpoint's ``model_index.json`` (None for a repo id)."""
    index = Path(model) / "model_index.json"
    if index.is_file():
        return json.loads(index.read_text()).get("_class_name")
    return None


def step_progress(progress, done_before: int, total: int):
    """A diffusers ``callback_on_step_end`` that reports ``progress(done_before + i + 1, total)``."""

    def callback(pipe, step, timestep, callback_kwargs):
        progress(done_before + step + 1, total)
        return {}

    return callback


def size_multiple(pipe) -> int:
    """Pixels per transformer token side: VAE spatial factor x patch size (16 for Wan2.1, 32 for TI2V-5B)."""
    transformer = pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.transformer_2
    return int(pipe.vae_scale_factor_spatial * transformer.config.patch_size[1])


STEPS_RANGE = (1, 100)  # denoising steps accepted by the model engines (Wan model cards use 20..50)


def check_steps(steps: int, where: str, file: str | None) -> None:
    """Raise :class:`InputError` naming ``where`` unless ``steps`` is within :data:`STEPS_RANGE`."""
    lo, hi = STEPS_RANGE
    if not lo <= steps <= hi:
        raise InputError(file, f"{where}: {steps} steps is outside the supported range {lo}..{hi}")


class DiffusersEngine:
    """What the diffusers-backed engines share: validated preset parameters (``params_model``,
    stage ``stage``), the device, and a pipeline loaded on first use (``_load``) and released by
    :meth:`close`. Subclasses give :meth:`plan_frames`, the frames of one generation, for the
    memory planner."""

    stage = ""
    params_model = ModelParams

    def __init__(self, params: dict, ctx) -> None:
        from wan_pipeline.engines.base import parse_params
        from wan_pipeline.engines.context import EngineContext

        ctx = EngineContext.for_preset(ctx)
        self.params = parse_params(self.params_model, params, ctx, self.stage)
        self.preset = ctx
        self.file = ctx.source_path
        check_steps(self.params.steps, f"stages.{self.stage}.steps", self.file)
        self.device = ctx.device
        if uses_single_file(self.params):  # checked now (file headers only), so preflight reports it
            self.check_single_file(ctx.storage_root)
        guidance = (getattr(self.params, "guidance_scale", None), getattr(self.params, "guidance_scale_2", None))
        validate_levers(self.params, self.stage, self.file, self.device, self.params.steps, guidance)
        self._pipe = None
        self._strategy: str | None = None
        self._levers: LeverState | None = None

    def plan_frames(self) -> int:
        return 1

    def check_single_file(self, root):
        """Resolve the single-file model set of ``params`` (file headers only) and check what the
        levers cannot do to it; returns the :class:`~wan_pipeline.models.model_files.ModelFiles`.
        Raises :class:`InputError` naming the keys and the fix. VACE engines add their checks."""
        from wan_pipeline.models.model_files import resolve_model_files

        files = resolve_model_files(self.params, self.file, root)
        problems = single_file_problems(self.params, self.stage, files)
        if problems:
            raise InputError(self.file, problems)
        return files

    def loaded_info(self) -> dict:
        """Telemetry of the loaded pipeline (empty before it is loaded): ``component_dtypes`` and,
        when ``dtype: auto`` fell back to float16, ``dtype_note``."""
        if self._pipe is None:
            return {}
        out = {"component_dtypes": component_dtypes(self._pipe)}
        if getattr(self._pipe, "dtype_note", None):
            out["dtype_note"] = self._pipe.dtype_note
        return out

    def _load(self, pipeline_cls, source: str | None = None):
        """Load ``pipeline_cls`` (see :func:`load_pipeline`), with the preset's ``flow_shift`` on its
        UniPC scheduler when given."""
        levers: list[LeverState] = []

        def prepare(pipe) -> None:  # before placement: LoRAs fused and weights cast on the host
            resolve = getattr(self.preset, "model_path", None)  # the engine context's, where it has one
            levers.append(apply_levers(pipe, self.params, self.stage, self.file, resolve=resolve))

        pipe, self._strategy = load_pipeline(
            pipeline_cls,
            source or self.params.model,
            self.device,
            self.params,
            self.file,
            plan_size=(self.preset.width, self.preset.height, self.plan_frames()),
            root=self.preset.storage_root,
            prepare=prepare,
        )
        self._levers = levers[0]
        flow_shift = getattr(self.params, "flow_shift", None)
        if flow_shift is not None:
            from diffusers import UniPCMultistepScheduler

            pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=flow_shift)
        plan_size = (self.preset.width, self.preset.height, self.plan_frames())
        self._levers.planned_vram_mib, self._levers.planned_vram_plain_mib = planned_vram(
            pipe.plan_source,
            self.device,
            self.params,
            plan_size,
            stored=getattr(pipe, "stored_weight_bytes", None),
            loaded=getattr(pipe, "loaded_weight_bytes", None),
        )
        return pipe

    @contextlib.contextmanager
    def generation(self, pipe, steps: int, guidance: tuple[float | None, ...] = ()):
        """Around one pipeline call of ``steps`` steps with ``guidance`` scales: the preset's
        cache hook (see :class:`~wan_pipeline.engines.levers.LeverState`); work counts accumulate."""
        if self._levers is None:
            yield
            return
        with self._levers.generation(pipe, steps, guidance):
            yield

    def start_counting(self) -> None:
        """Restart the work counts (at the start of a render)."""
        if self._levers is not None:
            self._levers.reset()

    def lever_describe(self) -> dict:
        """The levers as configured and applied (static telemetry for ``describe()``)."""
        return describe_levers(self.params, self._levers)

    def lever_record(self, steps: int | None, reset: bool = True) -> dict:
        """Telemetry of the speed levers for the generations since the last record (keys:
        :data:`~wan_pipeline.engines.levers.LEVER_TELEMETRY_KEYS`); counts restart if ``reset``."""
        if self._levers is None:
            return {"steps": steps, **self.lever_describe()}
        record = self._levers.telemetry(steps)
        if reset:
            self._levers.reset()
        return record

    def close(self) -> None:
        """Release the pipeline (host memory and CUDA cache)."""
        pipe, self._pipe = self._pipe, None
        self._levers = None
        release_pipeline(pipe)
