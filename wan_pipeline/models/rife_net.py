"""The RIFE 4.6 network (IFNet) and its weight files; the engine is :mod:`wan_pipeline.engines.rife`.

The network is IFNet as released in Practical-RIFE v4.6 (Huang et al., "Real-Time Intermediate
Flow Estimation for Video Frame Interpolation", ECCV 2022, arXiv 2011.06294; v4.x adds the timestep
as an input channel, so any t in (0, 1) can be asked for). Written for this project from the paper
and the published architecture: four IFBlocks refine bidirectional intermediate flows
F_t→0, F_t→1 and a fusion mask coarse-to-fine at 1/8, 1/4, 1/2 and 1/1 of the input (times
1/``scale``); each block sees both frames backward-warped by the current flow; the output is
mask · warp(I0, F_t→0) + (1 − mask) · warp(I1, F_t→1).

Weights: the official ``flownet.pkl`` of v4.6 loads with ``strict=True`` once the ``module.``
prefix (from DataParallel) is stripped; its tensors are

    block{0..3}.conv0.{0,1}.0.{weight,bias}          two stride-2 3×3 convs (c/2, c channels)
    block{0..3}.convblock.{0..7}.{conv.weight,conv.bias,beta}   residual 3×3 convs, beta (1, c, 1, 1)
    block{0..3}.lastconv.0.{weight,bias}             ConvTranspose2d(c, 24, 4, 2, 1), then PixelShuffle(2)

with widths c = 192, 128, 96, 64 and input channels 7 (I0, I1, t) for block0 and 12 (warped I0,
warped I1, t, mask, flow) for the others. The widths are read from the file's shapes, so a
reduced-width file in the same format (the project's random-weight miniature, see
:mod:`wan_pipeline.models.tiny_rife`) loads through the same code. Files are read with
``torch.load(weights_only=True)`` (never arbitrary unpickling) or as ``.safetensors``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from wan_pipeline.errors import InputError

RIFE_VERSION = "4.6"
OFFICIAL_WIDTHS = (192, 128, 96, 64)
"""IFBlock widths of Practical-RIFE v4.6 (the official flownet.pkl)."""
LEVELS = (8, 4, 2, 1)
"""Downscale of each IFBlock at ``scale`` 1 (coarse to fine)."""
ALLOWED_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


# ---------------------------------------------------------------------------------------------
# network


def _conv_act(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class ResidualConv(nn.Module):
    """3×3 conv with a learned per-channel gain ``beta`` on the residual branch, then LeakyReLU."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, width, 1, 1))
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One pyramid level: predicts a flow update (4 channels) and mask update (1 channel).

    Input x: (B, in_channels − 4·[flow given], H, W); flow: (B, 4, H, W) or None. Works at
    1/``level`` of the input size (4× further down inside), returns at the input size.
    """

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv_act(in_channels, width // 2, 2), _conv_act(width // 2, width, 2))
        self.convblock = nn.Sequential(*[ResidualConv(width) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 24, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        if level != 1:
            x = F.interpolate(x, scale_factor=1.0 / level, mode="bilinear", align_corners=False)
        if flow is not None:
            if level != 1:
                flow = F.interpolate(flow, scale_factor=1.0 / level, mode="bilinear", align_corners=False) / level
            x = torch.cat((x, flow), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        if level != 1:
            out = F.interpolate(out, scale_factor=level, mode="bilinear", align_corners=False)
        return out[:, :4] * level, out[:, 4:5]


_GRIDS: dict = {}


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) at pixel + ``flow`` (B, 2, H, W; x then y, in pixels).

    Bilinear, border padding, computed in float32.
    """
    b, _, h, w = image.shape
    key = (h, w, image.device)
    grid = _GRIDS.get(key)
    if grid is None:
        ys = torch.linspace(-1.0, 1.0, h, device=image.device)
        xs = torch.linspace(-1.0, 1.0, w, device=image.device)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0).unsqueeze(0)  # (1, 2, H, W)
        _GRIDS[key] = grid
    norm = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=image.device).view(1, 2, 1, 1)
    coords = (grid + flow.float() / norm).permute(0, 2, 3, 1)
    return F.grid_sample(image.float(), coords, mode="bilinear", padding_mode="border", align_corners=True).to(image.dtype)


