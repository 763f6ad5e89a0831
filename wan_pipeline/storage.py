"""The storage root: Dagster instance, outputs, models and locks under one folder.

``storage/`` in the checkout by default, or the folder in ``WAN_PIPELINE_STORAGE``. Layout::

    <root>/dagster.yaml                      the Dagster instance (DAGSTER_HOME unless set)
    <root>/outputs/<story>/<take>/<scene>/keyframe.png | clip.mp4 | interpolated.mp4 | upscaled.mp4 (+ .json)
    <root>/outputs/<story>/<take>/film.mp4, run-summary.json, render-report.png

A take is one rendering of a story (by default named after its preset: ``preview``, ``tiny``);
two takes never share a file, so a draft and a final render sit side by side.
    <root>/models/   <root>/locks/
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from wan_pipeline.preset import project_root

TEMPLATE_DAGSTER_YAML = project_root() / "storage" / "dagster.yaml"
TAKE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
"""A take name: a folder name of letters, digits, ``_ . -`` (not starting with a dot), ≤ 64 characters."""


def check_take(take: str) -> str:
    """``take`` when it is a valid take name (:data:`TAKE_RE`); raises
    :class:`~wan_pipeline.errors.InputError` naming ``--take`` and the rule otherwise."""
    from wan_pipeline.errors import InputError

    if not isinstance(take, str) or not TAKE_RE.match(take):
        raise InputError(
            None,
            f"--take: {take!r} is not a take name: use 1-64 letters, digits, '_', '.' or '-', not starting with '.' (e.g. --take draft)",
        )
    return take


def storage_root() -> Path:
    """The storage root from ``WAN_PIPELINE_STORAGE``, else ``<checkout>/storage``."""
    env = os.environ.get("WAN_PIPELINE_STORAGE")
    return Path(env).resolve() if env else (project_root() / "storage").resolve()


def model_path(model: str, root: Path | None = None) -> Path:
    """A preset's model file or folder: absolute as given, else relative to the storage root
    (``root``, default :func:`storage_root`). Resolving never writes anything: the miniatures of the
    ``tiny`` presets are made by ``wan-pipeline make-tiny-models`` or
    :func:`wan_pipeline.models.tiny.ensure_tiny_models`."""
    p = Path(model).expanduser()
    return p if p.is_absolute() else (root or storage_root()) / p


@dataclass(frozen=True)
class StorageLayout:
    """Paths under one storage root (absolute)."""

    root: Path

    @classmethod
    def default(cls) -> StorageLayout:
        return cls(storage_root())

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def story_dir(self, story_id: str) -> Path:
        """``outputs/<story>``: the folder of the story's takes."""
        return self.outputs / story_id

    def take_dir(self, story_id: str, take: str) -> Path:
        """``outputs/<story>/<take>``: everything one take of the story wrote."""
        return self.story_dir(story_id) / check_take(take)

    def takes(self, story_id: str) -> list[str]:
        """The takes of ``story_id`` that have files on disk, sorted by name."""
        folder = self.story_dir(story_id)
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and TAKE_RE.match(p.name)) if folder.is_dir() else []

    def output(self, story_id: str, scene_id: str | None, stage: str, *, take: str) -> Path:
        """Where a stage writes in ``take``: ``outputs/<story>/<take>/<scene>/<output file>`` for a
        per-scene stage, ``outputs/<story>/<take>/<output file>`` for a story stage (scene None);
        the file name is the stage table's (:mod:`wan_pipeline.stages`)."""
        from wan_pipeline.stages import STAGES

        row = STAGES[stage]
        if row.per_scene:
            if scene_id is None:
                raise ValueError(f"stage {stage!r} is per scene: give the scene id")
            return self.take_dir(story_id, take) / scene_id / row.output
        return self.take_dir(story_id, take) / row.output

    def film(self, story_id: str, *, take: str) -> Path:
        return self.output(story_id, None, "film", take=take)

    def run_summary(self, story_id: str, *, take: str) -> Path:
        return self.take_dir(story_id, take) / "run-summary.json"

    def dagster_home(self) -> Path:
        """``DAGSTER_HOME`` when set, else the storage root."""
        env = os.environ.get("DAGSTER_HOME")
        return Path(env).resolve() if env else self.root

    def init(self) -> Path:
        """Create the folders and, where missing, the instance's ``dagster.yaml`` (the ``gpu`` pool
        limit and the run queue) copied from the project's template. Returns the Dagster home."""
        for d in (self.root, self.outputs, self.models, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        home = self.dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        target = home / "dagster.yaml"
        if not target.exists() and TEMPLATE_DAGSTER_YAML.is_file() and TEMPLATE_DAGSTER_YAML.resolve() != target.resolve():
            shutil.copyfile(TEMPLATE_DAGSTER_YAML, target)
        return home


def check_storage_root(root: Path | None = None) -> Path:
    """Create the storage root (default :func:`storage_root`) if needed and return it; raises
    :class:`InputError` naming it and ``WAN_PIPELINE_STORAGE`` when it is a file, cannot be
    created, or is not writable."""
    from wan_pipeline.errors import InputError

    root = root or storage_root()
    fix = "set WAN_PIPELINE_STORAGE to a writable folder"
    if root.exists() and not root.is_dir():
        raise InputError(str(root), f"the storage root is a file, not a folder: {fix}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(str(root), f"the storage root cannot be created ({exc.strerror or exc}): {fix}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise InputError(str(root), f"the storage root is not writable: {fix}")
    return root
