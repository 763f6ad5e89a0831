"""The storage root: Dagster instance, outputs, models and locks under one folder.

``storage/`` in the checkout by default, or the folder in ``WAN_PIPELINE_STORAGE``. Layout::

    <root>/dagster.yaml                      the Dagster instance (DAGSTER_HOME unless set)
    <root>/instance.lock                     held while the instance's files are created (DAGSTER_HOME)
    <root>/outputs/<story>/<take>/<scene>/keyframe.png | clip.mp4 | interpolated.mp4 | upscaled.mp4 (+ .json)
    <root>/outputs/<story>/<take>/film.mp4, run-summary.json, render-report.png
    <root>/models/   <root>/locks/<machine>/   (device-slot locks, per machine)

A take is one rendering of a story (by default named after its preset: ``preview``, ``tiny``);
two takes never share a file, so a draft and a final render sit side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wan_pipeline.media.atomic import write_text_atomic
from wan_pipeline.preset import project_root

TEMPLATE_DAGSTER_YAML = project_root() / "storage" / "dagster.yaml"
#: Seconds a command waits for another one creating the same Dagster instance (creation takes ~1 s).
INSTANCE_LOCK_TIMEOUT_S = 120.0


MACHINE_ENV = "WAN_PIPELINE_MACHINE"
"""Environment variable: this machine's name in telemetry (``host``) and in the lock folder; default
the host name. Two workers on one host that stand for two machines set different names."""


def machine_name() -> str:
    """``WAN_PIPELINE_MACHINE``, else the host name."""
    import socket

    return os.environ.get(MACHINE_ENV) or socket.gethostname()


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

    def machine_locks(self) -> Path:
        """``locks/<machine>/``: this machine's device-slot locks (:func:`machine_name`). A storage
        root shared by several machines (network file system) must not let ``cuda:0`` of one
        machine wait for ``cuda:0`` of another."""
        return self.locks / machine_name()

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
        """Create the folders and, where missing, the instance's ``dagster.yaml`` from the project's
        template (:func:`instance_yaml`: the run queue, the ``gpu`` pool limit = the machine's
        device slots, PostgreSQL storage when ``WAN_PIPELINE_DATABASE_URL`` is set). An existing
        file made from the template gets its pool limit updated to the current slot count; any
        other file is left alone. Returns the Dagster home. Opening the instance for the first time also creates its
        databases: do both under :meth:`instance_lock`. Raises
        :class:`~wan_pipeline.errors.InputError` for a database URL that is not ``postgresql://``."""
        for d in (self.root, self.outputs, self.models, self.locks):
            d.mkdir(parents=True, exist_ok=True)
        home = self.dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        target = home / "dagster.yaml"
        if not TEMPLATE_DAGSTER_YAML.is_file() or TEMPLATE_DAGSTER_YAML.resolve() == target.resolve():
            return home
        if not target.exists():
            write_text_atomic(target, instance_yaml())
        else:
            text = target.read_text()
            first = TEMPLATE_DAGSTER_YAML.read_text().splitlines()[0]
            if text.startswith(first):
                updated = _with_pool_limit(text, _slot_count())
                if updated != text:
                    write_text_atomic(target, updated)
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


DATABASE_URL_ENV = "WAN_PIPELINE_DATABASE_URL"
"""Environment variable: a ``postgresql://user:password@host:port/db`` URL; a storage root
initialised while it is set keeps its runs, event log and schedules in that PostgreSQL database
(``dagster-postgres``) instead of SQLite files."""


def _slot_count() -> int:
    from wan_pipeline.device_lock import slot_count

    return slot_count()


def _with_pool_limit(text: str, limit: int) -> str:
    import re

    return re.sub(r"(?m)^(\s*default_limit:)\s*\d+", rf"\g<1> {limit}", text, count=1)


def database_url(url: str) -> str:
    """``url`` with the psycopg2 driver named (``postgresql+psycopg2://…``) unless it names one:
    dagster-postgres installs psycopg2, and SQLAlchemy ≥ 2.1 takes a bare ``postgresql://`` to mean
    psycopg 3."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare) :]
    return url


def instance_yaml(url: str | None = None, slots: int | None = None) -> str:
    """The ``dagster.yaml`` of a new storage root: the project's template with the ``gpu`` pool
    limit set to ``slots`` (default: this machine's device slots, ``WAN_PIPELINE_DEVICES``) and,
    with ``url`` (default: ``WAN_PIPELINE_DATABASE_URL``), a ``storage: postgres`` section.
    Raises :class:`~wan_pipeline.errors.InputError` for a URL that is not ``postgresql://``."""
    from wan_pipeline.errors import InputError

    url = url if url is not None else os.environ.get(DATABASE_URL_ENV, "")
    text = _with_pool_limit(TEMPLATE_DAGSTER_YAML.read_text(), slots or _slot_count())
    if url:
        if not url.startswith(("postgresql://", "postgres://", "postgresql+")):
            raise InputError(None, f"{DATABASE_URL_ENV}: {url.split('@')[-1]!r} is not a postgresql:// URL; unset it for SQLite")
        text += (
            "# Runs, event log and schedules in PostgreSQL (dagster-postgres), shared by every machine.\n"
            f"storage:\n  postgres:\n    postgres_url: {json.dumps(database_url(url))}\n"
        )
    return text
