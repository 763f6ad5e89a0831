"""LoRA adapters on a Wan pipeline for one scene: checked, loaded through diffusers/peft, weighted,
and removed again afterwards so the next scene renders with the bare model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.errors import InputError

_FACTOR_SUFFIXES = (
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_B.bias",
    ".lora_A.default.weight",
    ".lora_B.default.weight",
    ".lora_down.weight",
    ".lora_up.weight",
    ".alpha",
    ".diff",
    ".diff_b",
)
"""Key endings of a LoRA state dict as ``pipe.lora_state_dict`` returns it. diffusers converts a
Wan-format bias delta (``diff_b``: CausVid, lightx2v distill LoRAs) into ``lora_B.bias``, which
peft loads as a LoRA bias (``LoraConfig.lora_bias``)."""


class LoraEntry(BaseModel):
    """A preset-level LoRA: ``path`` (safetensors; relative paths are under the storage root),
    ``strength`` (adapter weight, 0..2) and, for two-expert models, which ``expert`` gets it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    strength: float = Field(1.0, ge=0.0, le=2.0)
    expert: Literal["both", "high_noise", "low_noise"] = "both"


def _target_modules(pipe, expert: str) -> list[tuple[str, object]]:
    """The transformer(s) a LoRA goes into: ``transformer`` (high noise) and/or ``transformer_2``."""
    out = []
    if expert in ("both", "high_noise") and getattr(pipe, "transformer", None) is not None:
        out.append(("transformer", pipe.transformer))
    if expert in ("both", "low_noise") and getattr(pipe, "transformer_2", None) is not None:
        out.append(("transformer_2", pipe.transformer_2))
    return out


def check_lora(pipe, path: Path, transformer) -> None:
    """Raise :class:`InputError` naming ``path`` unless every LoRA factor targets a linear layer of
    ``transformer`` with matching shapes (rank x in_features for A, out_features x rank for B,
    out_features for a bias delta ``lora_B.bias``)."""
    import torch

    if not path.is_file():
        raise InputError(str(path), "LoRA file not found")
    if path.suffix != ".safetensors":
        raise InputError(str(path), "LoRA must be a .safetensors file (pickled weights are not loaded)")
    try:
        state = pipe.lora_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is not a usable LoRA
        raise InputError(str(path), f"not a LoRA this model can read: {exc}") from None
    if isinstance(state, tuple):
        state = state[0]
    modules = dict(transformer.named_modules())
    problems: list[str] = []
    for key, tensor in state.items():
        name = key.removeprefix("transformer.").removeprefix("diffusion_model.")
        base = next((name[: -len(s)] for s in _FACTOR_SUFFIXES if name.endswith(s)), None)
        if base is None:
            problems.append(f"{key}: not a LoRA factor")
            continue
        module = modules.get(base)
        if not isinstance(module, torch.nn.Linear):
            problems.append(f"{key}: the model has no linear layer {base!r}")
        elif ".lora_A" in name or ".lora_down" in name:
            if tensor.shape[-1] != module.in_features:
                problems.append(f"{key}: input width {tensor.shape[-1]}, the layer takes {module.in_features}")
        elif ".lora_B" in name or ".lora_up" in name or name.endswith(".diff_b"):
            if tensor.shape[0] != module.out_features:
                problems.append(f"{key}: output width {tensor.shape[0]}, the layer gives {module.out_features}")
        if len(problems) >= 5:
            break
    if not state:
        problems.append("holds no tensors")
    if problems:
        raise InputError(str(path), ["this LoRA does not match the model (made for another architecture or size?)"] + problems)


@contextlib.contextmanager
def loras_applied(pipe, loras: list[tuple[Path, float, str]], log=lambda m: None) -> Iterator[list[str]]:
    """Load ``loras`` — ``(path, strength, expert)`` triples — as peft adapters, weight them, yield
    the adapter names, and remove them all on exit (even when rendering fails).

    Raises :class:`InputError` naming the file for a LoRA that does not fit the model.
    """
    if not loras:
        yield []
        return
    names: list[str] = []
    weights: list[float] = []
    try:
        for i, (path, strength, expert) in enumerate(loras):
            path = Path(path)
            targets = _target_modules(pipe, expert)
            if not targets:
                raise InputError(str(path), f"expert {expert!r}: this model has no such transformer")
            for _, transformer in targets:
                check_lora(pipe, path, transformer)
            name = f"lora{i}_{path.stem}"
            for component, _ in targets:
                pipe.load_lora_weights(str(path), adapter_name=name, load_into_transformer_2=component == "transformer_2")
            names.append(name)
            weights.append(float(strength))
            log(f"LoRA {path.name} loaded into {', '.join(c for c, _ in targets)} at strength {strength}")
        pipe.set_adapters(names, weights)
        yield names
    finally:
        if names:
            pipe.delete_adapters(names)
        # unwrap the LoRA layers (also those of a load that failed half-way): the bare model again
        pipe.unload_lora_weights()
