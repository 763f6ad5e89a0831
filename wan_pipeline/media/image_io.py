"""PNG/JPEG image reading and atomic PNG writing; resizing to a preset's resolution."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from wan_pipeline.errors import InputError
from wan_pipeline.media.atomic import atomic_path


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB (alpha dropped, greyscale expanded).

    Raises :class:`InputError` naming the file when it is missing or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "image file not found")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(str(path), f"cannot be read as an image ({exc})") from exc


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write image: uint8 (H, W, 3) RGB as PNG at ``path``, atomically; returns the path."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return Path(path)


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``image`` uint8 (H, W, 3) to cover ``width`` x ``height`` and centre-crop to it.

    Keeps the aspect ratio (no stretching); area resampling when shrinking, Lanczos when growing.
    Returns uint8 (height, width, 3).
    """
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])