class IFNet(nn.Module):
    """RIFE 4.6 IFNet. widths: the four IFBlock widths (official: 192, 128, 96, 64)."""

    def __init__(self, widths: tuple[int, int, int, int] = OFFICIAL_WIDTHS):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.block0 = IFBlock(7, self.widths[0])
        self.block1 = IFBlock(8 + 4, self.widths[1])
        self.block2 = IFBlock(8 + 4, self.widths[2])
        self.block3 = IFBlock(8 + 4, self.widths[3])

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, t: torch.Tensor | float, scale: float = 1.0) -> torch.Tensor:
        """img0, img1: (B, 3, H, W) in [0, 1], H and W multiples of :func:`pad_multiple` (scale).
        t: timestep, a float or (B,) / (B, 1, 1, 1) tensor, 0 → img0's time, 1 → img1's.
        Returns the frame at time t, (B, 3, H, W) in [0, 1].
        """
        b, _, h, w = img0.shape
        if not torch.is_tensor(t):
            t = torch.full((b,), float(t), device=img0.device)
        tmap = t.reshape(b, 1, 1, 1).to(img0.dtype).expand(b, 1, h, w)
        flow = mask = None
        warped0, warped1 = img0, img1
        for block, level in zip((self.block0, self.block1, self.block2, self.block3), LEVELS):
            level = level / scale
            if flow is None:
                flow, mask = block(torch.cat((img0, img1, tmap), 1), None, level)
            else:
                d_flow, d_mask = block(torch.cat((warped0, warped1, tmap, mask), 1), flow, level)
                flow, mask = flow + d_flow, mask + d_mask
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


# ---------------------------------------------------------------------------------------------
# weights


def read_state_dict(path: str | os.PathLike, meta: bool = False) -> dict[str, torch.Tensor]:
    """Read a RIFE weights file as ``{key: tensor}`` with any ``module.`` prefix removed.

    ``.safetensors`` through safetensors; anything else through ``torch.load(weights_only=True)``
    (the official ``flownet.pkl``). meta: tensors on the ``meta`` device (names and shapes only,
    no weight data read). Raises :class:`InputError` naming the file when it is missing,
    unreadable, or not a flat mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            str(path),
            "RIFE weights file not found; set stages.interpolated.model to the path of "
            "Practical-RIFE v4.6 flownet.pkl (or its .safetensors), relative to the storage root",
        )
    try:
        if path.suffix.lower() == ".safetensors" and meta:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                state = {k: torch.empty(fh.get_slice(k).get_shape(), device="meta") for k in fh.keys()}  # noqa: SIM118
        elif path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="meta" if meta else "cpu", weights_only=True, mmap=meta)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise InputError(str(path), f"cannot be read as RIFE weights ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(str(path), "is not a state dict of tensors (expected the flownet.pkl of Practical-RIFE v4.6)")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def _widths_from(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    widths = []
    for i, default in enumerate(OFFICIAL_WIDTHS):
        w = state.get(f"block{i}.conv0.1.0.weight")
        widths.append(int(w.shape[0]) if w is not None and w.ndim == 4 and w.shape[0] % 2 == 0 else default)
    return tuple(widths)


def first_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """The first difference between a module's state dict and a file's, as a sentence, or None.

    Expected keys are checked in module order (missing, then shape), then the file's extra keys.
    """
    for key, ref in expected.items():
        if key not in state:
            return f"tensor {key!r} is missing"
        if tuple(state[key].shape) != tuple(ref.shape):
            return f"tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}"
    for key in state:
        if key not in expected:
            return f"unexpected tensor {key!r}"
    return None


def load_ifnet(path: str | os.PathLike) -> IFNet:
    """Build an :class:`IFNet` from a RIFE 4.6 weights file (official or miniature), on CPU, eval mode.

    Raises :class:`InputError` naming the file and the first mismatching key (missing, shape or
    unexpected) when its tensors do not match the architecture.
    """
    state = read_state_dict(path)
    net = IFNet(_widths_from(state))
    problem = first_mismatch(net.state_dict(), state)
    if problem:
        raise InputError(
            str(path),
            f"{problem}: the file is not a RIFE {RIFE_VERSION} IFNet "
            "(Practical-RIFE v4.6 flownet.pkl); other RIFE versions are not supported",
        )
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return net.eval()


def check_ifnet_file(path: str | os.PathLike) -> None:
    """Check that ``path`` holds RIFE 4.6 IFNet weights from the tensor names and shapes alone
    (nothing is loaded: the pre-render check). Raises :class:`InputError` as :func:`load_ifnet`."""
    state = read_state_dict(path, meta=True)
    with torch.device("meta"):
        net = IFNet(_widths_from(state))
    problem = first_mismatch(net.state_dict(), state)
    if problem:
        raise InputError(
            str(path),
            f"{problem}: the file is not a RIFE {RIFE_VERSION} IFNet (Practical-RIFE v4.6 flownet.pkl); other RIFE versions are not supported",
        )
