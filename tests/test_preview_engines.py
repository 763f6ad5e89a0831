"""The preview engines on real photos: frame counts, fps, sizes, handoff continuity, flow synthesis."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.conftest import IMAGES
from wan_pipeline.engines import ClipRequest, FilmRequest, FilmScene, KeyframeRequest
from wan_pipeline.engines.registry import build_engine
from wan_pipeline.errors import InputError
from wan_pipeline.media import Clip, read_image
from wan_pipeline.preset import load_preset


@pytest.fixture(scope="module")
def preset():
    return load_preset("preview")


def _keyframe(preset, name, seed=1):
    engine = build_engine("keyframe", preset.stages.keyframe, preset)
    image = read_image(IMAGES / name) if name else None
    return engine.render(
        KeyframeRequest(scene_id="s", prompt="p", negative_prompt="", seed=seed, width=preset.width, height=preset.height, image=image)
    )


def _clip(preset, first, last=None, camera="zoom_in", duration=1.5):
    engine = build_engine("clip", preset.stages.clip, preset)
    return engine.render(
        ClipRequest(
            scene_id="s",
            prompt="p",
            negative_prompt="",
            seed=1,
            width=preset.width,
            height=preset.height,
            fps=preset.base_fps,
            duration_s=duration,
            first=first,
            last=last,
            camera=camera,
        )
    )


def _mad(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_keyframe_fits_photo_without_stretching(preset):
    kf = _keyframe(preset, "chelsea.png")
    assert kf.shape == (preset.height, preset.width, 3) and kf.dtype == np.uint8
    # the cat photo is 451x300 (aspect 1.50); the preset is 416x240 (1.73): cover + centre crop
    src = read_image(IMAGES / "chelsea.png")
    assert _mad(kf.mean(axis=(0, 1)), src.mean(axis=(0, 1))) < 12


def test_procedural_keyframe_is_deterministic_placeholder(preset):
    a, b, c = _keyframe(preset, None, 5), _keyframe(preset, None, 5), _keyframe(preset, None, 6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() > 10  # not a flat colour


@pytest.mark.parametrize("camera", ["static", "zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down"])
def test_clip_frame_count_fps_size_and_first_frame(preset, camera):
    first = _keyframe(preset, "rocket.jpg")
    clip = _clip(preset, first, camera=camera, duration=1.5)
    assert clip.fps == Fraction(16) and clip.num_frames == round(1.5 * 16) + 1
    assert (clip.height, clip.width) == (preset.height, preset.width)
    assert _mad(clip.frames[0], first) == 0.0
    # a zoom-out inside the photo ends on the full frame (the keyframe); its move shows mid-clip
    moved = _mad(clip.frames[clip.num_frames // 2 if camera == "zoom_out" else -1], first)
    assert (moved < 0.01) if camera == "static" else (moved > 3.0)
    if camera == "zoom_out":
        assert np.array_equal(clip.frames[-1], first)
    assert clip.meta["flf2v"] is False and clip.meta["transition_frames"] == 0


def test_handoff_clip_ends_on_next_keyframe(preset):
    first, nxt = _keyframe(preset, "rocket.jpg"), _keyframe(preset, "astronaut.png")
    clip = _clip(preset, first, last=nxt, camera="pan_right", duration=2.0)
    assert clip.meta["flf2v"] is True
    assert _mad(clip.frames[0], first) <= 1.0
    assert _mad(clip.frames[-1], nxt) <= 1.0
    # it is a dissolve over time, not a jump: the middle is still the own scene, the end approaches the next
    mid = clip.frames[clip.num_frames // 2]
    assert _mad(mid, first) < _mad(mid, nxt)
    steps = [_mad(clip.frames[i], clip.frames[i + 1]) for i in range(clip.num_frames - 1)]
    assert max(steps) < 0.5 * _mad(first, nxt)


def test_flow_interpolation_counts_and_synthesises_motion(preset):
    first = _keyframe(preset, "coffee.png")
    clip = _clip(preset, first, camera="pan_left", duration=1.0)
    for factor in (2, 4):
        section = preset.stages.interpolated.model_copy(update={"factor": factor})
        engine = build_engine("interpolated", section, preset)
        out = engine.interpolate(clip)
        assert out.num_frames == factor * (clip.num_frames - 1) + 1
        assert out.fps == clip.fps * factor and out.meta["interp_factor"] == factor
        assert np.array_equal(out.frames[0], clip.frames[0]) and np.array_equal(out.frames[-1], clip.frames[-1])
        assert all(np.array_equal(out.frames[i * factor], clip.frames[i]) for i in range(clip.num_frames))


def test_flow_interpolated_frame_is_not_duplicate_nor_blend(preset):
    """Between two frames with real motion, the synthesised frame differs from both neighbours and
    from their average (a plain blend would ghost), and sits closer to the true middle frame."""
    photo = _keyframe(preset, "astronaut.png")
    w = preset.width
    shift = 12
    frames = np.stack([np.roll(photo, s, axis=1) for s in (0, shift // 2, shift)])  # truth at the middle
    clip = Clip(frames[[0, 2]], Fraction(16))
    out = build_engine("interpolated", preset.stages.interpolated, preset).interpolate(clip)
    mid, a, b, truth = out.frames[1], frames[0], frames[2], frames[1]
    blend = (a.astype(np.float64) + b) / 2
    crop = (slice(8, -8), slice(shift + 8, w - shift - 8))
    assert _mad(mid[crop], a[crop]) > 3 and _mad(mid[crop], b[crop]) > 3
    assert _mad(mid[crop], blend[crop]) > 1.5
    assert _mad(mid[crop], truth[crop]) < 0.5 * _mad(blend[crop], truth[crop])


def test_lanczos_upscale(preset):
    clip = _clip(preset, _keyframe(preset, "rocket.jpg"), duration=0.5)
    out = build_engine("upscaled", preset.stages.upscaled, preset).upscale(clip)
    assert (out.height, out.width) == (2 * clip.height, 2 * clip.width)
    assert out.num_frames == clip.num_frames and out.fps == clip.fps and out.meta["upscale_factor"] == 2.0


def test_film_concatenation_duration_and_seams(preset):
    a, b, c = (_keyframe(preset, n) for n in ("rocket.jpg", "astronaut.png", "chelsea.png"))
    clips = [_clip(preset, a, last=b, duration=1.0), _clip(preset, b, duration=1.0), _clip(preset, c, duration=1.0)]
    scenes = [
        FilmScene("a", clips[0], clips[0], "handoff"),
        FilmScene("b", clips[1], clips[1], "cut"),
        FilmScene("c", clips[2], clips[2], "handoff"),
    ]
    film = build_engine("film", preset.stages.film, preset).join(FilmRequest(scenes)).collect()
    n = clips[0].num_frames  # 17 = 1 s at 16 fps + 1
    assert film.num_frames == 3 * (n - 1) + 1  # one shared instant per seam: duration = sum of scenes
    assert film.fps == Fraction(16)
    # handoff seam: the next scene's duplicate first frame is dropped, so the film runs a→b with no repeated frame
    assert np.array_equal(film.frames[n - 1], clips[0].frames[-1])
    assert np.array_equal(film.frames[n], clips[1].frames[1])
    # cut seam: a crossfade of 8 frames around the cut, monotonic from scene b to scene c
    cut = 2 * (n - 1)
    window = film.frames[cut - 4 : cut + 4]
    to_c = [_mad(f, clips[2].frames[0]) for f in window]
    assert all(x > y for x, y in zip(to_c, to_c[1:]))
    assert film.meta["seam_frames"] == 8


def test_unknown_engine_and_bad_params_name_the_field(preset):
    bad = preset.stages.interpolated.model_copy(update={"engine": "magic"})
    with pytest.raises(InputError, match=r"stages.interpolated.engine: unknown engine 'magic'; allowed: optical_flow"):
        build_engine("interpolated", bad, preset)
    bad = preset.stages.interpolated.model_copy(update={"factor": 3})
    with pytest.raises(InputError, match=r"stages.interpolated"):
        build_engine("interpolated", bad, preset)


# ---- the preview clip looks like a film: camera inside the photo, short flow transition ----

CAMERAS = ["static", "zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down"]
PHOTOS = ["rocket.jpg", "astronaut.png", "chelsea.png", "coffee.png"]


def _crop_scaled(image: np.ndarray, window) -> np.ndarray:
    """The window of ``image`` scaled to the image size by Pillow (bicubic): an independent
    resampler to compare the engine's frames with."""
    from PIL import Image

    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC, box=tuple(window)))


