"""Out-of-memory retries: rebuild a model engine with the next stronger memory strategy.

When a model stage raises ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the
same class in torch ≥ 2.5), the engine is closed, the CUDA cache emptied and the engine rebuilt
with a stronger (slower, leaner) strategy, until the ladder ends; the output's telemetry records
``oom_retries`` and ``memory_strategy``.

The ladder is :func:`wan_pipeline.models.memory.stronger_strategy` (diffusers' offloading modes,
weakest first: model offload moves whole models to the GPU in turn, group offload streams layer
groups, sequential offload streams every layer).
"""

from __future__ import annotations


def is_oom(exc: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA or MPS allocators)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    return isinstance(exc, types)
