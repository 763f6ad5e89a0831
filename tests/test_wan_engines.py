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


def _record_transformer_inputs(engine, key):
    """Record ``key`` ('mask': the I2V condition mask channels, 'timestep') of every transformer
    call, grouped by pipeline call (segment)."""
    seen: list[list] = []
    real = engine._run_pipeline

    def spy(**kwargs):
        seen.append([])
        return real(**kwargs)

    def hook(module, args, kwargs):
        if key == "mask":
            z = engine.pipe.vae.config.z_dim
            seen[-1].append(kwargs["hidden_states"][0, z : z + 4, :, 0, 0].clone())
        else:
            seen[-1].append(kwargs["timestep"].clone())

    engine._run_pipeline = spy
    for t in (engine.pipe.transformer, getattr(engine.pipe, "transformer_2", None)):
        if t is not None:
            t.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_long_scene_continues_from_several_frames_with_the_end_frame_on_the_last(storage, photos):
    import torch

    engine = clip_engine("wan22-i2v-a14b", max_frames=9)
    seen = _record_transformer_inputs(engine, "mask")
    clip = engine.render(request(photos, duration=1.5))  # 24 frames -> 25: 9 + 4 x (9 - 5 overlap)
    assert clip.num_frames == 25 and clip.meta["segments"] == 5 and clip.meta["segment_frames"] == [9] * 5
    assert clip.meta["flf2v"] is True and clip.meta["overlap_frames"] == 5
    # condition mask per latent frame (4 flags each; 9 frames = 3 latent frames)
    first, middle, final = (
        torch.tensor(m, dtype=torch.float32)
        for m in (
            [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]],  # the keyframe only
            [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]],  # the previous segment's last 5 frames
            [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]],  # ... and the handoff end frame
        )
    )
    expected = [first, middle, middle, middle, final]
    for segment, masks in zip(expected, seen):
        assert masks and all(torch.equal(m.T.float(), segment) for m in masks)
    assert isinstance(clip.meta["segment_colour_shift"], float)
    engine.close()
    flf2v = clip_engine(max_frames=9)
    with pytest.raises(
        InputError,
        match=r"scene 's1': 25 frames need 5 segments .* only between a real first and last frame; set stages\.clip\.extension_model",
    ):
        flf2v.render(request(photos, duration=1.5))
    assert flf2v._pipe is None  # refused from the configs, before the FLF2V weights were loaded
    flf2v.close()


