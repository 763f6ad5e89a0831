"""Which torch device a stage runs on, without importing torch until it is needed."""

from __future__ import annotations

from wan_pipeline.errors import InputError


def cuda_available() -> bool:
    """True when torch is importable and sees at least one CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pick_device(spec: str | None) -> str:
    """Resolve a preset's ``device`` (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``) to a torch device string.

    ``auto`` is ``cuda:0`` when a CUDA device is present, else ``cpu``. Asking for CUDA on a machine
    without one raises :class:`InputError` with the fix (use ``device: cpu`` or ``auto``).
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda:0" if cuda_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not cuda_available():
            raise InputError(
                None, f"device: {spec!r} requested but no CUDA device is visible; set `device: auto` or `device: cpu` in the preset"
            )
        return "cuda:0" if spec == "cuda" else spec
    raise InputError(None, f"device: {spec!r} is not a device; use auto, cpu, cuda or cuda:N")


def device_index(device: str) -> int | None:
    """``'cuda:1'`` → 1, ``'cuda'`` → 0, ``'cpu'`` → None."""
    if not device.startswith("cuda"):
        return None
    return int(device.split(":")[1]) if ":" in device else 0


def torch_dtype(name: str, device: str):
    """``'auto'`` → bfloat16 on CUDA with bf16 support, float16 on older CUDA, float32 on CPU;
    otherwise the named dtype (``float32``, ``float16``, ``bfloat16``)."""
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "float16": torch.float16,
            "fp16": torch.float16,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
        }[name]
    except KeyError:
        raise InputError(None, f"dtype: {name!r} unknown; use auto, float32, float16 or bfloat16") from None


def free_device_memory() -> None:
    """Collect garbage and empty the CUDA allocator cache (no CUDA: garbage collection only)."""
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
