"""Animated previews (WebP, GIF fallback): frame sampling, every scene of a film, size limits,
bounded memory, and the Markdown the UI shows."""

from __future__ import annotations

import base64
import io
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from wan_pipeline import previews
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import read_image
from wan_pipeline.media.video_io import write_video
from wan_pipeline.previews import (
    ANIM_MAX_BYTES,
    ANIM_MAX_FRAMES,
    ANIM_MAX_WIDTH,
    AnimatedPreview,
    animated_preview,
    animated_preview_of_file,
    animation_indices,
)

PHOTOS = Path(__file__).resolve().parent.parent / "stories" / "images"
NAMES = ["rocket.jpg", "astronaut.png", "chelsea.png", "coffee.png"]


def _photo(name: str, w: int = 832, h: int = 480) -> np.ndarray:
    return np.asarray(Image.fromarray(read_image(PHOTOS / name)).resize((w, h), Image.LANCZOS))


def _pan(photo: np.ndarray, n: int, step: int = 3) -> np.ndarray:
    """n frames panning over ``photo`` (a moving picture whose frames all differ)."""
    return np.stack([np.roll(photo, i * step, axis=1) for i in range(n)])


def _decode(data: bytes) -> tuple[Image.Image, list[np.ndarray]]:
    img = Image.open(io.BytesIO(data))
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(img)]
    return img, frames


