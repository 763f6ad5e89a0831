"""RIFE 4.6 frame interpolation (the ``interpolated`` stage engine ``rife``).

The network and its weight files are :mod:`wan_pipeline.models.rife_net` (IFNet of Practical-RIFE
v4.6, Huang et al., ECCV 2022, arXiv 2011.06294); this module runs it on frame pairs.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from wan_pipeline.engines.base import parse_params
from wan_pipeline.engines.interpolation import interpolate_clip
from wan_pipeline.engines.scene_cuts import CutThresholds
from wan_pipeline.media.clip import Clip, as_fps
from wan_pipeline.media.stream import FrameStream
from wan_pipeline.models.rife_net import (  # noqa: F401 (re-exported for callers of the engine module)
    ALLOWED_SCALES,
    LEVELS,
    OFFICIAL_WIDTHS,
    RIFE_VERSION,
    IFNet,
    backward_warp,
    first_mismatch,
    load_ifnet,
    read_state_dict,
)


def pad_multiple(scale: float) -> int:
    """Size multiple the input needs at RIFE ``scale``: the coarsest level (8/scale) works 4× further
    down, so H and W must divide by 32/scale, and never less than 32."""
    return max(32, int(math.ceil(32 / scale)))


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

    Built as ``RifeInterpolator(params, ctx)`` (an :class:`~wan_pipeline.engines.context.EngineContext`); loads the weights at once (a bad file raises
    :class:`InputError` before anything is written). Output ``Clip.meta`` adds ``interp_factor``
    (exact fps_out / fps_in as float), ``scene_cuts`` (cut pairs found), ``duplicated_frames``
    (frames copied across cuts instead of synthesised), ``synthesised_frames`` and ``model``
    (see :func:`wan_pipeline.engines.interpolation.interpolate_clip`); the audio reference is kept.
    """

    name = "rife"

    @classmethod
    def check(cls, params: dict, ctx) -> None:
        """The pre-render check: parameters and the weight file's tensor names and shapes, without
        loading the weights. Raises :class:`~wan_pipeline.errors.InputError`."""
        from wan_pipeline.engines.context import EngineContext
        from wan_pipeline.models.rife_net import check_ifnet_file

        ctx = EngineContext.for_preset(ctx)
        check_ifnet_file(ctx.model_path(parse_params(RifeParams, params, ctx, "interpolated").model))

    def __init__(self, params: dict, ctx=None):
        from wan_pipeline.engines.context import EngineContext

        ctx = EngineContext.for_preset(ctx)
        self.params = parse_params(RifeParams, params, ctx, "interpolated")
        self.model_path = ctx.model_path(self.params.model)
        self.device = ctx.device
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

    def interpolate(self, clip: Clip | FrameStream) -> Clip | FrameStream:
        """clip: a :class:`Clip` or :class:`FrameStream` of uint8 (H, W, 3) frames at fps. Returns
        the same form at factor × fps (k(T − 1) + 1 frames) or at target_fps (see
        :mod:`wan_pipeline.engines.frame_timing`); a stream is computed ``batch_size`` pairs at a time."""
        if self.runner is None:
            self.runner = RifeRunner(load_ifnet(self.model_path), self.device, self.params.scale)
        runner = self.runner

        def synthesise(jobs, frames):
            return runner.synthesise(
                np.stack([frames[a] for a, _ in jobs]), np.stack([frames[a + 1] for a, _ in jobs]), [t for _, t in jobs]
            )

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
