"""``upscale_file`` / ``interpolate_file``: one stage on a video file, audio kept, outputs atomic."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from PIL import Image

from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.video_io import probe_video, read_video, write_video
from wan_pipeline.models.tiny_esrgan import make_tiny_esrgan
from wan_pipeline.postprocess import interpolate_file, upscale_file

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "stories" / "images" / "coffee.png"


def make_video(path: Path, *, frames: int = 6, fps: Fraction = Fraction(12), size=(64, 48), audio: bool = True) -> Path:
    """Write an H.264 MP4 of a camera pan over a real photo, with an AAC 440 Hz sine track."""
    img = np.asarray(Image.open(PHOTO).convert("RGB"))
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
        vs.options = {"qp": "0"}
        if audio:
            rate = 44100
            aus = out.add_stream("aac", rate=rate)
            aus.layout = "mono"
        for i in range(frames):
            frame = np.ascontiguousarray(img[50 + 3 * i : 50 + 3 * i + h, 100 + 5 * i : 100 + 5 * i + w])
            for pkt in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if audio:
            n = int(rate * frames / fps)
            t = np.arange(n) / rate
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            chunk = 1024
            for start in range(0, n, chunk):
                part = samples[None, start : start + chunk]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout="mono")
                af.sample_rate = rate
                af.pts = start
                for pkt in aus.encode(af):
                    out.mux(pkt)
            for pkt in aus.encode():
                out.mux(pkt)
    return path


def audio_duration_s(path: Path) -> float:
    """Seconds of decoded audio in ``path`` (0.0 without an audio stream)."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0
        samples = sum(f.samples for f in c.decode(audio=0))
        return samples / c.streams.audio[0].rate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_esrgan(tmp_path_factory.mktemp("tiny-esrgan"))


def esrgan_preset(tmp_path: Path, model: Path, **params) -> Path:
    data = yaml.safe_load((ROOT / "workflows" / "preview.yaml").read_text())
    data["name"] = "esrgan-test"
    data["stages"]["upscaled"] = {"engine": "realesrgan", "model": str(model), **params}
    path = tmp_path / "esrgan-test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_upscale_file_keeps_frames_fps_and_audio(tmp_path, tiny):
    src = make_video(tmp_path / "in.mp4")
    src_audio = audio_duration_s(src)
    assert src_audio == pytest.approx(0.5, abs=0.05)
    preset = esrgan_preset(tmp_path, tiny["srvgg_x4"])
    info = upscale_file(src, tmp_path / "out.mp4", preset=preset, lossless=True)
    assert (info.frames, info.fps, info.width, info.height) == (6, Fraction(12), 256, 192)
    assert info.has_audio
    assert audio_duration_s(tmp_path / "out.mp4") == pytest.approx(src_audio, abs=0.05)
    # the model's pixels, losslessly stored: frame 0 ≈ nearest-upscaled input (SRVGG adds a residual)
    out = read_video(tmp_path / "out.mp4").frames
    inp = read_video(src).frames
    nearest = inp[0].repeat(4, axis=0).repeat(4, axis=1).astype(int)
    assert np.abs(out[0].astype(int) - nearest).mean() < 6


def test_upscale_file_height_and_scale(tmp_path, tiny):
    src = make_video(tmp_path / "in.mp4", audio=False)
    preset = esrgan_preset(tmp_path, tiny["rrdb_x2"], tile=64, tile_overlap=8)
    info = upscale_file(src, tmp_path / "h.mp4", height=72, preset=preset)
    assert (info.width, info.height, info.frames, info.has_audio) == (96, 72, 6, False)
    info = upscale_file(src, tmp_path / "s.mp4", scale=3, preset=preset)
    assert (info.width, info.height) == (192, 144)
    with pytest.raises(InputError, match="not both"):
        upscale_file(src, tmp_path / "x.mp4", scale=2, height=96, preset=preset)


@pytest.mark.parametrize("kind", ["corrupt", "non_sr"])
def test_bad_weights_leave_the_previous_output_untouched(tmp_path, tiny, kind):
    import torch

    from wan_pipeline.models.tiny_esrgan import srvgg_state_dict

    src = make_video(tmp_path / "in.mp4", frames=3, audio=False)
    out = tmp_path / "out.mp4"
    upscale_file(src, out, preset=esrgan_preset(tmp_path, tiny["srvgg_x4"]))
    before = out.read_bytes()
    bad = tmp_path / f"{kind}.pth"
    if kind == "corrupt":
        bad.write_bytes(tiny["srvgg_x4"].read_bytes()[:5000])  # a truncated download
        pattern = "corrupt.pth.*cannot load"
    else:
        torch.save({"params": srvgg_state_dict(scale=1)}, bad)
        pattern = "non_sr.pth.*not a super-resolution"
    with pytest.raises(InputError, match=pattern):
        upscale_file(src, out, preset=esrgan_preset(tmp_path, bad))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_missing_input_is_a_named_error(tmp_path, tiny):
    with pytest.raises(InputError, match="missing.mp4.*not found"):
        upscale_file(tmp_path / "missing.mp4", tmp_path / "o.mp4", preset=esrgan_preset(tmp_path, tiny["srvgg_x4"]))


