"""The Wan engines on the miniature checkpoints: the real diffusers pipelines, on CPU."""

import os
from fractions import Fraction
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"

import cv2
import numpy as np
import pytest

from tests.conftest import IMAGES as PHOTOS
from wan_pipeline.engines.base import ClipRequest, FilmRequest, FilmScene, KeyframeRequest
from wan_pipeline.engines.vace_film import match_colour, plan_seam
from wan_pipeline.engines.wan_clip import WanI2VClip, segment_lengths, wan_frame_count
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import read_image

IMAGES = sorted(PHOTOS.glob("*.png"))


@pytest.fixture(scope="module", autouse=True)
def tiny_models(storage):
    """The miniature Wan checkpoints under the module's storage root (made explicitly: resolving a
    model path never writes weights)."""
    from wan_pipeline.models.tiny import make_tiny_models

    return make_tiny_models(storage / "models" / "tiny")


@pytest.fixture(scope="module")
def photos():
    return read_image(IMAGES[0]), read_image(IMAGES[1])


def preset(**kw):
    return SimpleNamespace(source_path="workflows/test.yaml", width=32, height=32, fps=16, device="cpu", **kw)


def clip_engine(model="wan21-i2v", **params):
    return WanI2VClip(
        {"model": f"models/tiny/{model}", "steps": 2, "min_size": 32, "max_frames": 17, "max_sequence_length": 32, **params}, preset()
    )


def request(photos, duration=0.5, last=True, seed=3, **kw):
    first, nxt = photos
    return ClipRequest(
        scene_id="s1",
        prompt="a cat walks in the city",
        negative_prompt="blurry",
        seed=seed,
        width=32,
        height=32,
        fps=Fraction(16),
        duration_s=duration,
        first=first,
        last=nxt if last else None,
        **kw,
    )


@pytest.fixture(scope="module")
def i2v(storage):
    engine = clip_engine()
    yield engine
    engine.close()


def test_frame_arithmetic():
    assert wan_frame_count(5.0, 16) == 81 and wan_frame_count(0.5, 16) == 9 and wan_frame_count(0.01, 16) == 5
    assert wan_frame_count(5.0, Fraction(24)) == 121
    for total, limit in ((81, 81), (161, 81), (201, 81), (17, 9), (33, 17)):
        lengths = segment_lengths(total, limit)
        assert sum(n - 1 for n in lengths) == total - 1
        assert all(n <= limit and (n - 1) % 4 == 0 for n in lengths)
    assert segment_lengths(161, 81) == [81, 81] and len(segment_lengths(201, 81)) == 3


