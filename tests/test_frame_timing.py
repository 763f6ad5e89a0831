"""Exact frame arithmetic of interpolation: counts, rational fps, timestamps, cut handling."""

from fractions import Fraction

import pytest

from wan_pipeline.engines.frame_timing import (
    FrameSource,
    factor_fps,
    factor_sources,
    interpolated_count,
    plan_interpolation,
    target_sources,
)


@pytest.mark.parametrize("n, k, expected", [(17, 2, 33), (17, 4, 65), (81, 2, 161), (1, 4, 1), (2, 2, 3)])
def test_factor_count_is_k_times_n_minus_one_plus_one(n, k, expected):
    assert interpolated_count(n, k) == expected
    sources = factor_sources(n, k)
    assert len(sources) == expected
    assert sources[-1] == FrameSource(n - 1, Fraction(0))  # last input frame kept, not a black frame
    assert sources[0] == FrameSource(0, Fraction(0))


def test_factor_fps_is_exact():
    assert factor_fps(16, 2) == 32
    assert factor_fps(Fraction(24000, 1001), 2) == Fraction(48000, 1001)
    assert factor_fps("24000/1001", 4) == Fraction(96000, 1001)


def test_factor_timesteps_cycle_through_k():
    sources = factor_sources(3, 4)
    assert [(s.index, s.t) for s in sources] == [
        (0, 0),
        (0, Fraction(1, 4)),
        (0, Fraction(1, 2)),
        (0, Fraction(3, 4)),
        (1, 0),
        (1, Fraction(1, 4)),
        (1, Fraction(1, 2)),
        (1, Fraction(3, 4)),
        (2, 0),
    ]


def test_target_fps_16_to_30_spans_the_input_exactly():
    n = 17  # one second of 16 fps: timestamps 0 … 1 s
    sources = target_sources(n, 16, 30)
    assert len(sources) == 31  # 0 … 30/30 s
    assert sources[-1] == FrameSource(16, Fraction(0))  # last input frame lands on the grid
    for i, s in enumerate(sources):
        assert Fraction(s.index) + s.t == Fraction(i * 16, 30)  # output time i/30 in input frames
        assert 0 <= s.t < 1


def test_target_fps_ntsc_film_to_60_has_no_drift():
    n = 49
    fps_in = Fraction(24000, 1001)
    sources = target_sources(n, fps_in, 60)
    span = Fraction(n - 1) / fps_in
    assert len(sources) == int(span * 60) + 1 == 121
    last = sources[-1]
    # output time of the last frame is within one output frame of the input span, never past it
    t_last = (Fraction(last.index) + last.t) / fps_in
    assert t_last == Fraction(120, 60) and 0 <= span - t_last < Fraction(1, 60)
    assert all(s.index < n - 1 or s.t == 0 for s in sources)


def test_target_equal_to_factor_gives_the_factor_plan():
    fps = Fraction(24000, 1001)
    assert target_sources(25, fps, fps * 2) == factor_sources(25, 2)
    plan = plan_interpolation(25, fps, target_fps="48000/1001")
    assert plan.fps == Fraction(48000, 1001) and plan.num_frames == 49


def test_plan_copies_nearer_frame_inside_cut_pairs():
    plan = plan_interpolation(4, 16, factor=4, cut_pairs={1})
    assert plan.num_frames == 13
    # pair 1 (frames 1→2): t = 1/4 copies 1, t = 1/2 and 3/4 copy 2
    assert plan.copies[4:9] == (1, 1, 2, 2, 2)
    assert plan.duplicated_frames == 3
    synth = plan.synthesis
    assert len(synth) == 6 and all(a != 1 for _, a, _ in synth)
    assert [o for o, _, _ in synth] == [1, 2, 3, 9, 10, 11]


def test_plan_rejects_both_or_neither():
    with pytest.raises(ValueError):
        plan_interpolation(4, 16)
    with pytest.raises(ValueError):
        plan_interpolation(4, 16, factor=2, target_fps=30)
