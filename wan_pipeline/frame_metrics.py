"""Frame measurements for the asset checks: SSIM, mean absolute difference, luminance, stills.

All take frames uint8 (H, W, 3) or (T, H, W, 3) RGB; differences are in 8-bit levels (0..255).
"""

from __future__ import annotations

import cv2
import numpy as np


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two frames uint8 (H, W, 3) on their luma; 1.0 for identical frames.

    scikit-image's ``structural_similarity`` with the settings of Wang, Bovik, Sheikh & Simoncelli,
    "Image quality assessment: from error visibility to structural similarity", IEEE TIP 2004:
    Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255. Raises ValueError when sizes differ.
    """
    from skimage.metrics import structural_similarity

    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    return float(structural_similarity(_gray(a), _gray(b), gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames (or clips) of equal shape, 8-bit levels."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def mean_luma(frames: np.ndarray) -> np.ndarray:
    """Per-frame mean luminance (BT.601 weights), float (T,), 0..255."""
    f = frames.astype(np.float32)
    return (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]).reshape(f.shape[0], -1).mean(axis=1)


def inter_frame_diff(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference between consecutive frames, float (T−1,), 8-bit levels."""
    if frames.shape[0] < 2:
        return np.zeros(0, dtype=np.float32)
    d = np.abs(frames[1:].astype(np.int16) - frames[:-1].astype(np.int16))
    return d.reshape(d.shape[0], -1).mean(axis=1).astype(np.float32)


def mean_colour_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over R, G, B of |mean of channel in ``a`` − mean in ``b``|, in 8-bit levels.

    a, b: uint8 frames (H, W, 3) or stacks (T, H, W, 3); sizes may differ. Used for the colour
    jump at a segment boundary of a long scene (telemetry ``segment_colour_shift``)."""
    ma = a.reshape(-1, 3).astype(np.float64).mean(0)
    mb = b.reshape(-1, 3).astype(np.float64).mean(0)
    return float(np.abs(ma - mb).mean())