def test_i2v_flf2v_frames_size_and_meta(i2v, photos):
    steps = []
    clip = i2v.render(request(photos, progress=lambda d, t: steps.append((d, t))))
    assert clip.frames.shape == (9, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == 16
    m = clip.meta
    assert m["flf2v"] is True and m["segments"] == 1 and m["variant"] == "Wan2.1-FLF2V-miniature"
    assert m["memory_strategy"] == "cpu" and m["steps"] == 2 and m["flow_shift"] == 16.0 and m["warnings"] == []
    assert steps == [(1, 2), (2, 2)]
    assert i2v.describe()["variant"] == "Wan2.1-FLF2V-miniature"
    no_last = i2v.render(request(photos, last=False))
    assert no_last.meta["flf2v"] is False and no_last.num_frames == 9


def test_same_seed_same_frames_other_seed_differs(i2v, photos):
    a = i2v.render(request(photos, seed=11)).frames
    b = i2v.render(request(photos, seed=11)).frames
    c = i2v.render(request(photos, seed=12)).frames
    assert np.array_equal(a, b)
    assert (a != c).mean() > 0.05  # the noise differs: a good share of the pixel values change


def test_long_scene_renders_in_segments_with_the_end_frame_on_the_last(storage, photos):
    engine = clip_engine(max_frames=9)
    calls = []
    real = engine._run_pipeline

    def spy(**kwargs):
        out = real(**kwargs)
        calls.append((kwargs, out))
        return out

    engine._run_pipeline = spy
    clip = engine.render(request(photos, duration=1.5))  # 24 frames -> 25 = 3 segments of 9
    assert clip.num_frames == 25 and clip.meta["segments"] == 3 and clip.meta["flf2v"] is True
    assert [c[0]["num_frames"] for c in calls] == [9, 9, 9]
    assert ["last_image" in c[0] for c in calls] == [False, False, True]
    # each segment starts from the previous segment's last frame
    prev_last = np.clip(np.rint(calls[0][1][0, -1] * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(calls[1][0]["image"]), prev_last)
    assert np.array_equal(clip.frames[8], prev_last)
    engine.close()


def test_ti2v_and_two_expert_paths(storage, photos):
    ti2v = clip_engine("wan22-ti2v")
    clip = ti2v.render(request(photos))
    assert clip.frames.shape == (9, 32, 32, 3) and clip.meta["variant"] == "Wan2.2-TI2V-miniature"
    assert clip.meta["flf2v"] is False and any("TI2V" in w for w in clip.meta["warnings"])
    with pytest.raises(InputError, match=r"width: 48 px .* multiples of 32"):
        ti2v.render(request(photos, last=False).__class__(**{**request(photos).__dict__, "width": 48}))
    ti2v.close()
    a14b = clip_engine("wan22-i2v-a14b", guidance_scale_2=2.0)
    clip = a14b.render(request(photos))
    assert clip.meta["variant"] == "Wan2.2-I2V-miniature" and clip.meta["flf2v"] is True
    assert clip.meta["guidance_scale_2"] == 2.0 and clip.num_frames == 9
    a14b.close()


def test_guard_rails(i2v, photos, storage):
    warned = i2v.render(request(photos, guidance_scale=7.0))
    assert warned.meta["guidance_scale"] == 7.0
    assert any("guidance_scale 7 >= 6" in w for w in warned.meta["warnings"])
    with pytest.raises(InputError, match=r"steps.*150.*1\.\.100"):
        i2v.render(request(photos, steps=150))
    with pytest.raises(InputError, match=r"stages\.clip\.steps: 0 steps .*1\.\.100"):
        clip_engine(steps=0)
    with pytest.raises(InputError, match=r"width: 2048 px .*256\.\.1280"):
        WanI2VClip({"model": "models/tiny/wan21-i2v"}, SimpleNamespace(source_path="p.yaml", width=2048, height=704, fps=16, device="cpu"))
    with pytest.raises(InputError, match=r"height: 40 px .*multiples of 16"):
        i2v.render(ClipRequest(**{**request(photos).__dict__, "height": 40}))


def test_keyframe_engine_text_to_image_and_own_image(storage, photos):
    from wan_pipeline.engines.diffusers_keyframe import DiffusersT2IKeyframe

    engine = DiffusersT2IKeyframe({"model": "models/tiny/t2i", "steps": 2, "max_sequence_length": 32}, preset())
    req = KeyframeRequest(scene_id="s1", prompt="a red cat", negative_prompt="", seed=5, width=64, height=48)
    a, b = engine.render(req), engine.render(req)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    own = engine.render(KeyframeRequest(**{**req.__dict__, "image": photos[0]}))
    from wan_pipeline.media.image_io import fit_image

    assert np.array_equal(own, fit_image(photos[0], 64, 48))
    engine.close()


class _Blend2x:
    """Test interpolator: one linear blend between neighbours (factor 2, (n-1)*2+1 frames)."""

    name = "blend2x"

    def describe(self):
        return {"engine": self.name}

    def interpolate(self, clip):
        f = clip.frames.astype(np.float32)
        mids = (f[:-1] + f[1:]) / 2
        out = np.empty((2 * len(f) - 1, *f.shape[1:]), np.float32)
        out[0::2], out[1::2] = f, mids
        return Clip(np.rint(out).astype(np.uint8), fps=clip.fps * 2, meta={"interp_factor": 2})


class _Resize2x:
    name = "resize2x"

    def describe(self):
        return {"engine": self.name}

    def upscale(self, clip):
        return Clip(
            np.stack([cv2.resize(f, (f.shape[1] * 2, f.shape[0] * 2), interpolation=cv2.INTER_LANCZOS4) for f in clip.frames]), fps=clip.fps
        )


def test_seam_planning_and_colour_matching():
    for n_left, n_right, handoff in ((17, 17, True), (17, 17, False), (9, 33, True), (81, 81, False)):
        a, b, c = plan_seam(n_left, n_right, handoff, 8, 8)
        assert (2 * c + a + b - 1) % 4 == 0 and a <= (n_left - 1) // 2 and b <= (n_right - 1) // 2
    assert plan_seam(2, 2, True, 8, 8) is None
    rng = np.random.default_rng(0)
    left = rng.integers(100, 140, (4, 8, 8, 3)).astype(np.uint8)
    right = rng.integers(20, 60, (4, 8, 8, 3)).astype(np.uint8)
    seam = rng.integers(200, 255, (3, 8, 8, 3)).astype(np.uint8)
    out = match_colour(seam, left, right).reshape(3, -1, 3)
    lm, rm = left.reshape(-1, 3).mean(0), right.reshape(-1, 3).mean(0)
    for t, w in enumerate((0.25, 0.5, 0.75)):  # moves from the left context's colour to the right's
        assert np.allclose(out[t].mean(0), (1 - w) * lm + w * rm, atol=1.0)
        assert np.allclose(out[t].std(0), ((1 - w) * left.reshape(-1, 3).std(0) + w * right.reshape(-1, 3).std(0)), atol=1.0)


def test_vace_film_keeps_frame_count_and_only_changes_the_seams(storage):
    from wan_pipeline.engines.vace_film import WanVaceFilm

    rng = np.random.default_rng(1)
    interp, up = _Blend2x(), _Resize2x()
    scenes = []
    for i, (colour, transition) in enumerate((((200, 60, 60), "handoff"), ((60, 200, 60), "cut"), ((60, 60, 200), "cut"))):
        base = np.clip(np.array(colour) + rng.integers(-20, 20, (17, 32, 32, 3)), 0, 255).astype(np.uint8)
        native = Clip(base, fps=16)
        scenes.append(FilmScene(f"s{i}", up.upscale(interp.interpolate(native)), native, transition, "a cat"))
    engine = WanVaceFilm(
        {"model": "models/tiny/wan21-vace", "steps": 2, "seam_frames": 4, "context_frames": 4, "max_sequence_length": 32}, preset()
    )
    film = engine.join(FilmRequest(scenes, interp, up, seed=1)).collect()
    # the plain concatenation (no crossfade): same frame count, i.e. the same duration
    from wan_pipeline.engines.concat_film import ConcatFilm

    plain = ConcatFilm({"crossfade_frames": 0}, preset()).join(FilmRequest(scenes)).collect().frames
    assert len(plain) == 33 + 31 + 33  # handoff drops s1's first frame, the cut s1's last
    assert film.frames.shape == plain.shape and film.fps == 32
    assert film.meta["seams"] == 2 and film.meta["seam_frames"] == 4 and film.meta["variant"] == "Wan2.1-VACE-miniature"
    changed = np.flatnonzero(np.abs(film.frames.astype(int) - plain).reshape(len(plain), -1).max(1) > 0)
    boundaries = (33, 33 + 31)  # upscaled index where scene 1 and scene 2 begin in the plain film
    assert len(changed) > 0
    assert all(min(abs(j - b) for b in boundaries) <= 8 for j in changed), changed
    # the seam keeps the neighbours' colours (no shift to VACE's own palette)
    for plan, b in zip(film.meta["seam_plan"], boundaries):
        seam = film.frames[b - plan["left_frames"] * 2 : b + plan["right_frames"] * 2].reshape(-1, 3).mean(0)
        ctx = np.concatenate([plain[b - 16 : b - 8], plain[b + 8 : b + 16]]).reshape(-1, 3).mean(0)
        assert np.abs(seam - ctx).max() < 25
    engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_with_model_cpu_offload(storage, photos):
    engine = WanI2VClip(
        {"model": "models/tiny/wan21-i2v", "steps": 2, "min_size": 32, "dtype": "bfloat16", "memory_strategy": "model_cpu_offload"},
        SimpleNamespace(source_path="t.yaml", width=64, height=64, fps=16, device="cuda"),
    )
    clip = engine.render(request(photos))
    assert clip.meta["memory_strategy"] == "model_cpu_offload" and clip.frames.shape == (9, 32, 32, 3)
    again = engine.render(request(photos))
    assert np.array_equal(clip.frames, again.frames)
    engine.close()
