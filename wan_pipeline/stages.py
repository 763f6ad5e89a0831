"""The stage table: every stage of the render graph, declared once.

One :class:`Stage` row says what a stage is — its name, the stages it reads, whether it is per
scene, the engine protocol and method, its output file and kind, its telemetry keys, the engines a
preset may name for it and how one partition calls the engine. Everything else derives from this
table: preset sections (:mod:`wan_pipeline.preset`), output paths (:mod:`wan_pipeline.storage`),
the engine registry (:mod:`wan_pipeline.engines.registry`), the fingerprint graph ("what an edit
affects", :mod:`wan_pipeline.fingerprint`), report colours, the doctor's stage list, the stage
runner's out-of-memory retry, and on the Dagster side the asset factory, labels, kinds and the
job selections.

Adding a per-scene stage = one row here (or :meth:`StageTable.add` from another module), one engine
class, one preset section. The table reads like spandrel's architecture registry: one ordered list,
names checked for duplicates.

``reads`` names upstream stages: ``"clip"`` is the same scene's output, ``"keyframe[next]"`` the
output of the scene this one hands off to (the FLF2V end frame); a stage that is not per scene (the
film) reads every scene's output of the stages it names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from wan_pipeline.engines.base import ClipEngine, FilmJoiner, Interpolator, KeyframeEngine, Upscaler

NEXT = "[next]"
"""Suffix of a read on the handoff target scene: ``keyframe[next]``."""


@dataclass(frozen=True)
class Stage:
    """One row of the stage table.

    name: the stage (asset name, preset section, telemetry ``stage``).
    reads: upstream stages (``"x"``: same scene; ``"x[next]"``: the handoff target's; for a stage
        that is not per scene: every scene's).
    per_scene: partitioned by scene (True) or one output per story (the film).
    protocol: the engine interface (:mod:`wan_pipeline.engines.base`); method: its stage method.
    output: the output file name (under ``<take>/<scene>/`` per scene, else ``<take>/``).
    kind: ``image`` or ``video`` (Dagster kinds tag, preview type).
    telemetry: the stage's own telemetry keys beyond the contract keys (documentation and the UI).
    engines: engine name → ``"module:Class"``, imported on first use (the preview engines never
        import torch).
    work: ``work(job, run)`` renders one partition, or its ``"module:function"`` name
        (:mod:`wan_pipeline.stage_work`), imported on first use.
    colour: the report chart's colour (hex).
    description: one sentence for the asset description.
    lossless: intermediates are lossless; the delivery file is not.
    keep_engine: keep the engine loaded until the render ends (small post-processing weights the
        film reuses for its seams) instead of releasing it after the stage's step.
    """

    name: str
    reads: tuple[str, ...]
    per_scene: bool
    protocol: type
    method: str
    output: str
    kind: str
    telemetry: tuple[str, ...]
    engines: Mapping[str, str]
    work: Callable | str
    colour: str = "#777777"
    description: str = ""
    lossless: bool = True
    keep_engine: bool = False

    @property
    def work_fn(self) -> Callable:
        """The work function (imported from its ``"module:function"`` name on first use)."""
        if callable(self.work):
            return self.work
        module, name = self.work.split(":")
        return getattr(importlib.import_module(module), name)

    def upstream(self) -> list[tuple[str, bool]]:
        """``[(stage, on_handoff_target)]`` parsed from :attr:`reads`."""
        return [(r[: -len(NEXT)], True) if r.endswith(NEXT) else (r, False) for r in self.reads]

    def upstream_stages(self) -> list[str]:
        """The names of the stages read (each once, in order)."""
        return list(dict.fromkeys(name for name, _ in self.upstream()))


@dataclass
class StageTable:
    """The ordered stage rows (graph order: every stage after the stages it reads)."""

    rows: list[Stage] = field(default_factory=list)

    def add(self, stage: Stage) -> Stage:
        """Append ``stage``; raises ``ValueError`` for a duplicate name or an unknown upstream."""
        if stage.name in self.names():
            raise ValueError(f"stage {stage.name!r} is already in the stage table")
        for up in stage.upstream_stages():
            if up not in self.names():
                raise ValueError(f"stage {stage.name!r} reads {up!r}, which is not in the stage table (add it first)")
        self.rows.append(stage)
        return stage

    def remove(self, name: str) -> None:
        """Drop the row ``name`` (tests that add a stage take it out again)."""
        self.rows = [s for s in self.rows if s.name != name]

    def __iter__(self) -> Iterator[Stage]:
        return iter(list(self.rows))

    def __getitem__(self, name: str) -> Stage:
        for s in self.rows:
            if s.name == name:
                return s
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(self.names())}")

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.rows)

    def scene_stages(self) -> tuple[str, ...]:
        """The per-scene stages, in graph order."""
        return tuple(s.name for s in self.rows if s.per_scene)

    def story_stages(self) -> tuple[str, ...]:
        """The stages with one output per story (the film), in graph order."""
        return tuple(s.name for s in self.rows if not s.per_scene)

    def readers(self, name: str) -> list[tuple[Stage, bool]]:
        """``[(stage, on_handoff_target)]`` of the rows that read ``name``."""
        return [(s, nxt) for s in self.rows for up, nxt in s.upstream() if up == name]

    def stage_methods(self) -> tuple[str, ...]:
        """The engine methods of every stage (what the out-of-memory retry wraps)."""
        return tuple(dict.fromkeys(s.method for s in self.rows))


def _row(name: str, **kwargs) -> Stage:
    return Stage(name=name, **{**kwargs, "work": f"wan_pipeline.stage_work:{kwargs['work']}_work"})


STAGES = StageTable()
"""The render graph of every story (see ../shared/DESIGN.md)."""

STAGES.add(
    _row(
        "keyframe",
        reads=(),
        per_scene=True,
        protocol=KeyframeEngine,
        method="render",
        output="keyframe.png",
        kind="image",
        telemetry=("source", "fingerprint", "steps", "guidance_scale"),
        engines={
            "image_or_procedural": "wan_pipeline.engines.keyframe_image:ImageOrProceduralKeyframe",
            "diffusers_t2i": "wan_pipeline.engines.diffusers_keyframe:DiffusersT2IKeyframe",
        },
        work="keyframe",
        colour="#4c72b0",
        description="The scene's first frame (PNG): the scene's own image fitted to the preset size, or text-to-image from its prompt.",
    )
)
STAGES.add(
    _row(
        "clip",
        reads=("keyframe", "keyframe[next]"),
        per_scene=True,
        protocol=ClipEngine,
        method="render",
        output="clip.mp4",
        kind="video",
        telemetry=(
            "flf2v",
            "handoff_to",
            "steps",
            "guidance_scale",
            "segments",
            "continuation",
            "segment_colour_shift",
            "memory_strategy",
            "oom_retries",
        ),
        engines={
            "camera_motion": "wan_pipeline.engines.camera_motion:CameraMotionClip",
            "wan_i2v": "wan_pipeline.engines.wan_clip:WanI2VClip",
        },
        work="clip",
        colour="#dd8452",
        description=(
            "The scene's clip at the model's native size and fps (MP4, lossless). With a handoff its last frame is "
            "conditioned on the next scene's keyframe (FLF2V)."
        ),
    )
)
STAGES.add(
    _row(
        "interpolated",
        reads=("clip",),
        per_scene=True,
        protocol=Interpolator,
        method="interpolate",
        output="interpolated.mp4",
        kind="video",
        telemetry=("interp_factor", "scene_cuts", "input_frames", "input_fps", "audio"),
        engines={
            "optical_flow": "wan_pipeline.engines.optical_flow:FlowInterpolator",
            "rife": "wan_pipeline.engines.rife:RifeInterpolator",
        },
        work="video",
        colour="#55a868",
        description="The clip at a higher frame rate (frame interpolation: optical flow or RIFE), lossless MP4.",
        keep_engine=True,
    )
)
STAGES.add(
    _row(
        "upscaled",
        reads=("interpolated",),
        per_scene=True,
        protocol=Upscaler,
        method="upscale",
        output="upscaled.mp4",
        kind="video",
        telemetry=("upscale_factor", "tile", "input_frames", "input_fps", "audio"),
        engines={
            "lanczos": "wan_pipeline.engines.lanczos:LanczosUpscaler",
            "realesrgan": "wan_pipeline.engines.esrgan:RealEsrganUpscaler",
        },
        work="video",
        colour="#c44e52",
        description="The interpolated clip at a higher resolution (Lanczos or Real-ESRGAN), lossless MP4.",
        keep_engine=True,
    )
)
STAGES.add(
    _row(
        "film",
        reads=("upscaled", "clip"),
        per_scene=False,
        protocol=FilmJoiner,
        method="join",
        output="film.mp4",
        kind="video",
        telemetry=("seam_frames", "scenes", "expected_duration_s", "crf"),
        engines={
            "concat": "wan_pipeline.engines.concat_film:ConcatFilm",
            "wan_vace": "wan_pipeline.engines.vace_film:WanVaceFilm",
        },
        work="film",
        colour="#8172b3",
        description="The whole story as one delivery MP4 (H.264 4:2:0): every scene's upscaled clip in story order, seams joined.",
        lossless=False,
    )
)
