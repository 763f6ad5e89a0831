"""Frame measurements for the asset checks: SSIM, mean absolute difference, luminance, stills.

All take frames uint8 (H, W, 3) or (T, H, W, 3) RGB; differences are in 8-bit levels (0..255).
"""

from __future__ import annotations

import cv2
import numpy as np

# SSIM constants of Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error
# visibility to structural similarity", IEEE TIP 2004: K1 = 0.01, K2 = 0.03, L = 255, an 11×11
# Gaussian window with σ = 1.5.
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two frames uint8 (H, W, 3) on their luma; 1.0 for identical frames.

    Raises ValueError when the sizes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")
    x, y = _gray(a), _gray(b)

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + _C1) * (2 * sxy + _C2)
    den = (mx * mx + my * my + _C1) * (sxx + syy + _C2)
    return float(np.mean(num / den))


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
