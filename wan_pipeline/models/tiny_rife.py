"""Random-weight miniature RIFE 4.6 weights in the official file formats, for tests and preset ``tiny``.

The miniature is the real RIFE 4.6 IFNet (every tensor name, layer and code path of the official
``flownet.pkl``) at reduced widths (16 channels per IFBlock instead of 192/128/96/64). The loader
reads the widths from the tensor shapes, so these files go through exactly the same reader,
key/shape check and network code as the official weights, while being ~0.5 MB instead of ~21 MB (5.3 M float32 parameters at full width)
and fast enough to interpolate real-photo clips on a shared CPU in a test. Weights are drawn from a
fixed seed (deterministic); the last layer of each block is scaled down so the random network
predicts small flows and its output stays a plausible blend of the two frames.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from wan_pipeline.media.atomic import atomic_path

TINY_WIDTHS = (16, 16, 16, 16)


def tiny_rife_state_dict(seed: int = 0, widths: tuple[int, int, int, int] = TINY_WIDTHS) -> dict[str, torch.Tensor]:
    """The miniature's tensors with the official ``module.`` prefix (float32, CPU, contiguous)."""
    from wan_pipeline.models.rife_net import IFNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = IFNet(widths)
        with torch.no_grad():
            for block in (net.block0, net.block1, net.block2, net.block3):
                block.lastconv[0].weight.mul_(0.05)
                block.lastconv[0].bias.zero_()
    return {f"module.{k}": v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def make_tiny_rife(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the miniature RIFE weights to ``path`` atomically and return it.

    ``*.safetensors`` → safetensors file; any other suffix (``flownet.pkl``) → ``torch.save`` of the
    state dict, the official format. Same tensors in both.
    """
    path = Path(path)
    state = tiny_rife_state_dict(seed)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt", "architecture": "RIFE 4.6 IFNet (miniature, random weights)"})
        else:
            torch.save(state, tmp)
    return path


def make_tiny_rife_files(folder: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write ``folder/flownet.pkl`` and ``folder/flownet.safetensors``; returns {format: path}."""
    folder = Path(folder)
    return {
        "pkl": make_tiny_rife(folder / "flownet.pkl", seed),
        "safetensors": make_tiny_rife(folder / "flownet.safetensors", seed),
    }
