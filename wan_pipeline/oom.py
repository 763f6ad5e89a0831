"""Out-of-memory retries: rebuild a model engine with the next stronger memory strategy.

When a model stage raises ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the
same class in torch ≥ 2.5), the engine is closed, the CUDA cache emptied and the engine rebuilt
with a stronger (slower, leaner) strategy, until the ladder ends; the output's telemetry records
``oom_retries`` and ``memory_strategy``.

The ladder is ``wan_pipeline.models.memory.stronger_strategy`` when that module exists, else the
fallback below (diffusers' offloading modes, weakest first: model offload moves whole models to
the GPU in turn, VAE tiling decodes in tiles, group offload streams layer groups, sequential
offload streams every layer).
"""

from __future__ import annotations

import gc

FALLBACK_LADDER = ("full_gpu", "model_cpu_offload", "vae_tiling", "group_offload", "sequential_cpu_offload")


def _fallback_stronger(name: str) -> str | None:
    if name not in FALLBACK_LADDER:
        return FALLBACK_LADDER[1]
    i = FALLBACK_LADDER.index(name)
    return FALLBACK_LADDER[i + 1] if i + 1 < len(FALLBACK_LADDER) else None


def stronger_strategy(name: str) -> str | None:
    """The memory strategy to try after ``name`` ran out of memory; None when none is stronger."""
    try:
        from wan_pipeline.models.memory import stronger_strategy as models_stronger
    except ImportError:
        return _fallback_stronger(name)
    return models_stronger(name)


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA or MPS allocators)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    return isinstance(exc, types)


def free_device_memory() -> None:
    """Collect garbage and empty the CUDA cache (no-op without CUDA)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
