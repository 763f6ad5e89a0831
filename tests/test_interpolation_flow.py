"""The optical-flow preview interpolator through the shared timing and scene-cut code."""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from wan_pipeline.engines.optical_flow import FlowInterpolator
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import fit_image, read_image
from wan_pipeline.preset import load_preset

IMAGES = Path(__file__).resolve().parent.parent / "stories" / "images"


def pan_clip(name: str, n: int, width: int = 160, height: int = 96, step: int = 4) -> np.ndarray:
    big = fit_image(read_image(IMAGES / name), width + step * n, height)
    return np.stack([big[:, i * step : i * step + width] for i in range(n)])


@pytest.fixture(scope="module")
def preset():
    return load_preset("preview")


@pytest.mark.parametrize("factor, n, expected", [(2, 9, 17), (4, 5, 17)])
def test_factor_counts_fps_and_originals(preset, factor, n, expected):
    frames = pan_clip("chelsea.png", n)
    out = FlowInterpolator({"factor": factor}, preset).interpolate(Clip(frames, Fraction(24000, 1001), audio="a.m4a"))
    assert out.num_frames == expected and out.fps == Fraction(24000 * factor, 1001)
    assert np.array_equal(out.frames[::factor], frames) and out.audio == "a.m4a"
    assert out.meta["interp_factor"] == factor and out.meta["scene_cuts"] == 0 and out.meta["duplicated_frames"] == 0


def test_target_fps_16_to_30(preset):
    frames = pan_clip("coffee.png", 17, 96, 64, step=2)
    eng = FlowInterpolator({"target_fps": 30}, preset)
    out = eng.interpolate(Clip(frames, Fraction(16)))
    assert out.num_frames == 31 and out.fps == 30 and out.meta["interp_factor"] == pytest.approx(30 / 16)
    assert np.array_equal(out.frames[0], frames[0]) and np.array_equal(out.frames[-1], frames[-1])
    assert eng.describe()["target_fps"] == "30"


def test_flow_frame_beats_blend_on_a_real_pan(preset):
    truth = pan_clip("astronaut.png", 5, step=3)
    out = FlowInterpolator({"factor": 2}, preset).interpolate(Clip(truth[::2], Fraction(8)))
    assert out.num_frames == 5
    err_flow = np.abs(out.frames[1].astype(float) - truth[1]).mean()
    err_blend = np.abs((truth[0].astype(float) + truth[2]) / 2 - truth[1]).mean()
    assert err_flow < 0.7 * err_blend


def test_hard_cut_is_duplicated(preset):
    frames = np.concatenate([pan_clip("astronaut.png", 3), pan_clip("rocket.jpg", 3)])
    out = FlowInterpolator({"factor": 4}, preset).interpolate(Clip(frames, Fraction(16)))
    assert out.num_frames == 21 and out.meta["scene_cuts"] == 1 and out.meta["duplicated_frames"] == 3
    assert np.array_equal(out.frames[9], frames[2])
    assert all(np.array_equal(out.frames[i], frames[3]) for i in (10, 11, 12))


def test_bad_params(preset):
    with pytest.raises(InputError, match="factor must be 2 or 4"):
        FlowInterpolator({"factor": 3}, preset)
    with pytest.raises(InputError, match="not both"):
        FlowInterpolator({"factor": 2, "target_fps": 30}, preset)