def test_interpolate_file_rejects_factor_and_fps_together(tmp_path):
    with pytest.raises(InputError, match="not both"):
        interpolate_file(tmp_path / "a.mp4", tmp_path / "b.mp4", factor=2, fps=48)


def test_preview_interpolate_file_by_factor_and_fps_keeps_audio(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=6, fps=Fraction(12))
    src_audio = audio_duration_s(src)
    info = interpolate_file(src, tmp_path / "x2.mp4", factor=2, lossless=True)
    assert (info.frames, info.fps, info.width, info.height) == (11, Fraction(24), 64, 48)
    assert info.has_audio and audio_duration_s(tmp_path / "x2.mp4") == pytest.approx(src_audio, abs=0.1)
    # kept frames are the input frames (lossless), synthesised ones lie between their neighbours
    inp, out = read_video(src).frames, read_video(tmp_path / "x2.mp4").frames
    assert np.array_equal(out[0::2], inp)
    info = interpolate_file(src, tmp_path / "x4.mp4", fps=48)
    assert (info.frames, info.fps) == (21, Fraction(48))
    # a rate that is not a multiple: output timestamps i/30 over the input's span (5/12 s) → 13 frames
    info = interpolate_file(src, tmp_path / "odd.mp4", fps=30, lossless=True)
    assert (info.frames, info.fps) == (int(Fraction(5, 12) * 30) + 1, Fraction(30))
    assert np.array_equal(read_video(tmp_path / "odd.mp4").frames[0], inp[0])
    with pytest.raises(InputError, match="not both"):
        interpolate_file(src, tmp_path / "bad.mp4", factor=2, fps=30)


def test_preview_upscale_file_scale_and_height(tmp_path):
    src = make_video(tmp_path / "in.mp4", frames=3)
    info = upscale_file(src, tmp_path / "s.mp4", scale=2)
    assert (info.width, info.height, info.frames, info.has_audio) == (128, 96, 3, True)
    info = upscale_file(src, tmp_path / "h.mp4", height=120)
    assert (info.width, info.height) == (160, 120)
    assert probe_video(src).frames == 3


def _pan_video(path: Path, *, frames: int = 17, size=(416, 240), audio: bool = True) -> Path:
    """A camera pan over the real photo at a delivery-like size (416x240), with an AAC track."""
    w, h = size
    img = np.asarray(Image.open(PHOTO).convert("RGB").resize((w + 3 * frames, h), Image.LANCZOS))
    clip = Clip(np.stack([np.ascontiguousarray(img[:, 3 * i : 3 * i + w]) for i in range(frames)]), Fraction(16))
    clip.audio = str(make_video(path.with_name("tone.mp4"), frames=frames, fps=Fraction(16))) if audio else None
    write_video(path, clip, lossless=True)
    return path


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("tool", ["interpolate", "upscale"])
def test_tools_deliver_h264_420_by_default(tmp_path, tool):
    """Default output: H.264 yuv420p that decodes frame by frame, audio kept, several times smaller
    than the lossless intermediate (``lossless=True``) and close to it in pixels."""
    src = _pan_video(tmp_path / "in.mp4")
    run = interpolate_file if tool == "interpolate" else upscale_file
    kwargs = {"factor": 2} if tool == "interpolate" else {"scale": 2}
    delivery = run(src, tmp_path / "delivery.mp4", **kwargs)
    lossless = run(src, tmp_path / "lossless.mp4", lossless=True, **kwargs)
    assert (delivery.codec, delivery.pix_fmt) == ("h264", "yuv420p")
    assert lossless.pix_fmt != "yuv420p"
    assert (delivery.frames, delivery.fps, delivery.width, delivery.height) == (
        lossless.frames,
        lossless.fps,
        lossless.width,
        lossless.height,
    )
    assert _decoded_frames(tmp_path / "delivery.mp4") == delivery.frames
    assert delivery.has_audio and audio_duration_s(tmp_path / "delivery.mp4") == pytest.approx(audio_duration_s(src), abs=0.1)
    small, big = (tmp_path / "delivery.mp4").stat().st_size, (tmp_path / "lossless.mp4").stat().st_size
    assert small * 4 < big, (small, big)
    a, b = read_video(tmp_path / "delivery.mp4").frames, read_video(tmp_path / "lossless.mp4").frames
    assert np.abs(a.astype(int) - b).mean() < 3.0  # visually lossless


def test_crf_trades_size_for_quality_and_odd_sizes_are_named(tmp_path):
    src = _pan_video(tmp_path / "in.mp4", audio=False)
    hi = interpolate_file(src, tmp_path / "crf18.mp4", factor=2)
    lo = interpolate_file(src, tmp_path / "crf30.mp4", factor=2, crf=30)
    assert (tmp_path / "crf30.mp4").stat().st_size < (tmp_path / "crf18.mp4").stat().st_size
    assert hi.frames == lo.frames == 33
    odd = _pan_video(tmp_path / "odd.mp4", size=(415, 239), audio=False)
    with pytest.raises(InputError, match=r"out\.mp4.*even width and height.*--lossless"):
        interpolate_file(odd, tmp_path / "out.mp4", factor=2)
    assert not (tmp_path / "out.mp4").exists()
    assert interpolate_file(odd, tmp_path / "out.mp4", factor=2, lossless=True).width == 415