@pytest.mark.parametrize("camera", CAMERAS)
def test_camera_moves_show_only_the_photo(preset, camera):
    """Every frame is a window inside the photo scaled to the frame: the window never leaves the
    photo, and the frame's edge rows and columns are the photo's own pixels there (a padded or
    mirrored border would differ from the photo at the edges)."""
    from wan_pipeline.engines.camera_motion import camera_window

    strength = preset.stages.clip.model_dump()["motion_strength"]
    for name in PHOTOS:
        first = _keyframe(preset, name)
        clip = _clip(preset, first, camera=camera, duration=1.5)
        h, w = first.shape[:2]
        for i, frame in enumerate(clip.frames):
            x0, y0, x1, y1 = window = camera_window(camera, i / (clip.num_frames - 1), w, h, strength)
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (name, i, window)
            expected = _crop_scaled(first, window)
            inner = (slice(2, -2), slice(2, -2))
            assert _mad(frame[inner], expected[inner]) < 2.0, (name, i)
            edges = [(frame[1], expected[1]), (frame[-2], expected[-2]), (frame[:, 1], expected[:, 1]), (frame[:, -2], expected[:, -2])]
            assert max(_mad(a, b) for a, b in edges) < 4.0, (name, i)


def test_zoom_out_ends_on_the_full_photo(preset):
    first = _keyframe(preset, "chelsea.png")
    clip = _clip(preset, first, camera="zoom_out", duration=2.5)
    n = clip.num_frames
    # starts on the keyframe, is tighter mid-clip, and pulls back to the whole photo (whiskers at
    # the bottom edge included) in the final frames
    dist = [_mad(f, first) for f in clip.frames]
    assert dist[0] == 0.0 and dist[-1] == 0.0 and max(dist) > 5.0
    peak = int(np.argmax(dist))
    assert peak < n // 2  # most of the clip is the zoom-out
    assert all(a >= b - 1e-6 for a, b in zip(dist[peak:], dist[peak + 1 :]))
    assert np.array_equal(clip.frames[-1][-3:], first[-3:])


