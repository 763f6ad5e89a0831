"""The storage root: Dagster instance, outputs, models and locks under one folder.

``storage/`` in the checkout by default, or the folder in ``WAN_PIPELINE_STORAGE``. Layout::

    <root>/dagster.yaml                      the Dagster instance (DAGSTER_HOME unless set)
    <root>/instance.lock                     held while the instance's files are created (DAGSTER_HOME)
    <root>/outputs/<story>/<scene>/keyframe.png | clip.mp4 | interpolated.mp4 | upscaled.mp4 (+ .json)
    <root>/outputs/<story>/film.mp4, run-summary.json
    <root>/models/   <root>/locks/
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wan_pipeline.preset import project_root

TEMPLATE_DAGSTER_YAML = project_root() / "storage" / "dagster.yaml"
#: Seconds a command waits for another one creating the same Dagster instance (creation takes ~1 s).
INSTANCE_LOCK_TIMEOUT_S = 120.0


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
        return self.outputs / story_id

    def output(self, story_id: str, scene_id: str | None, stage: str) -> Path:
        """Where a stage writes: ``outputs/<story>/<scene>/<output file>`` for a per-scene stage,
        ``outputs/<story>/<output file>`` for a story stage (scene None); the file name is the stage
        table's (:mod:`wan_pipeline.stages`)."""
        from wan_pipeline.stages import STAGES

        row = STAGES[stage]
        if row.per_scene:
            if scene_id is None:
                raise ValueError(f"stage {stage!r} is per scene: give the scene id")
            return self.story_dir(story_id) / scene_id / row.output
        return self.story_dir(story_id) / row.output

    def film(self, story_id: str) -> Path:
        return self.output(story_id, None, "film")

    def run_summary(self, story_id: str) -> Path:
        return self.story_dir(story_id) / "run-summary.json"

    def dagster_home(self) -> Path:
        """``DAGSTER_HOME`` when set, else the storage root."""
        env = os.environ.get("DAGSTER_HOME")
        return Path(env).resolve() if env else self.root

    def init(self) -> Path:
        """Create the folders and, where missing, the instance's ``dagster.yaml`` (the ``gpu`` pool
        limit and the run queue) copied from the project's template (written atomically: a
        concurrent reader never sees half a file). Returns the Dagster home. Opening the instance
        for the first time also creates its databases: do both under :meth:`instance_lock`."""
        from wan_pipeline.media.atomic import atomic_path

        for d in (self.root, self.outputs, self.models, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        home = self.dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        target = home / "dagster.yaml"
        if not target.exists() and TEMPLATE_DAGSTER_YAML.is_file() and TEMPLATE_DAGSTER_YAML.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(TEMPLATE_DAGSTER_YAML, tmp)
        return home

    @contextlib.contextmanager
    def instance_lock(self, timeout_s: float = INSTANCE_LOCK_TIMEOUT_S) -> Iterator[Path]:
        """Hold the cross-process lock of the Dagster home (``<home>/instance.lock``) for the body;
        yields the Dagster home.

        Dagster creates and migrates an instance's SQLite databases (runs, schedules, event-log
        index) on first use without guarding against a second process doing the same: two
        commands started together on a fresh root crash or leave two schema heads. Everything that
        opens the instance (:meth:`init`, then the first ``DagsterInstance.get()``) does so inside
        this lock. timeout_s: seconds to wait; raises :class:`~wan_pipeline.errors.WanPipelineError`
        after it. The OS releases the lock when its holder dies.
        """
        from filelock import FileLock, Timeout

        from wan_pipeline.errors import WanPipelineError

        home = self.dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(home / "instance.lock"), thread_local=False, is_singleton=False)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise WanPipelineError(
                f"{home / 'instance.lock'}: another wan-pipeline process has held the Dagster instance's lock for {timeout_s:.0f}s"
            ) from None
        try:
            yield home
        finally:
            lock.release()


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
