"""Streaming stages (issue 10): the streamed engines give the frames the whole-clip computation
gives, hold only a window of frames, and refuse absurd sizes before allocating anything."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from wan_pipeline.engines.base import ClipRequest, FilmRequest, FilmScene
from wan_pipeline.engines.camera_motion import CameraMotionClip
from wan_pipeline.engines.concat_film import ConcatFilm, crossfade
from wan_pipeline.engines.frame_timing import plan_interpolation
from wan_pipeline.engines.interpolation import interpolate_clip
from wan_pipeline.engines.lanczos import LanczosUpscaler
from wan_pipeline.engines.optical_flow import FlowInterpolator
from wan_pipeline.engines.scene_cuts import detect_cuts
from wan_pipeline.errors import InputError
from wan_pipeline.media import Clip, fit_image, read_image, read_video
from wan_pipeline.media import stream as stream_mod
from wan_pipeline.media.stream import FrameStream
from wan_pipeline.media.video_io import VideoWriter, open_video

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "stories" / "images"


def _camera_clip(name: str, nxt: str | None, camera: str, seconds: float = 1.0, size=(96, 64)) -> Clip:
    w, h = size
    first = fit_image(read_image(IMAGES / name), w, h)
    last = fit_image(read_image(IMAGES / nxt), w, h) if nxt else None
    return CameraMotionClip({}, None).render(ClipRequest("s", "", "", 1, w, h, Fraction(16), seconds, first, last, camera=camera))


class Counted:
    """A stream over ``frames`` that counts the frames pulled from it."""

    def __init__(self, frames: np.ndarray, fps=16):
        self.frames, self.pulled = frames, 0
        self.stream = FrameStream(self._source, len(frames), fps, frames.shape[2], frames.shape[1])

    def _source(self):
        for frame in self.frames:
            self.pulled += 1
            yield frame


def _two_shots() -> np.ndarray:
    """A zoom over the rocket photo, then (a hard cut) a pan over the astronaut."""
    return np.concatenate([_camera_clip("rocket.jpg", None, "zoom_in").frames, _camera_clip("astronaut.png", None, "pan_right").frames])


def test_streamed_interpolation_equals_whole_clip_reference_and_holds_a_window():
    frames = _two_shots()
    engine = FlowInterpolator({"factor": 2}, None)
    src = Counted(frames)
    out = engine.interpolate(src.stream)
    assert isinstance(out, FrameStream) and out.num_frames == 2 * (len(frames) - 1) + 1 and out.fps == 32
    got, lag = [], 0
    for i, frame in enumerate(out):
        got.append(frame)
        lag = max(lag, src.pulled - i // 2)  # input frames decoded ahead of the output
    assert lag <= 8 + 2, f"the interpolator read {lag} frames ahead: it does not stream"
    # the reference: cuts over the whole clip, the plan, every synthesised frame from the engine's own flow maths
    cuts = detect_cuts(frames)
    assert cuts == {len(frames) // 2 - 1}
    plan = plan_interpolation(len(frames), 16, factor=2, cut_pairs=cuts)
    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]].astype(np.float32)
    grid = np.dstack([xs, ys])
    for i, (s, copy) in enumerate(zip(plan.sources, plan.copies)):
        if copy is not None:
            want = frames[copy]
        else:
            f01, f10 = engine.flows(frames[s.index], frames[s.index + 1])
            want = engine.synthesise(frames[s.index], frames[s.index + 1], f01, f10, float(s.t), grid)
        assert np.array_equal(got[i], want), f"output frame {i} differs"
    assert out.meta["scene_cuts"] == 1 and out.meta["duplicated_frames"] == plan.duplicated_frames
    assert out.meta["synthesised_frames"] == len(plan.synthesis)


def test_streamed_upscale_equals_per_frame_lanczos():
    frames = _camera_clip("coffee.png", None, "pan_left").frames
    src = Counted(frames)
    out = LanczosUpscaler({"factor": 2}, None).upscale(src.stream)
    for i, frame in enumerate(out):
        assert src.pulled == i + 1  # one frame in, one frame out
        assert np.array_equal(frame, cv2.resize(frames[i], (192, 128), interpolation=cv2.INTER_LANCZOS4))


def _reference_concat(parts: list[np.ndarray], transitions: list[str], crossfade_frames: int) -> np.ndarray:
    """The whole-film concatenation in memory (the code the stream replaced)."""
    out, edge = [], None
    for i, frames in enumerate(parts):
        if i > 0 and transitions[i - 1] == "handoff":
            frames = frames[1:]
        carry = None
        if i < len(parts) - 1 and transitions[i] == "cut":
            carry, frames = frames[-1], frames[:-1]
        if i > 0 and transitions[i - 1] == "cut" and crossfade_frames:
            prev = out[-1]
            m = min(crossfade_frames // 2, len(prev), len(frames))
            if m:
                mixed = crossfade(prev[-m:], frames[:m], edge, frames[0])
                out[-1] = np.concatenate([prev[:-m], mixed[:m]])
                frames = np.concatenate([mixed[m:], frames[m:]])
        out.append(frames)
        edge = carry
    return np.concatenate(out)


@pytest.mark.parametrize("crossfade_frames", [0, 8, 40])
def test_streamed_film_equals_in_memory_concatenation(crossfade_frames):
    clips = [
        _camera_clip("rocket.jpg", "astronaut.png", "zoom_in"),
        _camera_clip("astronaut.png", None, "pan_right", seconds=0.25),  # 5 frames: shorter than the dissolve
        _camera_clip("chelsea.png", None, "zoom_out"),
        _camera_clip("coffee.png", None, "pan_left"),
    ]
    transitions = ["handoff", "cut", "cut", "handoff"]
    counted = [Counted(c.frames) for c in clips]
    scenes = [FilmScene(f"s{i}", c.stream, c.stream, t) for i, (c, t) in enumerate(zip(counted, transitions))]
    film = ConcatFilm({"crossfade_frames": crossfade_frames}, None).join(FilmRequest(scenes))
    want = _reference_concat([c.frames for c in clips], transitions, crossfade_frames)
    assert film.num_frames == len(want)
    pulled_ahead = 0
    for i, frame in enumerate(film):
        assert np.array_equal(frame, want[i]), f"film frame {i} differs"
        pulled_ahead = max(pulled_ahead, sum(c.pulled for c in counted) - i)
    dropped = 4  # the repeated first frame after each handoff, the last frame before each cut
    assert pulled_ahead <= 2 * (crossfade_frames // 2) + 1 + dropped, "the film holds more than the dissolve window"


def test_video_writer_streams_chunks_bit_exactly_and_atomically(tmp_path):
    frames = _camera_clip("rocket.jpg", None, "zoom_in").frames
    target = tmp_path / "v.mp4"
    with VideoWriter(target, width=96, height=64, fps=Fraction(24000, 1001)) as writer:
        writer.write(frames[:5])  # a batch
        for frame in frames[5:]:
            writer.write(frame)  # single frames
    assert writer.info.frames == len(frames) and writer.info.fps == Fraction(24000, 1001)
    back = open_video(target)
    assert back.num_frames == len(frames) and np.array_equal(back.collect().frames, frames)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(target, width=96, height=64, fps=16) as writer:
            writer.write(frames[:3])
            raise RuntimeError("boom")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary file left behind
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(tmp_path / "w.mp4", width=96, height=64, fps=16) as writer:
            writer.write(frames[0][:32])


def test_a_stream_that_breaks_its_frame_count_fails():
    frames = _camera_clip("rocket.jpg", None, "zoom_in").frames
    short = FrameStream(lambda: iter(frames[:-1]), len(frames), 16, 96, 64)
    with pytest.raises(Exception, match="yielded 16"):
        list(short)


def test_absurd_sizes_are_refused_before_allocating(tmp_path, monkeypatch):
    from wan_pipeline.postprocess import upscale_file

    src = tmp_path / "in.mp4"
    with VideoWriter(src, width=96, height=64, fps=16) as writer:
        writer.write(_camera_clip("rocket.jpg", None, "zoom_in").frames)
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path / "storage"))
    with pytest.raises(InputError, match=r"upscale --height 10000000: give 16 to 8192"):
        upscale_file(src, tmp_path / "out.mp4", height=10_000_000, preset="preview")
    with pytest.raises(InputError, match=r"stages\.upscaled\.height: output 14222x8000 exceeds 8192"):
        LanczosUpscaler({"height": 8000}, None).upscale(FrameStream(lambda: iter(()), 10**6, 16, 1280, 720))
    assert not (tmp_path / "out.mp4").exists()
    # the window budget: a batch of frames that would not fit is refused, naming the option
    monkeypatch.setattr(stream_mod, "WINDOW_BUDGET_MIB", 1)
    clip = Clip(np.zeros((3, 480, 640, 3), np.uint8), 16)
    with pytest.raises(InputError, match=r"stages\.interpolated\.batch_size.*window budget"):
        interpolate_clip(clip, lambda jobs, frames: None, factor=2, batch_size=8)


def test_streamed_render_of_the_demo_story_matches_the_in_memory_engines(tmp_path, monkeypatch):
    """Every stage's work function over the (small) demo story, then each scene output against the
    engines run on whole clips in memory from the previous stage's file: frame for frame."""
    from tests.small_story import make_small_project
    from wan_pipeline.engines.registry import build_engine
    from wan_pipeline.run_config import RunConfig
    from wan_pipeline.stage_work import StageJob
    from wan_pipeline.stages import STAGES
    from wan_pipeline.storage import StorageLayout
    from wan_pipeline.story import load_story

    for key, value in make_small_project(tmp_path, duration_s=1.0).items():
        monkeypatch.setenv(key, value)
    story = load_story(tmp_path / "stories" / "launch_day.yaml")
    config = RunConfig.resolve(story, "preview", StorageLayout.default())
    ctx = config.engine_context()
    engines = {name: build_engine(name, config.preset.stage(name), ctx) for name in STAGES.names()}

    class Run:
        def __init__(self, engine):
            self.engine, self.meta, self.output, self.preview = engine, {}, None, None

        def step(self, done, total):
            return None

    previews = {}
    for row in STAGES:
        for scene in story.scene_ids if row.per_scene else [None]:
            run = Run(engines[row.name])
            row.work_fn(StageJob(config, row, scene, engine_of=lambda name, device=None: engines[name]), run)
            previews[(row.name, scene)] = run.preview
    out = lambda stage, sid=None: config.output(stage, sid)  # noqa: E731
    for s in story.scenes:
        nxt = story.handoff_target(s.id)
        clip = engines["clip"].render(
            ClipRequest(
                s.id,
                s.prompt,
                "",
                0,
                128,
                80,
                Fraction(16),
                s.duration_s,
                read_image(out("keyframe", s.id)),
                read_image(out("keyframe", nxt.id)) if nxt else None,
                camera=s.camera,
            )
        )
        assert np.array_equal(read_video(out("clip", s.id)).frames, clip.frames)
        interpolated = engines["interpolated"].interpolate(read_video(out("clip", s.id)))
        assert np.array_equal(read_video(out("interpolated", s.id)).frames, interpolated.frames)
        upscaled = engines["upscaled"].upscale(interpolated)
        assert np.array_equal(read_video(out("upscaled", s.id)).frames, upscaled.frames)
        assert len(previews[("upscaled", s.id)]) == 6  # the preview holds a sample, not the video
    film = open_video(out("film"))
    assert film.num_frames == round(sum(s.duration_s for s in story.scenes) * 32) + 1 and film.fps == 32  # both ends included


