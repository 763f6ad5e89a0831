"""Real-ESRGAN engine on the miniature checkpoints (CPU; one CUDA fp16 test skipped without CUDA)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wan_pipeline.engines.esrgan import RealEsrganUpscaler, default_tile, load_sr_model
from wan_pipeline.engines.registry import build_engine
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip
from wan_pipeline.models.tiny_esrgan import make_tiny_esrgan, srvgg_state_dict
from wan_pipeline.preset import StageConfig, load_preset

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "stories" / "images" / "astronaut.png"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return make_tiny_esrgan(tmp_path_factory.mktemp("tiny-esrgan"))


@pytest.fixture(scope="module")
def preset():
    return load_preset("preview").model_copy(update={"device": "cpu"})


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 256×256 crop of a real photo, uint8 (256, 256, 3)."""
    img = np.asarray(Image.open(PHOTO).convert("RGB"))
    return np.ascontiguousarray(img[128:384, 128:384])


def test_tiny_weights_load_through_spandrel_with_their_scale(tiny):
    expected = {"rrdb_x4": ("ESRGAN", 4), "rrdb_x2": ("ESRGAN", 2), "srvgg_x4": ("Compact", 4), "rrdb_x4_safetensors": ("ESRGAN", 4)}
    assert set(tiny) == set(expected)
    for key, (arch, scale) in expected.items():
        path = tiny[key]
        assert path.stat().st_size < 2_000_000
        desc = load_sr_model(path)
        assert (desc.architecture.id, desc.scale, desc.purpose) == (arch, scale, "SR")
    # the .pth files are plain tensors in the published layout
    rrdb = torch.load(tiny["rrdb_x4"], weights_only=True)
    assert "conv_first.weight" in rrdb["params_ema"] and "body.0.rdb1.conv1.weight" in rrdb["params_ema"]
    srvgg = torch.load(tiny["srvgg_x4"], weights_only=True)
    assert srvgg["params"]["body.0.weight"].shape[1] == 3


def test_tiny_weights_are_deterministic(tiny, tmp_path):
    again = make_tiny_esrgan(tmp_path)
    for key in tiny:
        assert again[key].read_bytes() == tiny[key].read_bytes()


@pytest.mark.parametrize("key", ["rrdb_x4", "rrdb_x2", "srvgg_x4"])
def test_tiled_equals_untiled_within_one_grey_level(tiny, preset, crop, key):
    whole = RealEsrganUpscaler({"model": str(tiny[key]), "tile": 512}, preset)
    tiled = RealEsrganUpscaler({"model": str(tiny[key]), "tile": 96, "tile_overlap": 16}, preset)
    a = whole.upscale_frames(crop[None])
    b = tiled.upscale_frames(crop[None])
    s = whole.scale
    assert a.shape == b.shape == (1, 256 * s, 256 * s, 3)
    assert a.std() > 20  # a picture, not a flat colour
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_tiles_without_overlap_show_seams(tiny, preset, crop):
    """The equality above depends on the overlap: without context the tile borders differ."""
    whole = RealEsrganUpscaler({"model": str(tiny["rrdb_x4"]), "tile": 512}, preset)
    naive = RealEsrganUpscaler({"model": str(tiny["rrdb_x4"]), "tile": 64, "tile_overlap": 0}, preset)
    part = crop[None, :128, :128]
    diff = np.abs(whole.upscale_frames(part).astype(int) - naive.upscale_frames(part).astype(int))
    assert diff.max() > 1


