"""PyAV video files: lossless intermediates, 4:2:0 film, exact rational fps, atomic writes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.conftest import IMAGES
from wan_pipeline.errors import InputError
from wan_pipeline.media import Clip, fit_image, probe_video, read_image, read_video, write_video


def _frames(n=9, w=64, h=48):
    base = fit_image(read_image(IMAGES / "coffee.png"), w, h)
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(n)])


def test_lossless_roundtrip_is_bit_exact(tmp_path):
    frames = _frames()
    info = write_video(tmp_path / "c.mp4", Clip(frames, 16), lossless=True)
    assert (info.frames, info.fps, info.width, info.height, info.codec) == (9, Fraction(16), 64, 48, "h264")
    back = read_video(tmp_path / "c.mp4")
    assert np.array_equal(back.frames, frames) and back.fps == Fraction(16)


def test_ntsc_rate_is_kept_exactly(tmp_path):
    info = write_video(tmp_path / "n.mp4", Clip(_frames(5), Fraction(24000, 1001)))
    assert info.fps == Fraction(24000, 1001)
    assert read_video(tmp_path / "n.mp4").fps == Fraction(24000, 1001)


def test_film_is_yuv420_without_colour_drift(tmp_path):
    frames = _frames(w=256, h=192)
    info = write_video(tmp_path / "f.mp4", Clip(frames, 32), lossless=False, crf=18)
    assert info.pix_fmt == "yuv420p" and info.frames == 9 and info.fps == 32
    diff = read_video(tmp_path / "f.mp4").frames.astype(float) - frames
    assert np.abs(diff).mean() < 4  # chroma subsampling of a detailed photo
    # no systematic shift of any channel (swscale's direct 4:2:0 → RGB path shifted ~-1.4)
    assert np.all(np.abs(diff.mean(axis=(0, 1, 2))) < 0.5)


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "keep.mp4"
    write_video(target, Clip(_frames(), 16))
    before = target.read_bytes()
    with pytest.raises(ValueError):
        write_video(target, Clip(_frames(w=63, h=47), 16), lossless=False)  # odd size cannot be 4:2:0
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_not_a_video_names_the_file(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError, match="bad.mp4"):
        probe_video(bad)
    with pytest.raises(InputError, match="not found"):
        read_video(tmp_path / "missing.mp4")


def test_decimal_ntsc_rates_are_exact():
    from wan_pipeline.media.clip import as_fps

    assert as_fps(23.976) == Fraction(24000, 1001) and as_fps(29.97) == Fraction(30000, 1001)
    assert as_fps(59.94) == Fraction(60000, 1001) and as_fps("24000/1001") == Fraction(24000, 1001)
    assert as_fps(24.0) == 24 and as_fps(12.5) == Fraction(25, 2) and as_fps(16) == 16
    with pytest.raises(ValueError):
        as_fps(0)


def test_codec_thread_share_reaches_encoder_and_decoder(tmp_path):
    """A parallel CPU run's share of the cores reaches the H.264 encoder and decoder it opens, and
    the frames stay exact; 0 hands the choice back to FFmpeg."""
    from wan_pipeline.media import video_io

    frames = np.random.default_rng(5).integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)
    try:
        video_io.set_codec_threads(1)
        with video_io.VideoWriter(tmp_path / "one.mp4", width=64, height=48, fps=16) as writer:
            assert writer._stream.codec_context.thread_count == 1
            writer.write(frames)
        stream = video_io.open_video(tmp_path / "one.mp4")
        assert np.array_equal(np.stack(list(stream)), frames)
        video_io.set_codec_threads(0)
        with video_io.VideoWriter(tmp_path / "auto.mp4", width=64, height=48, fps=16) as writer:
            assert writer._stream.codec_context.thread_count == 0  # PyAV's default: FFmpeg picks
            writer.write(frames)
    finally:
        video_io.set_codec_threads(0)
