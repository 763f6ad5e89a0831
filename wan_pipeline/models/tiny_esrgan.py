"""Miniature random-weight Real-ESRGAN checkpoints in the real file formats, for tests and the
``tiny`` preset.

The files use the exact layouts of the published weights, so they go through the same loader
(spandrel) as the real ones:

- RRDBNet (``RealESRGAN_x4plus.pth`` / ``RealESRGAN_x2plus.pth``, Real-ESRGAN, Wang et al. 2021):
  ``{"params_ema": state_dict}`` with the original key names ``conv_first``,
  ``body.<i>.rdb<j>.conv<k>``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
  ``conv_last``. The ×2 model feeds a pixel-unshuffled input (12 channels) to the same ×4 body.
- SRVGGNetCompact (``realesr-general-x4v3.pth``): ``{"params": state_dict}`` with keys
  ``body.<n>`` (convolutions and PReLU slopes, last conv giving ``3·scale²`` channels).

Only the sizes shrink (one RRDB block of 8 features, a Compact net of 8 features and 2 convs);
the growth width of the dense blocks stays 32, as the loader assumes. Weights are random but
deterministic (a seeded generator) and start from a near-identity path (the centre tap of the
first, upsampling and last convolutions passes the colour channels through) so that outputs look
like an upscaled picture plus structured noise instead of saturating to a flat colour; the
residual branches use the small initialisation (×0.1) of the ESRGAN paper (sec. 3.3).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

RRDB_GROWTH = 32  # dense-block growth channels of RRDBNet (ESRGAN paper; fixed in spandrel)


def _conv(gen: torch.Generator, out_ch: int, in_ch: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    fan_in = in_ch * 9
    weight = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * (scale * (2.0 / fan_in) ** 0.5)
    bias = torch.zeros(out_ch)
    return weight, bias


def _pass_through(weight: torch.Tensor, pairs: list[tuple[int, int]]) -> None:
    """Add 1 on the centre tap from input channel ``i`` to output channel ``o`` for each pair."""
    for o, i in pairs:
        weight[o, i, 1, 1] += 1.0


def rrdb_state_dict(*, scale: int = 4, num_feat: int = 8, num_block: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of a Real-ESRGAN RRDBNet (new-arch key names) with random weights.

    scale: 4 (3 input channels) or 2 (pixel-unshuffle: 12 input channels, same ×4 body).
    Returns plain float32 tensors keyed like ``RealESRGAN_x4plus.pth``'s ``params_ema``.
    """
    if scale not in (2, 4):
        raise ValueError(f"scale must be 2 or 4, got {scale}")
    gen = torch.Generator().manual_seed(seed)
    in_ch = 3 * (4 // scale) ** 2
    sd: dict[str, torch.Tensor] = {}
    w, b = _conv(gen, num_feat, in_ch, 0.1)
    # pixel_unshuffle puts sub-pixel (0, 0) of colour c at channel c * r²
    step = in_ch // 3
    _pass_through(w, [(c, c * step) for c in range(3)])
    sd["conv_first.weight"], sd["conv_first.bias"] = w, b
    for blk in range(num_block):
        for rdb in range(1, 4):
            for k in range(1, 6):
                cin = num_feat + (k - 1) * RRDB_GROWTH
                cout = RRDB_GROWTH if k < 5 else num_feat
                w, b = _conv(gen, cout, cin, 0.1)
                sd[f"body.{blk}.rdb{rdb}.conv{k}.weight"], sd[f"body.{blk}.rdb{rdb}.conv{k}.bias"] = w, b
    sd["conv_body.weight"], sd["conv_body.bias"] = _conv(gen, num_feat, num_feat, 0.1)
    for name in ("conv_up1", "conv_up2", "conv_hr"):
        w, b = _conv(gen, num_feat, num_feat, 0.1)
        _pass_through(w, [(c, c) for c in range(3)])
        sd[f"{name}.weight"], sd[f"{name}.bias"] = w, b
    w, b = _conv(gen, 3, num_feat, 0.1)
    _pass_through(w, [(c, c) for c in range(3)])
    sd["conv_last.weight"], sd["conv_last.bias"] = w, b
    return sd


def srvgg_state_dict(*, scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of an SRVGGNetCompact (``realesr-general-x4v3`` key names) with random weights.

    The network adds its output to the nearest-upsampled input, so random weights give the
    upscaled picture plus noise. scale 1 gives a restoration (non-SR) model, used to test rejection.
    """
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    idx = 0
    cin = 3
    for _ in range(num_conv + 1):
        sd[f"body.{idx}.weight"], sd[f"body.{idx}.bias"] = _conv(gen, num_feat, cin, 0.5)
        sd[f"body.{idx + 1}.weight"] = torch.full((num_feat,), 0.25)  # PReLU slope (PyTorch default)
        idx += 2
        cin = num_feat
    sd[f"body.{idx}.weight"], sd[f"body.{idx}.bias"] = _conv(gen, 3 * scale * scale, num_feat, 0.1)
    return sd


def make_tiny_esrgan(directory: str | os.PathLike) -> dict[str, Path]:
    """Write the miniature Real-ESRGAN checkpoints into ``directory`` and return their paths.

    Keys: ``rrdb_x4`` (``tiny-RealESRGAN_x4plus.pth``), ``rrdb_x2`` (``tiny-RealESRGAN_x2plus.pth``),
    ``srvgg_x4`` (``tiny-realesr-general-x4v3.pth``), ``rrdb_x4_safetensors``
    (``tiny-RealESRGAN_x4plus.safetensors``, flat state dict). Each file is under 1 MB,
    deterministic, and loadable with ``torch.load(..., weights_only=True)``. Existing files are
    overwritten atomically.
    """
    from safetensors.torch import save_file

    from wan_pipeline.media.atomic import atomic_path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rrdb4 = rrdb_state_dict(scale=4, seed=1)
    files = {
        "rrdb_x4": (directory / "tiny-RealESRGAN_x4plus.pth", {"params_ema": rrdb4}),
        "rrdb_x2": (directory / "tiny-RealESRGAN_x2plus.pth", {"params_ema": rrdb_state_dict(scale=2, seed=2)}),
        "srvgg_x4": (directory / "tiny-realesr-general-x4v3.pth", {"params": srvgg_state_dict(scale=4, seed=3)}),
    }
    out: dict[str, Path] = {}
    for key, (path, payload) in files.items():
        buffer = io.BytesIO()  # torch.save names the zip records after a real file: keep bytes stable
        torch.save(payload, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
        out[key] = path
    st_path = directory / "tiny-RealESRGAN_x4plus.safetensors"
    with atomic_path(st_path) as tmp:
        save_file({k: v.contiguous() for k, v in rrdb4.items()}, str(tmp))
    out["rrdb_x4_safetensors"] = st_path
    return out