@pytest.mark.parametrize("handoff_s, expected", [(None, 8), (0.25, 4)])
def test_handoff_is_a_short_flow_transition(preset, handoff_s, expected):
    """A 2.5 s handoff clip at 16 fps: only its last 0.5 s (8 frames; or the preset's
    ``handoff_s``) leave the own camera move; they flow into the next keyframe and end on it."""
    section = preset.stages.clip if handoff_s is None else preset.stages.clip.model_copy(update={"handoff_s": handoff_s})
    engine = build_engine("clip", section, preset)
    first, nxt = _keyframe(preset, "rocket.jpg"), _keyframe(preset, "astronaut.png")

    def render(last):
        return engine.render(
            ClipRequest(
                scene_id="s", prompt="p", negative_prompt="", seed=1, width=preset.width, height=preset.height,
                fps=preset.base_fps, duration_s=2.5, first=first, last=last, camera="pan_right",
            )
        )  # fmt: skip

    own, handoff = render(None), render(nxt)
    n = handoff.num_frames
    assert n == own.num_frames == 41
    assert handoff.meta["transition_frames"] == expected and handoff.meta["transition_s"] == expected / 16
    start = n - 1 - expected
    # no double exposure before the transition: the frames are the camera move alone
    assert all(np.array_equal(handoff.frames[i], own.frames[i]) for i in range(start + 1))
    assert not np.array_equal(handoff.frames[start + 1], own.frames[start + 1])
    assert np.array_equal(handoff.frames[-1], nxt)
    # the transition approaches the next keyframe step by step
    to_next = [_mad(handoff.frames[i], nxt) for i in range(start, n)]
    assert all(a > b for a, b in zip(to_next, to_next[1:]))
    # flow-driven: the middle of the transition is not the plain dissolve of the two pictures
    mid = start + expected // 2
    a = ((mid - start) / expected) ** 2 * (3 - 2 * (mid - start) / expected)
    dissolve = (1 - a) * own.frames[mid].astype(np.float64) + a * nxt
    assert _mad(handoff.frames[mid], dissolve) > 2.0
