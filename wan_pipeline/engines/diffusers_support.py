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
    validate_levers,
)
from wan_pipeline.errors import InputError
from wan_pipeline.storage import storage_root

MemoryStrategy = Literal["auto", "full_gpu", "model_cpu_offload", "group_offload", "sequential_cpu_offload"]


class ModelParams(LeverParams):
    """Preset fields every model engine accepts (with the speed levers of :class:`LeverParams`).

    model: repo id (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``), absolute folder, or folder relative to
        the storage root (``models/tiny/wan21-i2v``).
    memory_strategy: how the pipeline sits on the GPU (ignored on CPU); ``auto`` is ``full_gpu``.
    vae_tiling / vae_slicing: decode the VAE in spatial tiles / one sample at a time.
    dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``float16``, ``bfloat16``.
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


def resolve_model_source(model: str) -> str:
    """Turn a preset's ``model`` into what ``from_pretrained`` takes.

    An absolute path or a path relative to :func:`storage_root` that exists is returned as a
    folder path; ``models/tiny/<name>`` (a miniature checkpoint) is generated on first use; a
    string shaped like ``owner/name`` that is no local folder is a Hugging Face repo id, returned
    as is. Anything else raises :class:`InputError` naming the folder looked at.
    """
    from wan_pipeline.models.tiny import TINY_MODELS, make_tiny_models

    path = Path(model).expanduser()
    local = path if path.is_absolute() else storage_root() / path
    if (local / "model_index.json").is_file():
        return str(local)
    if local.parent.name == "tiny" and local.name in TINY_MODELS:
        make_tiny_models(local.parent, names=(local.name,))
        return str(local)
    if path.is_absolute() or model.startswith(".") or local.exists():
        raise InputError(
            str(local),
            "no diffusers checkpoint here (model_index.json missing): point `model:` at a diffusers folder or a Hugging Face repo id",
        )
    if model.count("/") == 1:
        return model
    raise InputError(str(local), f"model {model!r} is neither a folder under {storage_root()} nor a repo id 'owner/name'")


def load_pipeline(
    pipeline_cls,
    model: str,
    device: str,
    params: ModelParams,
    file: str | None = None,
    plan_size: tuple[int, int, int] | None = None,
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

    Returns ``(pipeline, memory_strategy)`` where ``memory_strategy`` is what was applied: ``cpu``
    on a CPU device, else the preset's strategy or the planner's choice for ``auto``.
    """
    from wan_pipeline.devices import torch_dtype
    from wan_pipeline.models import check_loadable, identify, read_checkpoint

    source = resolve_model_source(model)
    try:
        ckpt = read_checkpoint(source)
        check_loadable(ckpt)
    except InputError as exc:
        raise InputError(file, f"model {model!r}: {exc}") from None
    info = None
    if str(ckpt.index.class_name or "").startswith("Wan"):
        info = identify(ckpt)
    dtype = torch_dtype(params.dtype, device)
    quiet_hub_progress()
    pipe = pipeline_cls.from_pretrained(str(ckpt.source), dtype=dtype, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.wan_model_info = info
    if prepare is not None:
        prepare(pipe)
    strategy = apply_memory_strategy(pipe, device, params, str(ckpt.source), plan_size)
    return pipe, strategy


def quiet_hub_progress() -> None:
    """Turn off the per-file loading/saving bars of diffusers, transformers and huggingface_hub
    (they interleave with the stage progress on stderr; the stage log says what was loaded)."""
    import diffusers
    import huggingface_hub
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def planned_strategy(source: str, device: str, params: ModelParams, plan_size) -> tuple[str, bool, bool]:
    """``(strategy, vae_tiling, vae_slicing)``: the preset's, or for ``auto`` the memory planner's
    choice from the checkpoint's parameter counts and the device's free VRAM (NVML/torch)."""
    if params.memory_strategy != "auto":
        return params.memory_strategy, params.vae_tiling, params.vae_slicing
    if plan_size is None:
        return "full_gpu", params.vae_tiling, params.vae_slicing
    from wan_pipeline.models import plan_for_model

    width, height, frames = plan_size
    dtype = "bfloat16" if params.dtype == "auto" else params.dtype
    levers = lever_plan_kwargs(source, params, width, height, frames, dtype)
    _, plan = plan_for_model(source, width=width, height=height, frames=frames, dtype=dtype, strategy="auto", device=device, **levers)
    return plan.chosen_strategy, params.vae_tiling or plan.vae_tiling, params.vae_slicing or plan.vae_slicing


def apply_memory_strategy(pipe, device: str, params: ModelParams, source: str | None = None, plan_size=None) -> str:
    """Place ``pipe`` with diffusers' own offload methods; returns the strategy applied."""
    from wan_pipeline.devices import device_index

    if device.startswith("cuda") and source is not None:
        strategy, tiling, slicing = planned_strategy(source, device, params, plan_size)
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
    if strategy == "full_gpu":
        pipe.to(device)
    elif strategy == "model_cpu_offload":
        pipe.enable_model_cpu_offload(gpu_id=gpu)
    elif strategy == "sequential_cpu_offload":
        pipe.enable_sequential_cpu_offload(gpu_id=gpu)
    elif strategy == "group_offload":
        import torch

        pipe.enable_group_offload(
            onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
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

    def __init__(self, params: dict, preset) -> None:
        from wan_pipeline.devices import pick_device
        from wan_pipeline.engines.base import parse_params

        self.params = parse_params(self.params_model, params, preset, self.stage)
        self.preset = preset
        self.file = getattr(preset, "source_path", None)
        check_steps(self.params.steps, f"stages.{self.stage}.steps", self.file)
        self.device = pick_device(getattr(preset, "device", "auto"))
        guidance = (getattr(self.params, "guidance_scale", None), getattr(self.params, "guidance_scale_2", None))
        validate_levers(self.params, self.stage, self.file, self.device, self.params.steps, guidance)
        self._pipe = None
        self._strategy: str | None = None
        self._levers: LeverState | None = None

    def plan_frames(self) -> int:
        return 1

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
            prepare=prepare,
        )
        self._levers = levers[0]
        flow_shift = getattr(self.params, "flow_shift", None)
        if flow_shift is not None:
            from diffusers import UniPCMultistepScheduler

            pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=flow_shift)
        plan_size = (self.preset.width, self.preset.height, self.plan_frames())
        self._levers.planned_vram_mib, self._levers.planned_vram_plain_mib = planned_vram(
            resolve_model_source(source or self.params.model), self.device, self.params, plan_size
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