def test_long_flf2v_scene_continues_through_the_vace_extension_model(storage, photos):
    """Every segment of a long scene with an FLF2V model comes from the VACE extension model:
    the keyframe given as frame 0 of the first, the previous segment's last 5 frames at the start
    of each later one, the handoff end frame as the last frame of the final one."""
    from wan_pipeline.media.image_io import fit_image

    engine = clip_engine(max_frames=9, extension_model="models/tiny/wan21-vace")
    short = engine.render(request(photos))  # one generation: the FLF2V model itself
    assert short.meta["continuation"] is None and short.meta["extension_model"] is None and engine._pipe is not None
    calls = []
    real = engine._run_pipeline
    engine._run_pipeline = lambda **kw: calls.append(kw) or real(**kw)
    clip = engine.render(request(photos, duration=1.5))
    assert engine._pipe is None and engine._extension._pipe is not None  # one pipeline loaded at a time
    assert clip.num_frames == wan_frame_count(1.5, 16) == 25 and clip.frames.shape == (25, 32, 32, 3)
    m = clip.meta
    assert m["segments"] == 5 and m["segment_frames"] == [9] * 5 and m["overlap_frames"] == 5
    assert m["continuation"] == "vace_extension" and m["extension_model"] == "models/tiny/wan21-vace"
    assert m["extension_variant"] == "Wan2.1-VACE-miniature" and m["variant"] == "Wan2.1-FLF2V-miniature" and m["flf2v"] is True
    from assets.checks import DEFAULT_THRESHOLDS

    assert isinstance(m["segment_colour_shift"], float) and 0 <= m["segment_colour_shift"] <= DEFAULT_THRESHOLDS["segment_colour_shift_max"]
    assert len(calls) == 5 and all("video" in kw and "image" not in kw and kw["num_frames"] == 9 for kw in calls)
    masks = [[int(np.asarray(x).max()) for x in kw["mask"]] for kw in calls]
    G, N = 0, 255  # given, generated
    assert masks[0] == [G] + [N] * 8  # the keyframe as frame 0
    assert all(mk == [G] * 5 + [N] * 4 for mk in masks[1:4])  # the previous segment's last 5 frames
    assert masks[4] == [G] * 5 + [N] * 3 + [G]  # ... and the handoff end frame last
    video = [np.stack([np.asarray(f) for f in kw["video"]]) for kw in calls]
    first, last = (fit_image(p, 32, 32) for p in photos)
    assert np.array_equal(video[0][0], first) and np.array_equal(video[4][-1], last)
    assert (video[0][1:] == 127).all() and (video[4][5:8] == 127).all()  # grey placeholders where frames are made
    # the given overlap is the previous segment's end exactly as it stands in the output clip
    starts = [0, 4, 8, 12, 16]  # segment i covers output frames starts[i] .. starts[i] + 8
    for i in range(1, 5):
        assert np.array_equal(video[i][:5], clip.frames[starts[i] : starts[i] + 5]), i
    engine.close()
    assert engine._pipe is None and engine._extension._pipe is None


def test_a_missing_or_wrong_extension_model_is_refused_before_rendering(storage, photos):
    wrong = clip_engine(max_frames=9, extension_model="models/tiny/t2i")
    with pytest.raises(InputError, match=r"stages\.clip\.extension_model: .*t2i is a Wan2\.1-T2V-miniature checkpoint, not a Wan VACE one"):
        wrong.render(request(photos, duration=1.5))
    assert wrong._pipe is None and wrong._extension._pipe is None  # nothing was loaded
    wrong.close()
    missing = clip_engine(max_frames=9, extension_model="models/nowhere/vace")
    with pytest.raises(InputError, match=r"stages\.clip\.extension_model: .*models/nowhere/vace"):
        missing.render(request(photos, duration=1.5))
    # a single file is looked for like the film stage's model (tests/test_single_file.py loads one)
    with pytest.raises(InputError, match=r"stages\.clip\.extension_model: model: models/vace\.safetensors not found; looked at "):
        clip_engine(extension_model="models/vace.safetensors")
    with pytest.raises(InputError, match=r"stages\.clip\.extension_loras\[0\]\.path: 'distill\.bin' is no \.safetensors file"):
        clip_engine(extension_model="models/tiny/wan21-vace", extension_loras=[{"path": "distill.bin"}])


def test_ti2v_long_scene_keeps_the_overlap_latents_fixed(storage, photos):
    engine = clip_engine("wan22-ti2v", max_frames=9)
    seen = _record_transformer_inputs(engine, "timestep")
    clip = engine.render(request(photos, duration=1.5, last=False))
    assert clip.num_frames == 25 and clip.meta["segments"] == 5
    # one token per latent frame at 32x32; timestep 0 marks a given (not denoised) latent frame
    for i, steps in enumerate(seen):
        given = [(t[0] == 0).tolist() for t in steps]
        assert all(g == ([True, False, False] if i == 0 else [True, True, False]) for g in given), (i, given)
    engine.close()


def test_colour_matching_lowers_the_colour_shift_between_segments(storage, photos):
    shifts = {}
    for match in (True, False):
        engine = clip_engine("wan22-i2v-a14b", max_frames=9, colour_match=match)
        shifts[match] = engine.render(request(photos, duration=1.5, last=False)).meta["segment_colour_shift"]
        engine.close()
    assert shifts[True] < shifts[False]


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