def _mad(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_clip_preview_is_a_small_animated_webp():
    """A 2.5 s clip at 32 fps, 832x480: 16 frames at 6 fps (every 5⅓th frame, real speed), 320 px
    wide, under 2 MB, each decoded frame showing its source frame."""
    frames = _pan(_photo("astronaut.png"), 81)
    anim = animated_preview(iter(frames), len(frames), Fraction(32))
    assert anim.mime == "image/webp" and anim.suffix == ".webp"
    assert len(anim.data) <= ANIM_MAX_BYTES
    img, decoded = _decode(anim.data)
    assert img.format == "WEBP" and img.is_animated
    assert img.n_frames == anim.frames == 16
    assert img.size == (anim.width, anim.height) == (ANIM_MAX_WIDTH, 185) == (320, 185)
    assert img.info["duration"] == 167  # ms: 6 fps
    source = [round(j * 32 / 6) for j in range(16)]
    for k in (0, 7, 15):
        src = np.asarray(Image.fromarray(frames[source[k]]).resize(img.size, Image.LANCZOS))
        others = [np.asarray(Image.fromarray(frames[source[j]]).resize(img.size, Image.LANCZOS)) for j in (k - 4, k + 4) if 0 <= j <= 15]
        assert _mad(decoded[k], src) < 6 and all(_mad(decoded[k], o) > _mad(decoded[k], src) for o in others)


def test_film_preview_shows_every_scene():
    """A 10 s film of four scenes of unequal length (time-lapsed to 30 frames): every scene's photo
    appears in the animation, in order, with frames in proportion to the scene's length."""
    lengths = [64, 96, 128, 32]  # frames at 32 fps
    film = np.concatenate([np.stack([_photo(name, 288, 160)] * n) for name, n in zip(NAMES, lengths)])
    for i, frame in enumerate(film):  # a moving white mark, so that no two frames are equal (WebP merges equal frames)
        frame[:6, i % 270 : i % 270 + 16] = 255
    anim = animated_preview(iter(film), len(film), Fraction(32), scene_lengths=lengths)
    img, decoded = _decode(anim.data)
    assert img.n_frames == ANIM_MAX_FRAMES == 30 and img.size == (288, 160)  # narrower than ANIM_MAX_WIDTH: not scaled up
    refs = [_photo(name, 288, 160) for name in NAMES]
    shown = [int(np.argmin([_mad(f, r) for r in refs])) for f in decoded]
    assert shown == sorted(shown) and set(shown) == {0, 1, 2, 3}
    counts = [shown.count(i) for i in range(4)]
    assert counts == [round(30 * n / sum(lengths)) for n in lengths] == [6, 9, 12, 3]


def test_many_short_scenes_each_get_a_frame():
    lengths = [2.0] * 60  # seconds: any unit proportional to frames
    idx = animation_indices(60 * 48, 24, scene_lengths=lengths)
    assert len(idx) == 60 and all(48 * s <= i < 48 * (s + 1) for s, i in enumerate(idx))
    with pytest.raises(ValueError, match="scene_lengths"):
        animation_indices(100, 24, scene_lengths=[1, 0])


def test_sampling_real_speed_time_lapse_and_short_clips():
    assert animation_indices(33, 16, preview_fps=8) == [2 * j for j in range(17)]  # 2 s at 16 fps → every 2nd frame
    assert animation_indices(49, 24) == [4 * j for j in range(13)]  # 2 s at 24 fps, ANIM_FPS 6 → every 4th frame
    assert animation_indices(3, 16) == [0, 2]  # shorter than one preview frame: both ends
    long = animation_indices(24 * 60, 24)  # a minute: time-lapse, first and last frame included
    assert len(long) == ANIM_MAX_FRAMES and long[0] == 0 and long[-1] == 24 * 60 - 1


def test_memory_is_bounded_to_the_sampled_frames():
    """Ten thousand 832x480 frames offered one by one: only ANIM_MAX_FRAMES small frames are ever kept."""
    frame = _photo("coffee.png")
    builder = AnimatedPreview(10_000, Fraction(24))
    for _ in range(10_000):
        builder.add(frame)
        assert len(builder.kept) <= ANIM_MAX_FRAMES
    assert builder.seen == 10_000 and len(builder.kept) == ANIM_MAX_FRAMES
    assert sum(f.nbytes for f in builder.kept) <= ANIM_MAX_FRAMES * ANIM_MAX_WIDTH * 185 * 3


def test_size_limit_scales_the_frames_down():
    noise = np.random.default_rng(3).integers(0, 256, (12, 240, 480, 3), dtype=np.uint8)
    anim = animated_preview(noise, 12, 6, max_bytes=60_000)  # 12 frames at ANIM_FPS: every frame kept
    img, _ = _decode(anim.data)
    assert len(anim.data) <= 60_000 and img.n_frames == 12 and img.size[0] < ANIM_MAX_WIDTH


def test_gif_where_webp_is_not_available(monkeypatch):
    monkeypatch.setattr(previews, "WEBP_AVAILABLE", False)
    frames = _pan(_photo("chelsea.png", 320, 200), 17, 4)
    anim = animated_preview(frames, 17, 12)  # 12 fps shown at ANIM_FPS 6: every 2nd frame
    img, decoded = _decode(anim.data)
    assert anim.mime == "image/gif" and img.format == "GIF" and img.n_frames == 9 > 1
    assert _mad(decoded[4], frames[8]) < 20


def test_markdown_and_file_preview(tmp_path):
    clip = Clip(_pan(_photo("rocket.jpg", 416, 240), 33, 2), Fraction(12))  # every 2nd frame at ANIM_FPS 6
    video = write_video(tmp_path / "clip.mp4", clip, lossless=True).path
    anim = animated_preview_of_file(video)
    assert anim.frames == 17 and anim.width == ANIM_MAX_WIDTH
    md = anim.markdown(alt="clip")
    m = re.fullmatch(r"!\[clip\]\(data:image/webp;base64,([A-Za-z0-9+/=]+)\)", md)
    assert m and Image.open(io.BytesIO(base64.b64decode(m.group(1)))).n_frames == 17
    with pytest.raises(ValueError, match="no frames"):
        AnimatedPreview(10, 16).finish()
    with pytest.raises(ValueError, match="at least one frame"):
        AnimatedPreview(0, 16)


def test_a_caller_may_skip_the_frames_that_are_not_sampled():
    frames = _pan(_photo("coffee.png", 160, 96), 33, 2)
    builder = AnimatedPreview(33, 12)  # every 2nd frame at ANIM_FPS 6
    for frame in frames:
        if builder.wants_next:
            builder.add(frame)
        else:
            builder.skip()
    assert builder.done and len(builder.kept) == 17
    assert all(np.array_equal(k, frames[2 * i]) for i, k in enumerate(builder.kept))
    builder = AnimatedPreview(33, 12)
    with pytest.raises(ValueError, match="frame 0 is sampled"):
        builder.skip()
