"""Story files: a list of scenes, each one a Dagster partition of the render.

A story is YAML or JSON (see README "Story format"). :func:`load_story` validates it with pydantic
and reports every problem with the file, the field path (``scenes[2].keyframe.image``) and what is
allowed. Image paths are relative to the story file and must stay inside its folder.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from wan_pipeline.config_files import load_document, validation_problems
from wan_pipeline.errors import InputError
from wan_pipeline.media.image_io import read_image

ID_PATTERN = r"^[a-z0-9_]+$"
#: Longest story or scene id: ids name folders (``outputs/<story>/<scene>/``), Dagster partition
#: keys and run tags; 64 keeps every path component far below the 255-byte file-name limit.
ID_MAX_LENGTH = 64
CAMERA_MOTIONS = ("static", "zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down")
Camera = Literal["static", "zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down"]
Transition = Literal["handoff", "cut"]


class _Strict(BaseModel):
    # strict numbers: YAML ``true`` is not 1 s; NaN and infinity are not numbers
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KeyframeSpec(_Strict):
    """Where a scene's first frame comes from: its own ``image`` or a text-to-image ``prompt``."""

    image: str | None = None
    prompt: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> KeyframeSpec:
        if (self.image is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'image' (a path relative to the story file) or 'prompt'")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' is empty: write a text-to-image prompt or use 'image'")
        return self


class LoraSpec(_Strict):
    """A LoRA adapter (safetensors file) applied to the video model with ``strength`` (0..2).

    ``path`` is relative to the story file and must name an existing ``.safetensors`` file inside
    the story's folder (checked when the story is loaded, header read only).
    """

    path: str
    strength: float = Field(1.0, ge=0.0, le=2.0, strict=True)

    @field_validator("path")
    @classmethod
    def _inside_story(cls, v: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if base is not None:
            _check_safetensors(contained_file(Path(base), v, "LoRA"))
        return v


class Scene(_Strict):
    """One scene of a story: one partition of every per-scene asset."""

    id: str = Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)
    prompt: str
    negative_prompt: str = ""
    duration_s: float = Field(gt=0, le=600, strict=True, description="seconds of finished film for this scene")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, strict=True)
    keyframe: KeyframeSpec | None = None
    camera: Camera = "static"
    transition: Transition = "handoff"
    guidance_scale: float | None = Field(None, ge=0, le=30, strict=True)
    steps: int | None = Field(None, ge=1, le=200, strict=True)
    loras: tuple[LoraSpec, ...] = ()

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is empty: describe what the scene shows")
        return v

    @field_validator("keyframe")
    @classmethod
    def _image_inside_story(cls, v: KeyframeSpec | None, info: ValidationInfo) -> KeyframeSpec | None:
        base = (info.context or {}).get("base_dir")
        if v is None or v.image is None or base is None:
            return v
        img = contained_file(Path(base), v.image, "image")
        try:
            stat = img.stat()
            _check_image_file(str(img), stat.st_mtime_ns, stat.st_size)
        except InputError as exc:
            raise ValueError(f"image {v.image!r}: {'; '.join(exc.problems)}") from None
        except OSError as exc:  # removed or made unreadable since contained_file looked
            raise ValueError(f"image {v.image!r} cannot be read ({exc.strerror or exc})") from None
        return v


@functools.lru_cache(maxsize=256)
def _check_image_file(path: str, mtime_ns: int, size: int) -> None:
    """Decode the image at ``path`` once per version of the file (``mtime_ns``, ``size``): a
    story is re-read at every stage of a render, its images need checking only when they change.
    Raises :class:`InputError` as :func:`~wan_pipeline.media.image_io.read_image` (not cached)."""
    read_image(path)  # decodable, within the pixel limit, convertible to RGB


