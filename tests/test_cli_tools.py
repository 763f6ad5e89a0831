"""The model and single-stage subcommands: inspect, doctor, make-tiny-models, interpolate, upscale."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IMAGES
from wan_pipeline.cli import main
from wan_pipeline.media import Clip, fit_image, probe_video, read_image, write_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "wan-configs"


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/reference/wan-configs is not beside the checkout")
def test_inspect_prints_variant_json(capsys):
    assert main(["inspect", str(SHARED / "Wan2.1-FLF2V-14B-720P-diffusers")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"].startswith("Wan2.1-FLF2V-14B") and report["pipeline_class"] == "WanImageToVideoPipeline"
    assert "FLF2V" in report["capabilities"]


def test_inspect_missing_model_names_the_download(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["inspect", "nobody/not-a-wan-model"]) == 2
    err = capsys.readouterr().err
    assert "nobody/not-a-wan-model" in err and "download" in err


def test_doctor_on_preview(capsys):
    assert main(["doctor", "preview"]) == 0
    out = capsys.readouterr().out
    assert "RAM" in out and "Preset preview" in out and "Ready." in out


def test_doctor_fails_until_the_tiny_models_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path))
    assert main(["doctor", "tiny"]) == 1
    out = capsys.readouterr().out
    lacks = out.split("Lacks:")[1].strip().splitlines()
    assert len(lacks) == 6  # keyframe, clip, clip.extension_model, interpolated, upscaled, film
    assert all("make-tiny-models" in line and str(tmp_path / "models" / "tiny") in line for line in lacks)
    assert any(line.strip().startswith("- clip.extension_model: ") and "wan21-vace" in line for line in lacks)
    assert main(["make-tiny-models"]) == 0
    capsys.readouterr()
    assert main(["doctor", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ready"] and report["lacks"] == []
    assert all(m["downloaded"] for m in report["models"] if m["kind"] == "diffusers checkpoint")


def test_doctor_names_where_post_processing_weights_come_from(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path / "storage"))
    assert main(["doctor", "wan22-ti2v-5b"]) == 1
    lacks = capsys.readouterr().out.split("Lacks:")[1]
    rife = next(line for line in lacks.splitlines() if line.strip().startswith("- interpolated:"))
    esrgan = next(line for line in lacks.splitlines() if line.strip().startswith("- upscaled:"))
    assert str(tmp_path / "storage" / "models" / "rife" / "flownet.pkl") in rife and "Practical-RIFE 4.6" in rife
    assert str(tmp_path / "storage" / "models" / "realesrgan" / "RealESRGAN_x2plus.pth") in esrgan
    assert "Real-ESRGAN v0.2.1 release" in esrgan
    assert "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in lacks


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/reference/wan-configs is not beside the checkout")
def test_inspect_tells_configs_from_weights(tmp_path, capsys):
    """A folder of configs only is found but not downloaded; a complete checkpoint lists its weights."""
    assert main(["inspect", str(SHARED / "Wan2.2-TI2V-5B-Diffusers")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["found"] is True and report["downloaded"] is False
    assert report["weight_files"]["transformer"] == [] and report["weight_files"]["vae"] == []
    from wan_pipeline.models.tiny import make_tiny_models

    folder = make_tiny_models(tmp_path, names=("wan22-ti2v",))["wan22-ti2v"]
    assert main(["inspect", str(folder)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["found"] and report["downloaded"]
    assert all(files and all(f.endswith(".safetensors") for f in files) for files in report["weight_files"].values())


def test_make_tiny_models_and_tools(tmp_path, capsys):
    assert main(["make-tiny-models", str(tmp_path / "tiny")]) == 0
    listing = capsys.readouterr().out
    assert "flownet.pkl" in listing and "realesr-general-x4v3" in listing and "wan21-i2v-distill-4step.safetensors" in listing
    assert "comfyui/models/diffusion_models/wan21-i2v_Q8_0.gguf" in listing and "wan21-i2v_fp8_e4m3fn.safetensors" in listing
    frames = np.stack([np.roll(fit_image(read_image(IMAGES / "rocket.jpg"), 64, 48), 2 * i, axis=1) for i in range(5)])
    write_video(tmp_path / "in.mp4", Clip(frames, 12))
    assert main(["interpolate", str(tmp_path / "in.mp4"), str(tmp_path / "x.mp4"), "--factor", "4"]) == 0
    assert capsys.readouterr().out.strip().endswith("x.mp4")
    info = probe_video(tmp_path / "x.mp4")
    assert (info.frames, info.fps) == (17, Fraction(48))
    assert main(["upscale", str(tmp_path / "x.mp4"), str(tmp_path / "u.mp4"), "--height", "96"]) == 0
    info = probe_video(tmp_path / "u.mp4")
    assert (info.width, info.height, info.frames) == (128, 96, 17)
    assert main(["interpolate", str(tmp_path / "missing.mp4"), str(tmp_path / "y.mp4"), "--factor", "2"]) == 2


def test_tools_write_delivery_files_unless_lossless(tmp_path, capsys):
    frames = np.stack([np.roll(fit_image(read_image(IMAGES / "coffee.png"), 96, 64), 3 * i, axis=1) for i in range(5)])
    src = write_video(tmp_path / "in.mp4", Clip(frames, 12)).path
    assert main(["interpolate", src, str(tmp_path / "d.mp4"), "--factor", "2"]) == 0
    assert "yuv420p" in capsys.readouterr().err
    assert main(["upscale", src, str(tmp_path / "c.mp4"), "--scale", "2", "--crf", "28"]) == 0
    assert main(["upscale", src, str(tmp_path / "l.mp4"), "--scale", "2", "--lossless"]) == 0
    assert probe_video(tmp_path / "d.mp4").pix_fmt == probe_video(tmp_path / "c.mp4").pix_fmt == "yuv420p"
    assert probe_video(tmp_path / "l.mp4").pix_fmt != "yuv420p"
    assert (tmp_path / "c.mp4").stat().st_size < (tmp_path / "l.mp4").stat().st_size
    for bad in (["--crf", "60"], ["--crf", "20", "--lossless"]):
        with pytest.raises(SystemExit) as exit_:
            main(["interpolate", src, str(tmp_path / "x.mp4"), "--factor", "2", *bad])
        assert exit_.value.code == 2
    assert not (tmp_path / "x.mp4").exists()
