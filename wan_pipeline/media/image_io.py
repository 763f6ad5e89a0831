"""PNG/JPEG image reading and atomic PNG writing; resizing to a preset's resolution."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from wan_pipeline.errors import InputError
from wan_pipeline.media.atomic import atomic_path

#: Largest image accepted (pixels): 8192², twice the side of the largest preset resolution
#: (4096, :class:`wan_pipeline.preset.Preset`), so 50-MP phone photos pass. Checked from the header
#: before anything is decoded, so a decompression bomb (a small file claiming gigapixels) is
#: refused without allocating its frame.
MAX_IMAGE_PIXELS = 8192 * 8192


def _to_rgb(img: Image.Image) -> np.ndarray:
    """``img`` as uint8 (H, W, 3) RGB, keeping the tonal range of high-bit-depth modes.

    Pillow's ``convert("RGB")`` clips 16-bit greyscale (``I;16*``, ``I``) at 255, which turns a
    16-bit PNG white; those are scaled from 0..65535 instead. ``F`` (float) images are taken as
    0..1 when their maximum is at most 1, else as 0..255. Alpha is dropped.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(img).astype(np.int64)
        grey = (np.clip(grey, 0, 65535) * 255 + 32767) // 65535
    elif mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        grey = np.nan_to_num(grey, nan=0.0, posinf=255.0, neginf=0.0)
        if grey.size and grey.max() <= 1.0:
            grey = grey * 255.0
        grey = np.clip(np.rint(grey), 0, 255)
    else:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    grey = grey.astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB (alpha dropped, greyscale expanded, 16-bit
    scaled to 8, EXIF orientation applied).

    Raises :class:`InputError` naming the file when it is missing, not an image, truncated or
    corrupt, larger than :data:`MAX_IMAGE_PIXELS`, or in a mode that has no RGB conversion.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise InputError(
                        str(path),
                        f"image is {w}x{h} pixels, more than the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} million: "
                        "scale it down (it is resized to the preset's resolution anyway)",
                    )
                img.load()  # decode everything now: a truncated file fails here, with its name
                return _to_rgb(ImageOps.exif_transpose(img))
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(
            str(path), f"image has more than the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} million pixels ({exc}): scale it down"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise OSError, SyntaxError, EOFError, struct.error…
        raise InputError(str(path), f"cannot be read as an image ({exc}): save it again as PNG or JPEG") from None


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