def test_upscale_clip_keeps_frames_fps_audio_and_reports_meta(tiny, preset, crop):
    frames = np.stack([crop[:60, :80], crop[10:70, 5:85], crop[20:80, 10:90]])
    clip = Clip(frames, Fraction(24000, 1001), audio="/some/audio.mp4", meta={"scene": "s1"})
    config = StageConfig(engine="realesrgan", model=str(tiny["srvgg_x4"]), batch_size=2)
    engine = build_engine("upscaled", config, preset)
    out = engine.upscale(clip)
    assert out.frames.shape == (3, 240, 320, 3)
    assert out.fps == Fraction(24000, 1001) and out.audio == clip.audio
    assert out.meta["upscale_factor"] == 4.0 and out.meta["scene"] == "s1"
    assert out.meta["model"] == str(tiny["srvgg_x4"]) and out.meta["tile"] == engine.tile
    d = engine.describe()
    assert d["engine"] == "realesrgan" and d["model_scale"] == 4 and d["dtype"] == "float32"
    # each frame is upscaled on its own: frame 1 alone gives the same pixels as in the batch
    single = engine.upscale_frames(frames[1:2])
    assert np.array_equal(single[0], out.frames[1])


def test_height_resize_keeps_aspect_with_even_width(tiny, preset, crop):
    frames = crop[None, :50, :75]  # 75×50 → ×2 = 150×100 → height 64 → width 96 (even)
    engine = RealEsrganUpscaler({"model": str(tiny["rrdb_x2"]), "height": 64}, preset)
    out = engine.upscale(Clip(frames, 16))
    assert out.frames.shape == (1, 64, 96, 3)
    assert out.meta["upscale_factor"] == pytest.approx(64 / 50)
    odd = RealEsrganUpscaler({"model": str(tiny["rrdb_x2"]), "height": 70}, preset).upscale(Clip(crop[None, :50, :80], 16))
    assert odd.frames.shape[1] == 70 and odd.frames.shape[2] % 2 == 0


def test_scale_other_than_the_models_is_reached_by_resize(tiny, preset, crop):
    engine = RealEsrganUpscaler({"model": str(tiny["srvgg_x4"]), "scale": 2}, preset)
    out = engine.upscale(Clip(crop[None, :40, :64], 16))
    assert out.frames.shape == (1, 80, 128, 3)
    assert out.meta["upscale_factor"] == 2.0


def test_default_tile_follows_free_memory(tiny, preset, monkeypatch):
    import psutil

    desc = load_sr_model(tiny["rrdb_x4"])

    class Mem:
        available = 4 * 1024**3

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem)
    big = default_tile(desc, "cpu", 1, 4)
    Mem.available = 64 * 1024**2
    small = default_tile(desc, "cpu", 1, 4)
    assert big > small >= 64 and big % 16 == 0 and small % 16 == 0


def test_default_tile_is_sized_when_the_stage_runs(tiny, preset, crop, monkeypatch):
    """Memory taken after the engine is built (a VACE model loaded in between) shrinks the tile."""
    import psutil

    class Mem:
        available = 4 * 1024**3

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem)
    engine = RealEsrganUpscaler({"model": str(tiny["rrdb_x4"])}, preset)
    roomy = default_tile(engine.desc, "cpu", 1, 4)
    Mem.available = 64 * 1024**2  # most of the memory is gone by the time the stage runs
    out = engine.upscale(Clip(crop[None, :64, :64], 16))
    assert out.meta["tile"] == engine.describe()["tile"] == default_tile(engine.desc, "cpu", 1, 4) < roomy
    fixed = RealEsrganUpscaler({"model": str(tiny["rrdb_x4"]), "tile": 96}, preset)
    assert fixed.upscale(Clip(crop[None, :64, :64], 16)).meta["tile"] == 96


def test_missing_corrupt_and_non_sr_weights_are_named_errors(tmp_path, preset):
    missing = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="nope.pth.*not found"):
        RealEsrganUpscaler({"model": str(missing)}, preset)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x80\x02this is not a checkpoint" * 10)
    with pytest.raises(InputError, match="corrupt.pth.*cannot load"):
        RealEsrganUpscaler({"model": str(corrupt)}, preset)
    unknown = tmp_path / "unknown.pth"
    torch.save({"encoder.weight": torch.zeros(4, 4)}, unknown)
    with pytest.raises(InputError, match="unknown.pth.*cannot load.*UnsupportedModelError"):
        RealEsrganUpscaler({"model": str(unknown)}, preset)
    restoration = tmp_path / "denoise-1x.pth"
    torch.save({"params": srvgg_state_dict(scale=1)}, restoration)
    with pytest.raises(InputError, match="denoise-1x.pth.*Restoration model with scale 1"):
        RealEsrganUpscaler({"model": str(restoration)}, preset)