def test_disk_estimate_follows_the_stage_sizes():
    """The per-minute estimate: each stage's pixels per second times the measured bytes per pixel."""
    from wan_pipeline.disk_estimate import LOSSLESS_BYTES_PER_PIXEL, disk_per_minute, stage_formats
    from wan_pipeline.preset import load_preset

    formats = stage_formats(load_preset("wan22-ti2v-5b"))
    assert formats["clip"] == (1280, 704, 24) and formats["interpolated"] == (1280, 704, 48)
    assert formats["upscaled"] == (2560, 1408, 48)  # RealESRGAN_x2plus: x2 from the file name
    disk = disk_per_minute(load_preset("preview"))
    assert disk["upscaled"] == pytest.approx(832 * 480 * 32 * 60 * LOSSLESS_BYTES_PER_PIXEL / 1e6, abs=0.1)
    assert disk["film"] < disk["clip"] < disk["interpolated"] < disk["upscaled"]


def test_streamed_write_fills_the_animated_preview_from_a_bounded_sample_over_every_scene(tmp_path):
    """While a long film streams into its file, the animated preview keeps at most its own
    ANIM_MAX_FRAMES small frames, spread over every scene, equal to the preview of the whole video
    in memory; the contact sheet keeps 6 frames."""
    from wan_pipeline.previews import ANIM_MAX_FRAMES, animated_preview, animation_for, write_sampled

    rng = np.random.default_rng(3)
    lengths = [3.0, 1.0, 6.0]  # seconds per scene at 16 fps
    frames = np.concatenate([np.full((int(s * 16), 48, 64, 3), rng.integers(0, 255, 3), np.uint8) for s in lengths])
    frames[:, :8] = rng.integers(0, 255, (len(frames), 8, 64, 3), dtype=np.uint8)
    stream = FrameStream(lambda: iter(frames), len(frames), Fraction(16), 64, 48)
    animation = animation_for(stream, lengths)
    info, sheet = write_sampled(tmp_path / "film.mp4", stream, animation=animation)
    assert info.frames == len(frames) == 160 and len(sheet) == 6
    assert len(animation.kept) == ANIM_MAX_FRAMES == len(animation.wanted) and animation.done
    edges = np.cumsum([0] + [s * 16 for s in lengths])
    assert all(any(a <= i < b for i in animation.wanted) for a, b in zip(edges, edges[1:]))  # every scene shown
    whole = animated_preview(iter(frames), len(frames), Fraction(16), scene_lengths=lengths)
    made = animation.finish()
    assert (made.frames, made.width, made.height, made.data) == (whole.frames, whole.width, whole.height, whole.data)
