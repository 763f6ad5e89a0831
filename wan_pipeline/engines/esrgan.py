"""Real-ESRGAN upscaling (stage ``upscaled``, registry name ``realesrgan``) through spandrel.

Any single-image super-resolution checkpoint that spandrel recognises works: RealESRGAN_x4plus,
RealESRGAN_x2plus, RealESRGAN_x4plus_anime_6B (RRDBNet), realesr-general-x4v3
(SRVGGNetCompact), and the other SR architectures spandrel knows. The scale is read from the model.

Speed: frames are uploaded as uint8 and converted to float, run through the model, and converted
back to uint8 on the device; only uint8 crosses the bus. On CUDA the download of one batch goes
through pinned memory while the next batch is already queued, so the GPU is not idle while the
CPU copies frames out (or resizes them).

Tiling: a tile is the input patch given to the network, ``tile`` pixels square at most (without a
preset ``tile``, sized from the memory free when the stage runs, not when the engine is built), of which
``tile_overlap`` pixels on each side are context only: each output pixel comes from the one tile
whose kept centre contains it (crop-the-centre), so there is no seam as long as the network's
receptive field is within the overlap; the remaining difference is rounding (≤ 1 grey level in
tests).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.engines.base import parse_params
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.stream import FrameStream, as_stream, batched, check_window, like_input

#: Fraction of free memory the default tile may use: of ``torch.cuda.mem_get_info()`` free bytes
#: on CUDA (the rest is left to the allocator's fragmentation and other processes), of
#: ``psutil.virtual_memory().available`` on CPU (the frames themselves also live in RAM).
CUDA_MEMORY_FRACTION = 0.5
CPU_MEMORY_FRACTION = 0.25
#: Feature maps assumed alive at once per input pixel: four maps at output resolution (scale²
#: pixels each: upsample, conv in/out, activation) plus eight at input resolution (dense blocks).
HR_MAPS, LR_MAPS = 4, 8
TILE_MIN, TILE_MAX, TILE_ROUND = 64, 2048, 16
#: Weight files in torch's pickle format, loaded weights-only (see :func:`load_sr_model`).
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class RealEsrganParams(BaseModel):
    """Preset parameters of the ``realesrgan`` engine (``stages.upscaled``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="weights file (.pth/.pt state dict or .safetensors); relative paths are under the storage root")
    tile: int | None = Field(None, ge=16, description="input tile size in pixels; default from free memory")
    tile_overlap: int = Field(16, ge=0, description="context pixels on each side of a tile, discarded")
    batch_size: int | None = Field(None, ge=1, description="frames per forward pass; default 4 on CUDA, 1 on CPU")
    height: int | None = Field(None, ge=16, le=8640, description="final Lanczos resize to this height (keeps aspect, even width)")
    scale: float | None = Field(
        None, gt=0, le=16, description="final output scale vs the input; resized after the model when it differs from the model's scale"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


def load_sr_model(path: Path, device: str = "cpu"):
    """Load a single-image super-resolution model with spandrel.

    Pickle-based files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) are read with
    ``torch.load(weights_only=True)``: tensors and plain containers only, never a TorchScript
    program or arbitrary pickled objects (spandrel itself would run ``torch.jit.load`` on a
    ``.pt``); ``.safetensors`` go through spandrel's loader.

    Returns the spandrel ``ImageModelDescriptor`` (in eval mode, on ``device``; ``meta``: the
    architecture from the tensor names and shapes only, no weight data read — the pre-render
    check). Raises :class:`InputError` naming ``path`` when the file is missing, unreadable, not a
    model spandrel knows (spandrel's message included), or not an RGB super-resolution model
    (scale > 1).
    """
    import spandrel
    import torch

    if not path.is_file():
        raise InputError(
            str(path), "model: weights file not found; put the Real-ESRGAN weights there or fix `stages.upscaled.model` in the preset"
        )
    loader = spandrel.ModelLoader(device=device)
    try:
        meta = device == "meta"
        state = None
        if path.suffix.lower() in PICKLE_SUFFIXES:
            try:
                state = torch.load(path, map_location=device, weights_only=True, mmap=meta)
            except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError…
                # torch's own text suggests weights_only=False, which is exactly what must not happen
                why = "it holds objects other than tensors" if isinstance(exc, pickle.UnpicklingError) else str(exc).splitlines()[0][:200]
                raise InputError(
                    str(path),
                    f"model: cannot load the weights ({type(exc).__name__}: {why}); only plain tensors are read "
                    "(no TorchScript, no pickled objects): give a state dict (.pth) or a .safetensors file",
                ) from None
            if not isinstance(state, dict):
                raise InputError(str(path), "model: the file holds no state dict; give a state dict (.pth) or a .safetensors file")
        elif meta:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                state = {k: torch.empty(fh.get_slice(k).get_shape(), device="meta") for k in fh.keys()}  # noqa: SIM118
        if meta:
            with torch.device("meta"):
                desc = loader.load_from_state_dict(spandrel.canonicalize_state_dict(state))
        elif state is not None:
            desc = loader.load_from_state_dict(state)
        else:
            desc = loader.load_from_file(path)
    except InputError:
        raise
    except Exception as exc:  # spandrel / torch raise many types for bad files
        raise InputError(
            str(path),
            f"model: cannot load the weights ({type(exc).__name__}: {exc}); the file is corrupt or not a super-resolution checkpoint",
        ) from exc
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise InputError(
            str(path),
            f"model: {desc.architecture.name} is not a single-image model (purpose {desc.purpose}); use a super-resolution checkpoint",
        )
    if desc.purpose != "SR" or desc.scale < 2:
        raise InputError(
            str(path), f"model: {desc.architecture.name} is a {desc.purpose} model with scale {desc.scale}, not a super-resolution upscaler"
        )
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise InputError(
            str(path),
            f"model: {desc.architecture.name} takes {desc.input_channels} and gives {desc.output_channels} channels; RGB (3) is needed",
        )
    return desc.eval()


def default_tile(desc, device: str, batch: int, elem_bytes: int) -> int:
    """Largest tile (pixels, square) whose activations fit the free-memory budget.

    Rule: bytes per input pixel ≈ elem_bytes × C × (HR_MAPS × scale² + LR_MAPS), C the widest
    convolution of the model; budget = CUDA_MEMORY_FRACTION × free CUDA memory, or
    CPU_MEMORY_FRACTION × available RAM; tile = √(budget / (batch × bytes per pixel)), rounded
    down to a multiple of 16 and clamped to [64, 2048].
    """
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget = CUDA_MEMORY_FRACTION * free
    else:
        import psutil

        budget = CPU_MEMORY_FRACTION * psutil.virtual_memory().available
    widest = max((m.out_channels for m in desc.model.modules() if isinstance(m, torch.nn.Conv2d)), default=64)
    per_pixel = elem_bytes * widest * (HR_MAPS * desc.scale**2 + LR_MAPS)
    side = int(math.sqrt(budget / (batch * per_pixel)))
    return max(TILE_MIN, min(TILE_MAX, side // TILE_ROUND * TILE_ROUND))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class RealEsrganUpscaler:
    """Upscale clips with a Real-ESRGAN (or other spandrel SR) checkpoint, tiled and batched.

    Built as ``RealEsrganUpscaler(params, ctx)`` (an :class:`~wan_pipeline.engines.context.EngineContext`); params: see :class:`RealEsrganParams`.
    The weights are loaded here, so a missing, corrupt or non-SR file raises
    :class:`InputError` naming the file before any frame is processed.
    Precision: float16 on CUDA where the model supports it (``dtype: auto``), float32 on CPU.
    """

    name = "realesrgan"

    @classmethod
    def check(cls, params: dict, ctx) -> None:
        """The pre-render check: parameters and the weight file's architecture (scale, channels)
        from its tensor names and shapes, without loading the weights. Raises
        :class:`~wan_pipeline.errors.InputError`."""
        from wan_pipeline.engines.context import EngineContext

        ctx = EngineContext.for_preset(ctx)
        p = parse_params(RealEsrganParams, params, ctx, "upscaled")
        if p.height is not None and p.scale is not None:
            raise InputError(ctx.source_path, "stages.upscaled: give `height` or `scale`, not both")
        load_sr_model(ctx.model_path(p.model), "meta")

    def __init__(self, params: dict, ctx) -> None:
        import torch

        from wan_pipeline.engines.context import EngineContext

        preset = ctx = EngineContext.for_preset(ctx)
        self.params = parse_params(RealEsrganParams, params, ctx, "upscaled")
        self.source = getattr(preset, "source_path", None)
        p = self.params
        if p.height is not None and p.scale is not None:
            raise InputError(getattr(preset, "source_path", None), "stages.upscaled: give `height` or `scale`, not both")
        self.device = ctx.device
        self.model_path = ctx.model_path(p.model)
        self.desc = load_sr_model(self.model_path, self.device)
        self.scale = int(self.desc.scale)
        self.dtype = self._pick_dtype(p.dtype, preset)
        self.desc.to(self.dtype)
        on_cuda = self.device.startswith("cuda")
        self.batch_size = p.batch_size or (4 if on_cuda else 1)
        self.multiple = max(1, int(self.desc.size_requirements.multiple_of))
        self.overlap = _round_up(p.tile_overlap, self.multiple)
        self._elem = torch.tensor([], dtype=self.dtype).element_size()
        # A preset tile is fixed here; without one the tile is sized from the memory free when
        # the stage runs (:meth:`_size_tile`): a VACE or Wan model loaded in between takes VRAM.
        self.tile = _round_up(p.tile, self.multiple) if p.tile else None
        if self.tile is not None and self.tile <= 2 * self.overlap:
            raise InputError(
                getattr(preset, "source_path", None), f"stages.upscaled.tile: {self.tile} must exceed twice tile_overlap ({self.overlap})"
            )
        self._torch = torch

    def _size_tile(self) -> int:
        """The tile for this run: the preset's, else :func:`default_tile` from the memory free now
        (at least twice the overlap plus one multiple, so a tile always keeps a centre)."""
        if self.params.tile:
            return self.tile
        tile = _round_up(default_tile(self.desc, self.device, self.batch_size, self._elem), self.multiple)
        self.tile = max(tile, 2 * self.overlap + self.multiple)
        return self.tile

    def _pick_dtype(self, name: str, preset):
        import torch

        src = getattr(preset, "source_path", None)
        on_cuda = self.device.startswith("cuda")
        if name == "auto":
            return torch.float16 if on_cuda and self.desc.supports_half else torch.float32
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
        if dtype == torch.float16 and not self.desc.supports_half:
            raise InputError(src, f"stages.upscaled.dtype: {self.model_path.name} does not support float16; use float32 or auto")
        if dtype == torch.bfloat16 and not self.desc.supports_bfloat16:
            raise InputError(src, f"stages.upscaled.dtype: {self.model_path.name} does not support bfloat16; use float32 or auto")
        if dtype == torch.float16 and not on_cuda:
            raise InputError(src, "stages.upscaled.dtype: float16 needs a CUDA device; use float32 or auto on CPU")
        return dtype

    def describe(self) -> dict:
        """Telemetry: engine, model (absolute path), architecture, model scale, tiling (the tile of
        the last run; None before one when the preset gives none), dtype."""
        return {
            "engine": self.name,
            "model": str(self.model_path),
            "architecture": self.desc.architecture.id,
            "model_scale": self.scale,
            "tile": self.tile,
            "tile_overlap": self.overlap,
            "batch_size": self.batch_size,
            "height": self.params.height,
            "scale": self.params.scale,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
        }

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the output for an input of ``width × height`` pixels."""
        h, w = height * self.scale, width * self.scale
        target = self.params.height
        if target is None and self.params.scale is not None and self.params.scale != self.scale:
            target = int(round(height * self.params.scale))
        option = "stages.upscaled.height" if self.params.height is not None else "stages.upscaled.scale"
        if target is None or target == h:
            check_window(1, w, h, option, self.source)
            return w, h
        ow = max(2, int(round(w * target / h / 2)) * 2)
        check_window(1, ow, target, option, self.source)
        return ow, target

    # -- inference -------------------------------------------------------------------------

    def _run_tiles(self, x):
        """x: float (B, 3, H, W) on the device, H and W multiples of the model's multiple_of.
        Returns uint8 (B, 3, H·s, W·s) on the device."""
        torch = self._torch
        b, _, h, w = x.shape
        s = self.scale
        out = torch.empty((b, 3, h * s, w * s), dtype=torch.uint8, device=x.device)
        core = self.tile - 2 * self.overlap
        if h <= self.tile and w <= self.tile:
            ys, xs = [(0, h)], [(0, w)]
        else:
            ys = [(y, min(y + core, h)) for y in range(0, h, core)]
            xs = [(x0, min(x0 + core, w)) for x0 in range(0, w, core)]
        for y0, y1 in ys:
            ya, yb = max(0, y0 - self.overlap), min(h, y1 + self.overlap)
            for x0, x1 in xs:
                xa, xb = max(0, x0 - self.overlap), min(w, x1 + self.overlap)
                y = self.desc(x[:, :, ya:yb, xa:xb])
                y = y[:, :, (y0 - ya) * s : (y1 - ya) * s, (x0 - xa) * s : (x1 - xa) * s]
                out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = y.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return out

    def upscale_batches(self, batches, width: int, height: int):
        """batches: an iterable of uint8 (B, H, W, 3) RGB frames of ``width × height``; yields
        each batch upscaled, uint8 (B, H', W', 3) with H' W' from :meth:`output_size`. On CUDA the
        next batch runs on the device while the previous one is downloaded."""
        torch = self._torch
        self._size_tile()  # at run time: a model loaded since the engine was built takes VRAM
        h, w = height, width
        ow, oh = self.output_size(w, h)
        s = self.scale
        on_cuda = self.device.startswith("cuda")
        ph, pw = _round_up(h, self.multiple) - h, _round_up(w, self.multiple) - w
        pending = None  # (event, pinned host tensor) of the batch being downloaded

        def finish(item) -> np.ndarray:
            event, host = item
            if event is not None:
                event.synchronize()
            arr = host.numpy()
            if (oh, ow) == arr.shape[1:3]:
                return arr
            return np.stack([cv2.resize(frame, (ow, oh), interpolation=cv2.INTER_LANCZOS4) for frame in arr])

        for frames in batches:
            with torch.inference_mode():
                chunk = torch.from_numpy(np.ascontiguousarray(frames))
                if on_cuda:
                    chunk = chunk.pin_memory().to(self.device, non_blocking=True)
                x = chunk.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
                if ph or pw:
                    x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
                y = self._run_tiles(x)[:, :, : h * s, : w * s].permute(0, 2, 3, 1)
                if on_cuda:
                    host = torch.empty(y.shape, dtype=torch.uint8, pin_memory=True)
                    host.copy_(y, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                    item = (event, host)
                else:
                    item = (None, y.contiguous())
            if pending is not None:
                yield finish(pending)  # the GPU already works on this batch meanwhile
            pending = item
        if pending is not None:
            yield finish(pending)

    def upscale_frames(self, frames: np.ndarray) -> np.ndarray:
        """frames: uint8 (T, H, W, 3) RGB → uint8 (T, H', W', 3), H' W' from :meth:`output_size`."""
        t, h, w, _ = frames.shape
        return np.concatenate(list(self.upscale_batches((frames[i : i + self.batch_size] for i in range(0, t, self.batch_size)), w, h)))

    def upscale(self, clip: Clip | FrameStream) -> Clip | FrameStream:
        """Return ``clip`` (a :class:`Clip` or :class:`FrameStream`) upscaled, in the same form:
        frames uint8 (H', W', 3), same count, fps and audio; a stream is upscaled a batch at a time.

        meta: ``upscale_factor`` (output height / input height, measured), ``tile``, ``model``.
        """
        src = as_stream(clip)
        ow, oh = self.output_size(src.width, src.height)
        check_window(2 * self.batch_size, ow, oh, "stages.upscaled.batch_size", self.source)
        self._size_tile()  # at the stage call: the tile in meta is the one the run starts with

        def frames():
            for batch in self.upscale_batches(batched(src, self.batch_size), src.width, src.height):
                yield from batch
            meta["tile"] = self.tile  # as sized when the frames were made

        meta = dict(src.meta)
        meta.update(upscale_factor=oh / src.height, tile=self.tile, model=str(self.model_path))
        return like_input(clip, FrameStream(frames, src.num_frames, src.fps, ow, oh, src.audio, meta))

    def close(self) -> None:
        """Free the model (and the CUDA cache)."""
        self.desc = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
