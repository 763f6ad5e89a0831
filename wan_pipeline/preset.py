"""Presets (``workflows/<name>.yaml``): which engine and model each stage uses, and its parameters.

A preset fixes the base (model-native) resolution and frame rate; each stage section names an
engine from :mod:`wan_pipeline.engines.registry` and carries that engine's own parameters, which
the engine validates when it is built.
"""

from __future__ import annotations

import hashlib
import json
import os
from fractions import Fraction
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wan_pipeline.config_files import load_document, validation_problems
from wan_pipeline.errors import InputError


class StageConfig(BaseModel):
    """One stage section: ``engine`` (registry name), optional ``model``, engine parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)

    engine: str
    model: str | None = None

    @property
    def params(self) -> dict:
        """The engine parameters: every field of the section except ``engine``."""
        data = self.model_dump()
        data.pop("engine")
        if data.get("model") is None:
            data.pop("model", None)
        return data


class StageSections(BaseModel):
    """One section per row of the stage table (:data:`wan_pipeline.stages.STAGES`), read as
    attributes (``preset.stages.clip``) or by name (:meth:`Preset.stage`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _one_section_per_stage(cls, data):
        from wan_pipeline.stages import STAGES

        if not isinstance(data, dict):
            raise ValueError(f"a mapping with one section per stage ({', '.join(STAGES.names())})")
        unknown = [k for k in data if k not in STAGES]
        missing = [k for k in STAGES.names() if k not in data]
        if unknown:
            raise ValueError(f"unknown stage section(s) {', '.join(map(str, unknown))}; stages: {', '.join(STAGES.names())}")
        if missing:
            raise ValueError(
                f"missing stage section(s) {', '.join(missing)}: every stage needs `engine:` (stages: {', '.join(STAGES.names())})"
            )
        return {k: v if isinstance(v, StageConfig) else StageConfig.model_validate(v) for k, v in data.items()}


class Preset(BaseModel):
    """A render set-up.

    width/height: the base (model-native) resolution in pixels; fps: the base frame rate of
    ``clip`` (Wan 2.1 renders at 16 fps, Wan 2.2 TI2V-5B at 24 fps: model cards).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    width: int = Field(ge=16, le=4096)
    height: int = Field(ge=16, le=4096)
    fps: float = Field(gt=0, le=240)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    checks: dict = Field(default_factory=dict, description="asset check thresholds")
    stages: StageSections
    source_path: str | None = Field(None, exclude=True)

    @property
    def base_fps(self) -> Fraction:
        return Fraction(self.fps).limit_denominator(1001)

    def stage(self, name: str) -> StageConfig:
        """The section of stage ``name``; raises ``KeyError`` for a stage not in the table."""
        section = (self.stages.model_extra or {}).get(name)
        if section is None:
            from wan_pipeline.stages import STAGES

            raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES.names())}")
        return section

    @property
    def content_sha(self) -> str:
        """16 hex digits of the SHA-256 of the preset's content (name, size, fps, every section):
        what a run tag records so every step of a render uses exactly this preset."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """The preset's content as canonical compact JSON (what :func:`preset_from_json` reads)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), default=str)

    def stage_hash(self, name: str) -> str:
        """Hash of the preset parameters that decide a stage's output (for fingerprints)."""
        payload = {"stage": self.stage(name).model_dump(), "width": self.width, "height": self.height, "fps": self.fps}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def project_root() -> Path:
    """The checkout root: the folder holding ``workflows/`` and ``stories/``."""
    env = os.environ.get("WAN_PIPELINE_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def workflows_dir() -> Path:
    return Path(os.environ.get("WAN_PIPELINE_WORKFLOWS", project_root() / "workflows")).resolve()


def available_presets() -> list[str]:
    return sorted(p.stem for p in workflows_dir().glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a preset by name (``workflows/<name>.yaml``) or by file path.

    Raises :class:`InputError` naming the file and field, or listing the available presets.
    """
    p = Path(name_or_path)
    if p.suffix.lower() not in (".yaml", ".yml", ".json"):
        p = workflows_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            raise InputError(str(p), f"no preset named {str(name_or_path)!r}; available: {', '.join(available_presets()) or 'none'}")
    data = load_document(p)
    if not isinstance(data, dict):
        raise InputError(str(p), "a preset must be a mapping with 'name', 'width', 'height', 'fps', 'stages'")
    try:
        preset = Preset.model_validate(data)
    except ValidationError as err:
        raise InputError(str(p), validation_problems(Preset, err)) from None
    return preset.model_copy(update={"source_path": str(p.resolve())})


def preset_from_json(text: str, source_path: str | None = None) -> Preset:
    """A preset from :meth:`Preset.to_json` (a run tag), with its file recorded as ``source_path``.
    Raises :class:`InputError` when the text is not a valid preset."""
    try:
        preset = Preset.model_validate(json.loads(text))
    except (ValueError, ValidationError) as err:
        raise InputError(source_path, f"the run's preset tag does not hold a valid preset ({err}); launch the render again") from None
    return preset.model_copy(update={"source_path": source_path})
