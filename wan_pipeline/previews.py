"""Small previews of stage outputs: a keyframe thumbnail, a contact sheet and an animation of a clip.

The Dagster UI has no image metadata type but renders Markdown images with a ``data:`` URL, so a
preview travels as base64 inside Markdown (:func:`markdown_image`). Each still preview is kept
under :data:`MAX_PREVIEW_BYTES` so that the event log stays small, and is also written beside the
output (``keyframe.thumb.jpg``, ``clip.sheet.jpg``, ``film.sheet.jpg``) for people browsing files.

The animated preview (:class:`AnimatedPreview`) is an animated WebP (GIF where Pillow has no WebP
encoder), at most :data:`ANIM_MAX_WIDTH` pixels wide and :data:`ANIM_MAX_BYTES` bytes, playing a
few seconds at :data:`ANIM_FPS`. It is built from the frames a stage already holds, one frame at a
time, keeping only the sampled, downsized frames; a film's preview samples every scene.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, features

from wan_pipeline.errors import InputError
from wan_pipeline.media.atomic import atomic_path
from wan_pipeline.media.image_io import read_image
from wan_pipeline.media.video_io import VideoInfo, VideoWriter, frame_to_rgb, probe_video

MAX_PREVIEW_BYTES = 60_000  # a preview's JPEG bytes; base64 adds a third (≈ 80 KB of Markdown)
THUMB_MAX_SIDE = 320  # pixels, longest side of a keyframe thumbnail
SHEET_FRAMES = 6  # frames on a contact sheet
SHEET_COLUMNS = 3
SHEET_TILE_WIDTH = 200  # pixels per tile on a contact sheet
SHEET_GAP = 4  # pixels between tiles (dark grey)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ANIM_MAX_WIDTH = 320  # pixels, width of an animated preview (never scaled up)
ANIM_MAX_BYTES = 2_000_000  # bytes of an animated preview; base64 adds a third in Markdown
ANIM_FPS = 6  # frames per second an animated preview plays at (reduced from the video's rate)
ANIM_MAX_FRAMES = 30  # frames of an animated preview: 5 s at ANIM_FPS; longer videos are time-lapsed
ANIM_QUALITIES = (70, 50, 35)  # WebP quality steps tried before the frames are scaled down
WEBP_AVAILABLE = features.check("webp")


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


def write_sampled(
    path: str | os.PathLike, stream, *, lossless: bool = True, crf: int = 18, animation: AnimatedPreview | None = None
) -> tuple[VideoInfo, np.ndarray]:
    """Encode ``stream`` (a :class:`~wan_pipeline.media.stream.FrameStream`, with its audio) at
    ``path`` as its frames are made (:class:`~wan_pipeline.media.video_io.VideoWriter`) and keep
    the :data:`SHEET_FRAMES` frames the contact sheet shows; ``animation`` (see
    :func:`animation_for`), when given, is offered every frame and keeps its own bounded sample
    (at most :data:`ANIM_MAX_FRAMES` small frames, or one per scene). Returns (the file's measured
    info, the sheet's frames uint8 (n, H, W, 3)): the previews without holding or decoding the
    video again."""
    wanted = set(sample_indices(stream.num_frames, SHEET_FRAMES))
    picked = []
    with VideoWriter(
        path, width=stream.width, height=stream.height, fps=stream.fps, lossless=lossless, crf=crf, audio=stream.audio
    ) as writer:
        for i, frame in enumerate(stream):
            writer.write(frame)
            if i in wanted:
                picked.append(frame)
            if animation is not None and not animation.done:
                if animation.wants_next:
                    animation.add(frame)
                else:
                    animation.skip()
    return writer.info, np.stack(picked)


def animation_for(stream, scene_lengths: Sequence[float] | None = None) -> AnimatedPreview | None:
    """An :class:`AnimatedPreview` to fill while ``stream`` (anything with ``num_frames`` and
    ``fps``) is written by :func:`write_sampled`; None for a stream without frames.
    scene_lengths: a film's scene lengths, so every scene is sampled."""
    if stream.num_frames < 1:
        return None
    return AnimatedPreview(stream.num_frames, stream.fps, scene_lengths=scene_lengths)


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
        tile = np.asarray(Image.fromarray(frame).resize((tw, th), Image.BILINEAR, reducing_gap=2.0)) if (tw, th) != (w, h) else frame
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


def markdown_image(data: bytes, alt: str = "preview", mime: str = "image/jpeg") -> str:
    """Markdown showing the image bytes ``data`` inline (``![alt](data:<mime>;base64,…)``);
    ``mime`` is ``image/jpeg``, ``image/webp`` or ``image/gif`` (see :attr:`Animation.mime`)."""
    return f"![{alt}](data:{mime};base64,{base64.b64encode(data).decode('ascii')})"


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


# ---------------------------------------------------------------------------------------------
# animated previews


def animation_indices(
    total: int,
    fps: float | Fraction,
    *,
    scene_lengths: Sequence[float] | None = None,
    preview_fps: float = ANIM_FPS,
    max_frames: int = ANIM_MAX_FRAMES,
) -> list[int]:
    """Which of ``total`` frames (at ``fps`` frames/s) an animated preview shows, ascending.

    A video that fits (duration · preview_fps + 1 ≤ max_frames) is sampled every 1/preview_fps
    seconds: it plays at real speed at the reduced rate. A longer one is time-lapsed to
    ``max_frames`` frames, first and last included. ``scene_lengths``: the length of each consecutive scene of a film, in
    frames or any unit proportional to them (seconds), scaled to ``total``; every scene then gets
    at least one frame (so a film of more than ``max_frames`` scenes gets one per scene) and the
    rest is shared in proportion to the scene lengths, sampled at the centres of equal parts of
    the scene. Raises ``ValueError`` for a non-positive scene length.
    """
    if total <= 0:
        return []
    if scene_lengths is None:
        realtime = math.floor((total - 1) / float(fps) * preview_fps + 1e-9) + 1
        if realtime < 2:  # shorter than one preview frame interval: its two ends
            return sample_indices(total, 2)
        if realtime > max_frames:
            return sample_indices(total, max_frames)
        step = float(fps) / preview_fps  # real speed at the reduced rate
        return [round(j * step) for j in range(realtime)]
    lengths = [float(x) for x in scene_lengths]
    if not lengths or min(lengths) <= 0:
        raise ValueError(f"scene_lengths must be positive, got {list(scene_lengths)}")
    budget = max(len(lengths), min(max_frames, total))
    shares = [budget * x / sum(lengths) for x in lengths]
    counts = [max(1, math.floor(x)) for x in shares]
    by_remainder = sorted(range(len(lengths)), key=lambda i: shares[i] - math.floor(shares[i]), reverse=True)
    for i in by_remainder:
        if sum(counts) >= budget:
            break
        counts[i] += 1
    edges = [0.0]
    for x in lengths:
        edges.append(edges[-1] + x * total / sum(lengths))
    picked: list[int] = []
    for (a, b), k in zip(zip(edges, edges[1:]), counts):
        picked += [min(total - 1, int(a + (j + 0.5) * (b - a) / k)) for j in range(k)]
    return sorted(set(picked))


@dataclass(frozen=True)
class Animation:
    """An encoded animated preview. data: the file's bytes; mime: ``image/webp`` or ``image/gif``;
    frames: frame count; width/height: pixels; frame_ms: each frame's display time (ms)."""

    data: bytes
    mime: str
    frames: int
    width: int
    height: int
    frame_ms: int

    @property
    def suffix(self) -> str:
        """``.webp`` or ``.gif``."""
        return "." + self.mime.split("/")[1]

    def markdown(self, alt: str = "animated preview") -> str:
        """The preview inline as Markdown (see :func:`markdown_image`)."""
        return markdown_image(self.data, alt=alt, mime=self.mime)


class AnimatedPreview:
    """Builds an animated preview of a video from its frames, given one at a time (bounded memory).

    total: the video's frame count; fps: its rate (frames/s); scene_lengths: see
    :func:`animation_indices`. :meth:`add` takes the frames in order (uint8 (H, W, 3) each, or a
    batch uint8 (T, H, W, 3)) and keeps only the sampled ones, scaled to at most ``max_width``
    pixels wide; :meth:`finish` encodes them. Memory: at most ``max_frames`` (or one per scene)
    small frames, whatever the video's length.
    """

    def __init__(
        self,
        total: int,
        fps: float | Fraction,
        *,
        scene_lengths: Sequence[float] | None = None,
        max_width: int = ANIM_MAX_WIDTH,
        preview_fps: float = ANIM_FPS,
        max_frames: int = ANIM_MAX_FRAMES,
    ):
        if total < 1:
            raise ValueError(f"an animated preview needs a video of at least one frame, got total={total}")
        self.wanted = animation_indices(total, fps, scene_lengths=scene_lengths, preview_fps=preview_fps, max_frames=max_frames)
        self._keep = set(self.wanted)
        self.max_width = max_width
        self.frame_ms = max(20, round(1000 / preview_fps))
        self.kept: list[np.ndarray] = []
        self.seen = 0

    @property
    def wants_next(self) -> bool:
        """True when the next frame offered will be kept (a caller may :meth:`skip` the others
        without decoding or converting them)."""
        return self.seen in self._keep

    @property
    def done(self) -> bool:
        """True once every sampled frame was offered."""
        return self.seen > self.wanted[-1]

    def skip(self) -> None:
        """Count the next frame as offered without passing it (only when :attr:`wants_next` is False)."""
        if self.wants_next:
            raise ValueError(f"frame {self.seen} is sampled: pass it with add()")
        self.seen += 1

    def add(self, frames: np.ndarray) -> None:
        """Offer the next frame uint8 (H, W, 3), or the next batch uint8 (T, H, W, 3)."""
        if frames.ndim == 3:
            frames = frames[None]
        for frame in frames:
            if self.seen in self._keep:
                _check_image(frame)
                h, w = frame.shape[:2]
                if w > self.max_width:
                    size = (self.max_width, max(1, round(h * self.max_width / w)))
                    frame = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR, reducing_gap=2.0))  # a preview: fast
                self.kept.append(np.array(frame, copy=True))
            self.seen += 1

    def finish(self, max_bytes: int = ANIM_MAX_BYTES) -> Animation:
        """Encode the kept frames: animated WebP (quality steps :data:`ANIM_QUALITIES`, then half
        size until it fits ``max_bytes``), or GIF when Pillow has no WebP encoder. Raises
        ``ValueError`` when no frame was added."""
        if not self.kept:
            raise ValueError("no frames were added to the animated preview")
        images = [Image.fromarray(f) for f in self.kept]
        while True:
            for quality in ANIM_QUALITIES if WEBP_AVAILABLE else (None,):
                data, mime = _encode_animation(images, self.frame_ms, quality)
                if len(data) <= max_bytes:
                    return Animation(data, mime, len(images), images[0].width, images[0].height, self.frame_ms)
            if min(images[0].size) <= 16:
                return Animation(data, mime, len(images), images[0].width, images[0].height, self.frame_ms)
            size = (max(1, images[0].width // 2), max(1, images[0].height // 2))
            images = [im.resize(size, Image.LANCZOS) for im in images]


def _encode_animation(images: list[Image.Image], frame_ms: int, quality: int | None) -> tuple[bytes, str]:
    # WebP method 0: the encoder's fastest (measured 0.11 s against 0.40 s for method 4 on 21
    # frames at 480 px; a few tens of KB larger), paid once per stage of every render
    buf = io.BytesIO()
    if quality is not None:
        images[0].save(buf, format="WEBP", save_all=True, append_images=images[1:], duration=frame_ms, loop=0, quality=quality, method=0)
        return buf.getvalue(), "image/webp"
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0, optimize=True)
    return buf.getvalue(), "image/gif"


def animated_preview(
    frames: Iterable[np.ndarray],
    total: int,
    fps: float | Fraction,
    *,
    scene_lengths: Sequence[float] | None = None,
    max_width: int = ANIM_MAX_WIDTH,
    max_bytes: int = ANIM_MAX_BYTES,
) -> Animation:
    """The animated preview of a video whose ``total`` frames (at ``fps``) come from ``frames``
    (an iterator of uint8 (H, W, 3) frames or (T, H, W, 3) batches, e.g. ``clip.frames``).
    See :class:`AnimatedPreview`; raises ``ValueError`` when ``frames`` is empty."""
    builder = AnimatedPreview(total, fps, scene_lengths=scene_lengths, max_width=max_width)
    for frame in frames:
        builder.add(frame)
        if builder.done:
            break
    return builder.finish(max_bytes)


def animated_preview_of_file(
    path: str | os.PathLike, *, scene_lengths: Sequence[float] | None = None, max_bytes: int = ANIM_MAX_BYTES
) -> Animation:
    """The animated preview of the video file ``path``, decoded in one streaming pass (only the
    sampled frames are converted to RGB and kept). Raises :class:`InputError` when the file is
    missing, not a video, or has no frames."""
    info = probe_video(path)
    builder = AnimatedPreview(info.frames, info.fps, scene_lengths=scene_lengths)
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if builder.wants_next:
                    builder.add(frame_to_rgb(frame))
                else:
                    builder.skip()
                if builder.done:
                    break
    except av.error.FFmpegError as exc:
        raise InputError(str(path), f"cannot be read as a video ({exc})") from exc
    return builder.finish(max_bytes)


def animation_path(output: str | os.PathLike, animation: Animation) -> Path:
    """Where the animated preview of ``output`` sits: ``clip.mp4`` → ``clip.anim.webp`` (or ``.gif``)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.anim{animation.suffix}")


def write_animated_preview(
    output: str | os.PathLike,
    frames: np.ndarray | None = None,
    fps: float | Fraction | None = None,
    *,
    scene_lengths: Sequence[float] | None = None,
    animation: Animation | None = None,
) -> tuple[Path, Animation]:
    """Write the animated preview of the video ``output`` beside it (atomically; the other format's
    older file is removed) and return (its path, the animation).

    frames: the video's frames uint8 (T, H, W, 3) when the caller holds them, with ``fps`` (frames/s);
    None decodes the file in one streaming pass. scene_lengths: a film's scene lengths (any unit
    proportional to frames), so every scene is sampled (:func:`animation_indices`).
    animation: an animation already made while the video streamed into its file (see
    :func:`write_sampled`); then neither ``frames`` nor the file is read.
    Raises :class:`InputError` when the file has to be read and cannot be."""
    if animation is None and frames is not None and frames.ndim == 4 and len(frames) and fps:
        animation = animated_preview(iter(frames), len(frames), fps, scene_lengths=scene_lengths)
    elif animation is None:
        animation = animated_preview_of_file(output, scene_lengths=scene_lengths)
    target = animation_path(output, animation)
    with atomic_path(target) as tmp:
        tmp.write_bytes(animation.data)
    for other in (".webp", ".gif"):
        stale = Path(output).with_name(f"{Path(output).stem}.anim{other}")
        if stale != target and stale.is_file():
            stale.unlink()
    return target, animation
