"""Hard-cut detection on real photos: planted cuts found, camera motion never taken for a cut."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from wan_pipeline.engines.frame_timing import plan_interpolation
from wan_pipeline.engines.scene_cuts import CutThresholds, detect_cuts, pair_scores
from wan_pipeline.media.image_io import fit_image, read_image

IMAGES = Path(__file__).resolve().parent.parent / "stories" / "images"
W, H = 240, 144


def pan(name: str, n: int, step: int = 6) -> np.ndarray:
    """n frames of a horizontal camera pan over a real photo, uint8 (n, H, W, 3)."""
    big = fit_image(read_image(IMAGES / name), W + step * n, H)
    return np.stack([big[:, i * step : i * step + W] for i in range(n)])


def zoom(name: str, n: int) -> np.ndarray:
    big = fit_image(read_image(IMAGES / name), W, H)
    frames = []
    for z in np.linspace(0, 0.3, n):
        dy, dx = int(H * z / 2), int(W * z / 2)
        frames.append(cv2.resize(big[dy : H - dy, dx : W - dx], (W, H), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


@pytest.mark.parametrize("a, b", [("astronaut.png", "coffee.png"), ("chelsea.png", "coffee.png"), ("rocket.jpg", "chelsea.png")])
def test_planted_cut_between_two_photos_is_found_at_its_index(a, b):
    frames = np.concatenate([pan(a, 5), pan(b, 4)])
    assert detect_cuts(frames) == {4}


@pytest.mark.parametrize("name", ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"])
def test_camera_motion_is_not_a_cut(name):
    assert detect_cuts(pan(name, 8)) == set()
    assert detect_cuts(zoom(name, 8)) == set()


def test_two_cuts_and_scores():
    frames = np.concatenate([pan("astronaut.png", 3), pan("rocket.jpg", 3), pan("chelsea.png", 3)])
    assert detect_cuts(frames) == {2, 5}
    scores = pair_scores(frames)
    assert len(scores) == 8
    corr_cut, diff_cut = scores[2]
    corr_pan, diff_pan = scores[0]
    assert corr_cut < 0.5 < 0.95 < corr_pan
    assert diff_cut > diff_pan


def test_thresholds_are_overridable():
    frames = np.concatenate([pan("astronaut.png", 3), pan("coffee.png", 3)])
    assert detect_cuts(frames, CutThresholds(correlation_below=-2.0)) == set()  # never a cut
    assert detect_cuts(frames, CutThresholds(correlation_below=2.0, difference_above=0.0)) == {0, 1, 2, 3, 4}


def test_single_frame_has_no_cuts():
    assert detect_cuts(pan("coffee.png", 1)) == set()


def test_cut_pair_is_duplicated_not_synthesised():
    frames = np.concatenate([pan("astronaut.png", 4), pan("coffee.png", 4)])
    cuts = detect_cuts(frames)
    plan = plan_interpolation(len(frames), 16, factor=2, cut_pairs=cuts)
    assert plan.num_frames == 15 and plan.duplicated_frames == 1
    assert plan.copies[7] == 4  # t = 1/2 inside pair 3→4 copies the nearer (later) frame
    assert all(a not in cuts for _, a, _ in plan.synthesis)
