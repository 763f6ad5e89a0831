"""RIFE 4.6 frame interpolation (the ``interpolated`` stage engine ``rife``).

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

import contextlib
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from wan_pipeline.engines.base import parse_params
from wan_pipeline.engines.interpolation import interpolate_clip
from wan_pipeline.engines.scene_cuts import CutThresholds
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip, as_fps
from wan_pipeline.storage import model_path

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


def pad_multiple(scale: float) -> int:
    """Size multiple the input needs at RIFE ``scale``: the coarsest level (8/scale) works 4× further
    down, so H and W must divide by 32/scale, and never less than 32."""
    return max(32, int(math.ceil(32 / scale)))


# ---------------------------------------------------------------------------------------------
# weights


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a RIFE weights file as ``{key: tensor}`` with any ``module.`` prefix removed.

    ``.safetensors`` through safetensors; anything else through ``torch.load(weights_only=True)``
    (the official ``flownet.pkl``). Raises :class:`InputError` naming the file when it is missing,
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
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
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


# ---------------------------------------------------------------------------------------------
# inference


class RifeRunner:
    """Runs an :class:`IFNet` on uint8 frame pairs on one device.

    CUDA: inputs converted on the device, fp16 autocast; CPU: float32.
    """

    def __init__(self, net: IFNet, device: str = "cpu", scale: float = 1.0):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.scale = float(scale)
        self.fp16 = self.device.type == "cuda"

    @torch.inference_mode()
    def synthesise(self, first: np.ndarray, second: np.ndarray, t: np.ndarray | list[float]) -> np.ndarray:
        """first, second: uint8 (B, H, W, 3); t: (B,) timesteps in [0, 1]. Returns uint8 (B, H, W, 3).

        Frames are padded (edge replication) to :func:`pad_multiple` and cropped back.
        """
        b, h, w, _ = first.shape
        dev = self.device
        x0 = torch.from_numpy(np.ascontiguousarray(first)).to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        x1 = torch.from_numpy(np.ascontiguousarray(second)).to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        m = pad_multiple(self.scale)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x0 = F.pad(x0, (0, pw, 0, ph), mode="replicate")
            x1 = F.pad(x1, (0, pw, 0, ph), mode="replicate")
        ts = torch.as_tensor(np.asarray(t, dtype=np.float32), device=dev)
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if self.fp16 else contextlib.nullcontext()
        with autocast:
            out = self.net(x0, x1, ts, self.scale)
        out = out[:, :, :h, :w].float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# engine


class RifeParams(BaseModel):
    """Preset parameters of the ``rife`` engine (``stages.interpolated``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="flownet.pkl or .safetensors of RIFE 4.6; relative to the storage root")
    factor: int | None = Field(None, description="2 or 4; default 2 when target_fps is not set")
    target_fps: float | str | None = Field(None, description="output rate, e.g. 30 or '60000/1001'")
    scale: float = Field(1.0, description="RIFE resolution scale: 0.5 for 4K input, 1.0 otherwise")
    batch_size: int = Field(4, ge=1, le=256, description="frame pairs per forward pass")
    scene_cut_threshold: float | None = Field(
        CutThresholds().correlation_below, description="histogram correlation under which a pair is a cut; null disables cut detection"
    )
    scene_cut_difference: float = Field(
        CutThresholds().difference_above, ge=0, le=1, description="mean abs difference (fraction of 255) over which a pair is a cut"
    )

    @model_validator(mode="after")
    def _check(self) -> RifeParams:
        if self.factor is not None and self.target_fps is not None:
            raise ValueError("give factor or target_fps, not both")
        if self.factor is None and self.target_fps is None:
            self.factor = 2
        if self.factor is not None and self.factor not in (2, 4):
            raise ValueError(f"factor must be 2 or 4, got {self.factor}")
        if self.target_fps is not None:
            try:
                as_fps(self.target_fps)
            except (ValueError, ZeroDivisionError) as exc:
                raise ValueError(f"target_fps {self.target_fps!r} is not a positive rate ({exc})") from None
        if self.scale not in ALLOWED_SCALES:
            raise ValueError(f"scale must be one of {', '.join(str(s) for s in ALLOWED_SCALES)}, got {self.scale}")
        return self


class RifeInterpolator:
    """``interpolated`` stage engine ``rife``: RIFE 4.6 by factor 2/4 or to a target fps.

    Built as ``RifeInterpolator(params, preset)``; loads the weights at once (a bad file raises
    :class:`InputError` before anything is written). Output ``Clip.meta`` adds ``interp_factor``
    (exact fps_out / fps_in as float), ``scene_cuts`` (cut pairs found), ``duplicated_frames``
    (frames copied across cuts instead of synthesised), ``synthesised_frames`` and ``model``
    (see :func:`wan_pipeline.engines.interpolation.interpolate_clip`); the audio reference is kept.
    """

    name = "rife"

    def __init__(self, params: dict, preset=None):
        from wan_pipeline.devices import pick_device

        self.params = parse_params(RifeParams, params, preset, "interpolated")
        self.model_path = model_path(self.params.model)
        self.device = pick_device(getattr(preset, "device", "auto"))
        self.thresholds = (
            None
            if self.params.scene_cut_threshold is None
            else CutThresholds(correlation_below=self.params.scene_cut_threshold, difference_above=self.params.scene_cut_difference)
        )
        self.runner: RifeRunner | None = RifeRunner(load_ifnet(self.model_path), self.device, self.params.scale)

    def describe(self) -> dict:
        p = self.params
        return {
            "engine": self.name,
            "model": str(self.model_path),
            "rife_version": RIFE_VERSION,
            "widths": list(self.runner.net.widths) if self.runner else None,
            "factor": p.factor,
            "target_fps": str(as_fps(p.target_fps)) if p.target_fps is not None else None,
            "scale": p.scale,
            "batch_size": p.batch_size,
            "scene_cut_threshold": p.scene_cut_threshold,
            "device": self.device,
            "dtype": "float16" if self.device.startswith("cuda") else "float32",
        }

    def interpolate(self, clip: Clip) -> Clip:
        """clip: frames uint8 (T, H, W, 3) at fps. Returns the clip at factor × fps (k(T − 1) + 1
        frames) or at target_fps (see :mod:`wan_pipeline.engines.frame_timing`)."""
        if self.runner is None:
            self.runner = RifeRunner(load_ifnet(self.model_path), self.device, self.params.scale)
        frames, runner = clip.frames, self.runner

        def synthesise(jobs):
            idx = np.array([a for a, _ in jobs])
            return runner.synthesise(frames[idx], frames[idx + 1], [t for _, t in jobs])

        out = interpolate_clip(
            clip,
            synthesise,
            factor=self.params.factor,
            target_fps=self.params.target_fps,
            cut_thresholds=self.thresholds,
            batch_size=self.params.batch_size,
        )
        out.meta.update(model=str(self.model_path), interp_engine=self.name)
        return out

    def close(self) -> None:
        """Free the network (and its GPU memory)."""
        self.runner = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
