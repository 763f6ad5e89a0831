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
    assert "RAM" in out and "Preset preview" in out


def test_make_tiny_models_and_tools(tmp_path, capsys):
    assert main(["make-tiny-models", str(tmp_path / "tiny")]) == 0
    listing = capsys.readouterr().out
    assert "flownet.pkl" in listing and "realesr-general-x4v3" in listing and "wan21-i2v-distill-4step.safetensors" in listing
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
