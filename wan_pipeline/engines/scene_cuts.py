"""Hard-cut detection between consecutive frames, so that no frame is synthesised across a cut.

A pair of consecutive frames (a, a + 1) is a cut when BOTH signals say the picture changed:

* colour-histogram correlation (Pearson, joint hue × saturation histogram plus a value
  histogram, on frames downscaled to ``size`` px wide) falls below ``correlation_below``;
* mean absolute difference of the downscaled grey frames, as a fraction of 255, rises above
  ``difference_above``.

The histogram alone misses cuts between shots of similar colours and the difference alone fires on
fast camera motion; asking for both keeps pans and zooms (high correlation) from counting as cuts.
Defaults were measured on the project's reference photos (stories/images/, 320×192): cuts between
two different photos score correlation 0.01–0.47 and difference 0.21–0.31, while a 5 %-of-width
per frame pan or a zoom over one photo keeps correlation ≥ 0.99 with difference up to 0.15 (so the
difference alone could not separate them). Override them per preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CutThresholds:
    """Thresholds of :func:`detect_cuts` (see the module docstring for their meaning)."""

    correlation_below: float = 0.6
    difference_above: float = 0.1
    size: int = 64


def _features(frame: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (size, max(1, round(h * size / w))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    hs = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    v = cv2.calcHist([hsv], [2], None, [16], [0, 256]).ravel()
    hist = np.concatenate([hs, v]).astype(np.float64)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return hist, grey


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return 1.0 if denom == 0 else float((a * b).sum() / denom)


def pair_scores(frames: np.ndarray, size: int = 64) -> list[tuple[float, float]]:
    """(histogram correlation, mean abs grey difference / 255) of each consecutive pair.

    frames: uint8 (T, H, W, 3) RGB. Returns T − 1 tuples.
    """
    feats = [_features(f, size) for f in frames]
    return [(_correlation(h0, h1), float(np.abs(g0 - g1).mean() / 255.0)) for (h0, g0), (h1, g1) in zip(feats[:-1], feats[1:])]


class CutDetector:
    """Cut detection on a stream: :meth:`push` each frame in order; it answers whether the pair
    (previous frame, this frame) is a hard cut. Holds only the previous frame's features."""

    def __init__(self, thresholds: CutThresholds | None = None):
        self.thresholds = thresholds or CutThresholds()
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def push(self, frame: np.ndarray) -> bool:
        """frame: uint8 (H, W, 3) RGB. True when it starts a new shot (False for the first frame)."""
        th = self.thresholds
        feats = _features(frame, th.size)
        prev, self._prev = self._prev, feats
        if prev is None:
            return False
        corr, diff = _correlation(prev[0], feats[0]), float(np.abs(prev[1] - feats[1]).mean() / 255.0)
        return corr < th.correlation_below and diff > th.difference_above


def detect_cuts(frames: np.ndarray, thresholds: CutThresholds | None = None) -> set[int]:
    """Pair indices a (cut between frames a and a + 1) that are hard cuts.

    frames: uint8 (T, H, W, 3) RGB. Returns an empty set for fewer than two frames.
    """
    detector = CutDetector(thresholds)
    return {a - 1 for a, frame in enumerate(frames) if detector.push(frame)}