def test_bf16_stage_keeps_vae_and_image_encoder_in_float32(storage, photos):
    """``dtype: bfloat16``: the denoiser and text encoder in bf16, the VAE and CLIP image encoder
    in float32 (diffusers Wan examples), recorded as ``component_dtypes``; on CPU too."""
    engine = clip_engine(dtype="bfloat16")
    clip = engine.render(request(photos, duration=1.0))  # fp32 decode of bf16 latents
    expected = {"transformer": "bfloat16", "text_encoder": "bfloat16", "vae": "float32", "image_encoder": "float32"}
    assert clip.meta["component_dtypes"] == expected
    assert engine.describe()["component_dtypes"] == expected
    assert clip.frames.shape == (17, 32, 32, 3) and clip.frames.std() > 1.0
    engine.close()
    from wan_pipeline.engines.vace_film import WanVaceFilm

    vace = WanVaceFilm(
        {
            "model": "models/tiny/wan21-vace",
            "steps": 1,
            "max_sequence_length": 32,
            "dtype": "bfloat16",
            "seam_frames": 4,
            "context_frames": 4,
        },
        preset(),
    )
    native = [Clip(np.full((17, 32, 32, 3), c, np.uint8), fps=16) for c in (60, 180)]
    film = vace.join(FilmRequest([FilmScene(f"s{i}", n, n, "handoff", "a cat") for i, n in enumerate(native)], seed=1))
    assert film.num_frames == 33 and film.meta["seams"] == 1  # a VACE seam through the fp32 VAE and bf16 transformer
    assert vace.describe()["component_dtypes"] == {"transformer": "bfloat16", "text_encoder": "bfloat16", "vae": "float32"}
    vace.close()