def test_mismatched_tensor_shapes_are_named_errors(tmp_path, tiny, preset):
    state = torch.load(tiny["rrdb_x4"], weights_only=True)["params_ema"]
    state["body.0.rdb1.conv2.weight"] = torch.zeros(32, 5, 3, 3)
    bad = tmp_path / "mismatch.pth"
    torch.save({"params_ema": state}, bad)
    with pytest.raises(InputError, match="mismatch.pth.*cannot load"):
        RealEsrganUpscaler({"model": str(bad)}, preset)


def test_relative_model_path_is_under_the_storage_root(tiny, preset, monkeypatch):
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tiny["srvgg_x4"].parent.parent))
    rel = f"{tiny['srvgg_x4'].parent.name}/{tiny['srvgg_x4'].name}"
    engine = RealEsrganUpscaler({"model": rel}, preset)
    assert engine.model_path == tiny["srvgg_x4"]


def test_bad_params_name_the_field(tiny, preset):
    with pytest.raises(InputError, match="stages.upscaled.tile"):
        RealEsrganUpscaler({"model": str(tiny["srvgg_x4"]), "tile": 32, "tile_overlap": 16}, preset)
    with pytest.raises(InputError, match="stages.upscaled.dtype"):
        RealEsrganUpscaler({"model": str(tiny["srvgg_x4"]), "dtype": "float16"}, preset)
    with pytest.raises(InputError, match="stages.upscaled"):
        RealEsrganUpscaler({"model": str(tiny["srvgg_x4"]), "tiles": 64}, preset)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_matches_cpu_fp32(tiny, crop):
    gpu_preset = load_preset("preview").model_copy(update={"device": "cuda"})
    cpu_preset = load_preset("preview").model_copy(update={"device": "cpu"})
    frames = np.stack([crop, crop[::-1].copy(), crop[:, ::-1].copy()])
    gpu = RealEsrganUpscaler({"model": str(tiny["rrdb_x4"]), "tile": 128, "batch_size": 2}, gpu_preset)
    assert gpu.describe()["dtype"] == "float16"
    cpu = RealEsrganUpscaler({"model": str(tiny["rrdb_x4"]), "tile": 512}, cpu_preset)
    a, b = gpu.upscale_frames(frames), cpu.upscale_frames(frames)
    assert a.shape == b.shape == (3, 1024, 1024, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0


class _Payload:
    """Pickled, it runs ``Path(marker).touch()`` when unpickled by an unrestricted loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pt_weights_are_loaded_weights_only(tmp_path, tiny, preset):
    """A ``.pt`` upscaler file is read as tensors only: a state dict loads, a TorchScript program
    or a pickle that runs code is refused naming the file, and the code never runs."""
    state = torch.load(tiny["srvgg_x4"], weights_only=True)
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    assert load_sr_model(plain).scale == 4
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"params": _Payload(marker)}, evil)
    with pytest.raises(InputError, match="evil.pt.*no TorchScript, no pickled objects"):
        RealEsrganUpscaler({"model": str(evil)}, preset)
    assert not marker.exists()
    # a TorchScript program of a working upscaler (spandrel would run it through torch.jit.load)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(load_sr_model(plain).model, torch.zeros(1, 3, 16, 16)), str(scripted))
    with pytest.raises(InputError, match="scripted.pt.*cannot load"):
        RealEsrganUpscaler({"model": str(scripted)}, preset)