class Story(_Strict):
    """A story file: ``id`` (asset key prefix), ``title``, default ``preset`` and the ``scenes``."""

    id: str = Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)
    title: str = ""
    preset: str = Field("preview", pattern=r"^[A-Za-z0-9_.-]+$", max_length=200)
    # "at least one scene" is checked in _unique_ids, not with min_length: pydantic counts only the
    # scenes that validated, so one bad scene would add a false "should have at least 1 item"
    scenes: tuple[Scene, ...]
    source_path: str | None = Field(None, exclude=True)

    @field_validator("scenes")
    @classmethod
    def _unique_ids(cls, scenes: tuple[Scene, ...]) -> tuple[Scene, ...]:
        if not scenes:
            raise ValueError("a story needs at least one scene")
        seen: set[str] = set()
        for s in scenes:
            if s.id in seen:
                raise ValueError(f"scene id {s.id!r} is used twice: scene ids must be unique in a story")
            seen.add(s.id)
        return scenes

    # -- derived ---------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return Path(self.source_path).resolve().parent if self.source_path else Path.cwd()

    @property
    def scene_ids(self) -> list[str]:
        return [s.id for s in self.scenes]

    def scene(self, scene_id: str) -> Scene:
        for s in self.scenes:
            if s.id == scene_id:
                return s
        raise KeyError(f"story {self.id!r} has no scene {scene_id!r}; scenes: {', '.join(self.scene_ids)}")

    def index(self, scene_id: str) -> int:
        return self.scene_ids.index(scene_id)

    def next_scene(self, scene_id: str) -> Scene | None:
        i = self.index(scene_id)
        return self.scenes[i + 1] if i + 1 < len(self.scenes) else None

    def handoff_target(self, scene_id: str) -> Scene | None:
        """The scene whose keyframe is the FLF2V last frame of ``scene_id``, or None (cut / last)."""
        s = self.scene(scene_id)
        return self.next_scene(scene_id) if s.transition == "handoff" else None

    def image_path(self, scene: Scene) -> Path | None:
        if scene.keyframe is None or scene.keyframe.image is None:
            return None
        return (self.base_dir / scene.keyframe.image).resolve()

    def lora_path(self, lora: LoraSpec) -> Path:
        """The absolute path of a scene's LoRA; raises :class:`InputError` (the story file) unless
        it is a file inside the story's folder (also for a story built without a source)."""
        try:
            return contained_file(self.base_dir, lora.path, "LoRA")
        except ValueError as exc:
            raise InputError(self.source_path, str(exc)) from None

    def seed(self, scene: Scene) -> int:
        """The scene's seed, or one derived from ``story.id/scene.id`` (stable across runs)."""
        if scene.seed is not None:
            return scene.seed
        digest = hashlib.sha256(f"{self.id}/{scene.id}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def keyframe_prompt(self, scene: Scene) -> str:
        if scene.keyframe is not None and scene.keyframe.prompt:
            return scene.keyframe.prompt
        return scene.prompt


def contained_file(base: Path, relative: str, what: str) -> Path:
    """``base / relative`` resolved; raises ValueError (message with the fix) unless it is a regular
    file inside ``base`` (symlinks are followed first, so a link out of the folder is refused)."""
    base = base.resolve()
    try:
        path = (base / relative).resolve()
        inside, exists, is_file = path.is_relative_to(base), path.exists(), path.is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(
            f"{what} {relative[:80]!r} is not a usable path ({reason}): give a short path relative to the story file"
        ) from None
    if not inside:
        raise ValueError(f"{what} {relative!r} is outside the story's folder {base}: copy it into that folder")
    if not exists:
        raise ValueError(f"{what} {relative!r} not found (looked at {path}); paths are relative to the story file")
    if not is_file:
        raise ValueError(f"{what} {relative!r} is not a regular file ({path})")
    return path


def _check_safetensors(path: Path) -> None:
    """Raise ValueError unless ``path`` ends in ``.safetensors`` and its header parses (no tensor
    data is read; pickled ``.ckpt``/``.pt``/``.bin`` weights are never opened)."""
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"LoRA {path.name!r} must be a .safetensors file (pickled .ckpt/.pt/.bin weights can run code): convert it")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for bad headers
        raise ValueError(f"LoRA {path.name!r} is not a readable safetensors file ({exc})") from None


def parse_story(data: object, source: str | Path | None = None) -> Story:
    """Validate an already-parsed document as a :class:`Story`; raises :class:`InputError`."""
    name = str(source) if source else "<story>"
    if not isinstance(data, dict):
        raise InputError(name, "a story must be a mapping with 'id', 'title', 'preset' and 'scenes'")
    base = Path(source).resolve().parent if source else None
    try:
        story = Story.model_validate(data, context={"base_dir": base})
    except ValidationError as err:
        raise InputError(name, validation_problems(Story, err)) from None
    return story.model_copy(update={"source_path": str(Path(source).resolve()) if source else None})


def load_story(path: str | Path) -> Story:
    """Load and validate a story file (YAML or JSON).

    Raises :class:`InputError` listing every problem (file, field path, what is allowed), or the
    line and column of a syntax error.
    """
    return parse_story(load_document(path), source=path)


def story_files(folder: str | Path) -> list[Path]:
    """The story files (``*.yaml``, ``*.yml``, ``*.json``) directly inside ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".yaml", ".yml", ".json"))


def slug_ok(value: str) -> bool:
    return re.fullmatch(ID_PATTERN, value) is not None