def test_auto_dtype_and_group_offload_streams_on_cuda(monkeypatch):
    """``dtype: auto`` is bf16 on a CUDA GPU with bf16, float16 with a note only without it;
    group offload prefetches on a CUDA stream (``use_stream=True``)."""
    import torch

    from wan_pipeline.engines.diffusers_support import ModelParams, apply_memory_strategy, model_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert model_dtype("auto", "cuda:0") == (torch.bfloat16, None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    dtype, note = model_dtype("auto", "cuda:0")
    assert dtype == torch.float16 and "no native bfloat16" in note
    assert model_dtype("auto", "cpu") == (torch.float32, None) and model_dtype("float16", "cuda:0") == (torch.float16, None)

    seen = {}
    fake = SimpleNamespace(vae=None, enable_group_offload=lambda **kw: seen.update(kw))
    assert apply_memory_strategy(fake, "cuda:0", ModelParams(model="x/y", memory_strategy="group_offload")) == "group_offload"
    assert seen["use_stream"] is True and seen["offload_type"] == "block_level"


def test_keyframe_pipeline_from_the_detected_variant(storage, tmp_path, monkeypatch):
    """The keyframe pipeline follows the checkpoint's configs, not its name: a Wan T2V checkpoint
    cached under a repo id without "wan" in it renders; a VACE checkpoint is refused by name."""
    import shutil

    import huggingface_hub.constants as hf_constants

    from wan_pipeline.engines.diffusers_keyframe import DiffusersT2IKeyframe

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "models--acme--storyboard-painter"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    shutil.copytree(storage / "models" / "tiny" / "t2i", repo_dir / "snapshots" / commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    engine = DiffusersT2IKeyframe({"model": "acme/storyboard-painter", "steps": 1, "max_sequence_length": 32}, preset())
    frame = engine.render(KeyframeRequest(scene_id="s1", prompt="a red cat", negative_prompt="", seed=5, width=64, height=48))
    assert frame.shape == (48, 64, 3) and type(engine.pipe).__name__ == "WanPipeline"
    engine.close()
    vace = DiffusersT2IKeyframe({"model": "models/tiny/wan21-vace", "steps": 1}, preset())
    with pytest.raises(InputError, match=r"keyframe\.model: models/tiny/wan21-vace is Wan2.1-VACE-miniature, which cannot make an image"):
        vace.render(KeyframeRequest(scene_id="s1", prompt="a red cat", negative_prompt="", seed=5, width=64, height=48))


def test_keyframe_generated_at_the_models_native_size_then_fitted(storage):
    from wan_pipeline.engines.diffusers_keyframe import DiffusersT2IKeyframe

    engine = DiffusersT2IKeyframe({"model": "models/tiny/t2i", "steps": 1, "size_multiple": 32}, preset())
    engine._native_sizes = [(1280, 704), (704, 1280)]  # TI2V-5B's sizes (model card)
    assert engine.generation_size(1280, 720) == (1280, 704)
    assert engine.generation_size(720, 1280) == (704, 1280)
    engine._native_sizes = [(832, 480), (480, 832)]  # a 480P-only model asked for a 1080p keyframe
    assert engine.generation_size(1920, 1080) == (832, 480)
    engine._native_sizes = []  # miniature: no native sizes, the requested size rounded up
    assert engine.generation_size(100, 60) == (128, 64)


def test_scene_guidance_reaches_the_low_noise_expert(storage, photos):
    from wan_pipeline.engines.wan_clip import expert_guidance

    a14b = clip_engine("wan22-i2v-a14b", guidance_scale=3.5, guidance_scale_2=3.5)
    seen = []
    real = a14b._run_pipeline
    a14b._run_pipeline = lambda **kw: seen.append(kw) or real(**kw)
    clip = a14b.render(request(photos, guidance_scale=2.0))
    assert seen[-1]["guidance_scale"] == 2.0 and seen[-1]["guidance_scale_2"] == 2.0
    assert clip.meta["guidance_scale_2"] == 2.0
    a14b.render(request(photos))
    assert seen[-1]["guidance_scale_2"] == 3.5
    a14b.close()
    assert expert_guidance(3.0, 4.0, 6.0) == 8.0 and expert_guidance(3.0, None, None) == 3.0 and expert_guidance(3.0, 4.0, None) == 4.0


def test_model_that_does_not_fit_host_ram_is_refused_before_loading(storage, photos, monkeypatch):
    import psutil
    from diffusers import WanImageToVideoPipeline

    class Mem:
        available = 2 * 2**20  # 2 MiB: not even the miniature plus the process fits

    loads = []
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem)
    monkeypatch.setattr(WanImageToVideoPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a)))
    engine = clip_engine()
    with pytest.raises(InputError, match=r"(?s)workflows/test.yaml.*host RAM: ~\d+ MiB needed.*2 MiB available"):
        engine.render(request(photos))
    assert loads == []


def test_group_offload_to_disk_loads_one_component_at_a_time(storage, photos, tmp_path):
    """The disk-offload loader on CPU (the code path a 64 GB machine takes for A14B on CUDA):
    every weighted component's groups are written to disk, and the pipeline renders the same
    frames as one loaded normally."""
    import torch
    from diffusers import WanImageToVideoPipeline

    from wan_pipeline.engines.diffusers_support import component_dtype_map, release_pipeline
    from wan_pipeline.engines.disk_offload import load_components_to_disk, offload_folder
    from wan_pipeline.models import read_checkpoint
    from wan_pipeline.models.tiny import make_tiny_models

    source = make_tiny_models(storage / "models" / "tiny", names=("wan21-i2v",))["wan21-i2v"]
    folder = offload_folder(1.0, tmp_path / "offload")
    modules = load_components_to_disk(read_checkpoint(source), component_dtype_map(torch.float32), "cpu", folder)
    assert set(modules) == {"transformer", "text_encoder", "vae", "image_encoder"}
    assert all(list((folder / name).glob("*.safetensors")) for name in modules)
    pipe = WanImageToVideoPipeline.from_pretrained(str(source), **modules)
    pipe.offload_folder = folder
    reference = WanImageToVideoPipeline.from_pretrained(str(source))
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(photos[0][:32, :32]))
    kwargs = dict(
        image=image,
        last_image=image,
        prompt="a cat",
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=2,
        output_type="np",
        max_sequence_length=32,
    )
    a = pipe(**kwargs, generator=torch.Generator().manual_seed(1)).frames
    b = reference(**kwargs, generator=torch.Generator().manual_seed(1)).frames
    assert np.abs(a - b).max() < 1e-5
    release_pipeline(pipe)
    assert not folder.exists()
    with pytest.raises(InputError, match=r"group offload to disk needs ~\d+ MiB free here"):
        offload_folder(1e12, tmp_path / "offload")


