"""Small JPEG previews of stage outputs: a keyframe thumbnail and a contact sheet of a clip.

The Dagster UI has no image metadata type but renders Markdown images with a ``data:`` URL, so a
preview travels as a base64 JPEG inside Markdown (:func:`markdown_image`). Each preview is kept
under :data:`MAX_PREVIEW_BYTES` so that the event log stays small, and is also written beside the
output (``keyframe.thumb.jpg``, ``clip.sheet.jpg``, ``film.sheet.jpg``) for people browsing files.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import av
import numpy as np
from PIL import Image

from wan_pipeline.errors import InputError
from wan_pipeline.media.atomic import atomic_path
from wan_pipeline.media.image_io import read_image
from wan_pipeline.media.video_io import VideoInfo, VideoWriter, probe_video

MAX_PREVIEW_BYTES = 60_000  # a preview's JPEG bytes; base64 adds a third (≈ 80 KB of Markdown)
THUMB_MAX_SIDE = 320  # pixels, longest side of a keyframe thumbnail
SHEET_FRAMES = 6  # frames on a contact sheet
SHEET_COLUMNS = 3
SHEET_TILE_WIDTH = 200  # pixels per tile on a contact sheet
SHEET_GAP = 4  # pixels between tiles (dark grey)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def thumbnail(image: np.ndarray, max_side: int = THUMB_MAX_SIDE) -> np.ndarray:
    """``image`` uint8 (H, W, 3) scaled down (never up) so that its longest side is ``max_side``
    pixels, aspect kept (Lanczos). Returns uint8 (h, w, 3)."""
    _check_image(image)
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def sample_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``total`` frames, first and last included
    (fewer when the clip is shorter)."""
    if total <= 0:
        return []
    if total <= n:
        return list(range(total))
    return sorted({round(i * (total - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]


def read_frames(path: str | os.PathLike, n: int = SHEET_FRAMES) -> tuple[np.ndarray, list[int]]:
    """Decode ``n`` evenly spread frames of the video ``path``: (uint8 (n, H, W, 3), their
    indices). Frames are decoded in one pass and only the chosen ones are kept.
    Raises :class:`InputError` when the file is missing or not a video."""
    info = probe_video(path)
    wanted = sample_indices(info.frames, n)
    keep, picked = set(wanted), []
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in keep:
                    picked.append(frame.to_ndarray(format="rgb24"))
                if i >= wanted[-1]:
                    break
    except av.error.FFmpegError as exc:
        raise InputError(str(path), f"cannot be read as a video ({exc})") from exc
    if not picked:
        raise InputError(str(path), "the video has no frames")
    return np.stack(picked), wanted[: len(picked)]


def write_sampled(path: str | os.PathLike, stream, *, lossless: bool = True, crf: int = 18) -> tuple[VideoInfo, np.ndarray]:
    """Encode ``stream`` (a :class:`~wan_pipeline.media.stream.FrameStream`, with its audio) at
    ``path`` as its frames are made (:class:`~wan_pipeline.media.video_io.VideoWriter`) and keep
    the :data:`SHEET_FRAMES` frames the contact sheet shows. Returns (the file's measured info,
    those frames uint8 (n, H, W, 3)): the preview without holding or decoding the video again."""
    wanted = set(sample_indices(stream.num_frames, SHEET_FRAMES))
    picked = []
    with VideoWriter(
        path, width=stream.width, height=stream.height, fps=stream.fps, lossless=lossless, crf=crf, audio=stream.audio
    ) as writer:
        for i, frame in enumerate(stream):
            writer.write(frame)
            if i in wanted:
                picked.append(frame)
    return writer.info, np.stack(picked)


def contact_sheet(frames: np.ndarray, columns: int = SHEET_COLUMNS, tile_width: int = SHEET_TILE_WIDTH, gap: int = SHEET_GAP) -> np.ndarray:
    """Tile ``frames`` uint8 (N, H, W, 3) left to right, top to bottom, ``columns`` per row, each
    scaled to ``tile_width`` pixels wide (aspect kept), ``gap`` pixels apart on dark grey.
    Returns uint8 (rows·th + (rows+1)·gap, cols·tile_width + (cols+1)·gap, 3)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) with N ≥ 1, got {frames.dtype} {frames.shape}")
    n, h, w = frames.shape[:3]
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    tw = min(tile_width, w)
    th = max(1, round(h * tw / w))
    sheet = np.full((rows * th + (rows + 1) * gap, cols * tw + (cols + 1) * gap, 3), 40, np.uint8)
    for i, frame in enumerate(frames):
        tile = np.asarray(Image.fromarray(frame).resize((tw, th), Image.LANCZOS)) if (tw, th) != (w, h) else frame
        r, c = divmod(i, cols)
        y, x = gap + r * (th + gap), gap + c * (tw + gap)
        sheet[y : y + th, x : x + tw] = tile
    return sheet


def encode_jpeg(image: np.ndarray, max_bytes: int = MAX_PREVIEW_BYTES) -> bytes:
    """JPEG bytes of ``image`` uint8 (H, W, 3) no larger than ``max_bytes``: the quality steps
    down from 85, then the image halves, until it fits."""
    _check_image(image)
    img = Image.fromarray(image)
    while True:
        for quality in (85, 75, 60, 45):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality, optimize=True)
            if buf.tell() <= max_bytes:
                return buf.getvalue()
        if min(img.size) <= 16:
            return buf.getvalue()
        img = img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.LANCZOS)


def markdown_image(jpeg: bytes, alt: str = "preview") -> str:
    """Markdown showing ``jpeg`` inline (``![alt](data:image/jpeg;base64,…)``)."""
    return f"![{alt}](data:image/jpeg;base64,{base64.b64encode(jpeg).decode('ascii')})"


def preview_path(output: str | os.PathLike) -> Path:
    """Where the preview of ``output`` sits: ``keyframe.png`` → ``keyframe.thumb.jpg``,
    ``clip.mp4`` → ``clip.sheet.jpg``."""
    output = Path(output)
    kind = "thumb" if output.suffix.lower() in IMAGE_SUFFIXES else "sheet"
    return output.with_name(f"{output.stem}.{kind}.jpg")


def make_preview(output: str | os.PathLike, frames: np.ndarray | None = None) -> np.ndarray:
    """The preview image of a stage output, uint8 (h, w, 3): a thumbnail of an image file, a
    contact sheet of :data:`SHEET_FRAMES` frames of a video file.

    frames: what the stage already holds of the output — the image uint8 (H, W, 3) or the video's
    frames uint8 (T, H, W, 3) — so the file is not decoded again; None reads the file."""
    output = Path(output)
    if output.suffix.lower() in IMAGE_SUFFIXES:
        return thumbnail(frames if frames is not None and frames.ndim == 3 else read_image(output))
    if frames is not None and frames.ndim == 4:
        return contact_sheet(frames[sample_indices(len(frames), SHEET_FRAMES)])
    picked, _ = read_frames(output)
    return contact_sheet(picked)


def write_preview(output: str | os.PathLike, max_bytes: int = MAX_PREVIEW_BYTES, frames: np.ndarray | None = None) -> tuple[Path, bytes]:
    """Write the preview of ``output`` beside it (atomically) and return (its path, the JPEG bytes).

    frames: the output's image or frames when the caller holds them (see :func:`make_preview`).
    Raises :class:`InputError` when ``output`` has to be read and cannot be."""
    jpeg = encode_jpeg(make_preview(output, frames), max_bytes)
    target = preview_path(output)
    with atomic_path(target) as tmp:
        tmp.write_bytes(jpeg)
    return target, jpeg


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