def test_fp8_storage_is_applied_before_the_weights_go_to_disk(storage, photos, tmp_path):
    """``weights.storage_dtype`` on the disk-offload path: the experts are cast before their groups
    are written (fp8 tensors in the offload files), the speed levers keep that storage, the frames
    stay close to a normal load; preset LoRAs and torchao, which cannot change weights already on
    disk, are named as refused."""
    import torch
    from diffusers import WanImageToVideoPipeline
    from PIL import Image
    from safetensors import safe_open

    from wan_pipeline.engines.diffusers_support import ModelParams, component_dtype_map, disk_offload_problems, release_pipeline
    from wan_pipeline.engines.disk_offload import load_components_to_disk, offload_folder
    from wan_pipeline.engines.levers import LeverParams, apply_levers, layerwise_storage
    from wan_pipeline.models import read_checkpoint
    from wan_pipeline.models.tiny import make_tiny_models

    source = make_tiny_models(storage / "models" / "tiny", names=("wan21-i2v",))["wan21-i2v"]
    folder = offload_folder(1.0, tmp_path / "offload")
    dtypes = component_dtype_map(torch.float32)
    modules = load_components_to_disk(read_checkpoint(source), dtypes, "cpu", folder, storage_dtype="float8_e4m3fn")
    assert layerwise_storage(modules["transformer"]) == "float8_e4m3fn" and layerwise_storage(modules["vae"]) is None
    stored = set()
    for path in (folder / "transformer").glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            stored |= {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert "F8_E4M3" in stored
    pipe = WanImageToVideoPipeline.from_pretrained(str(source), **modules)
    pipe.offload_folder = folder
    state = apply_levers(pipe, LeverParams.model_validate({"weights": {"storage_dtype": "float8_e4m3fn"}}), "clip", None)
    assert state.storage_dtype == "float8_e4m3fn"
    reference = WanImageToVideoPipeline.from_pretrained(str(source))
    image = Image.fromarray(np.ascontiguousarray(photos[0][:32, :32]))
    kwargs = dict(image=image, last_image=image, prompt="a cat", height=32, width=32, num_frames=5, num_inference_steps=2)
    kwargs.update(output_type="np", max_sequence_length=32)
    a = pipe(**kwargs, generator=torch.Generator().manual_seed(1)).frames
    b = reference(**kwargs, generator=torch.Generator().manual_seed(1)).frames
    assert 0 < np.abs(a - b).max() < 0.05  # fp8 rounding of the transformer's weights, nothing else
    release_pipeline(pipe)
    problems = disk_offload_problems(
        ModelParams.model_validate({"model": "m", "loras": [{"path": "d.safetensors"}], "weights": {"quantization": "int8_weight_only"}})
    )
    assert any(p.startswith("loras: preset LoRAs cannot be fused") for p in problems)
    assert any(p.startswith("weights.quantization: torchao cannot quantize") for p in problems)
    assert disk_offload_problems(ModelParams.model_validate({"model": "m", "weights": {"storage_dtype": "float8_e4m3fn"}})) == []
