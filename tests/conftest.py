"""Shared fixtures: small presets and stories in a temporary folder, real photos as keyframes."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "stories" / "images"


def write_preset(folder: Path, name: str = "small", **overrides) -> Path:
    """A copy of the preview preset at a small size (96x64 at 8 fps → 192x128 at 16 fps)."""
    data = yaml.safe_load((REPO / "workflows" / "preview.yaml").read_text())
    data.update(name=name, width=96, height=64, fps=8)
    for key, value in overrides.items():
        if key in data["stages"]:
            data["stages"][key].update(value)
        else:
            data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_story(
    folder: Path, scenes: list[dict] | None = None, story_id: str = "tiny_tale", preset: str = "small", name: str | None = None
) -> Path:
    """A story file in ``folder`` with its images copied from the repo's public-domain photos."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    for img in ("rocket.jpg", "astronaut.png", "chelsea.png", "coffee.png"):
        shutil.copyfile(IMAGES / img, folder / "images" / img)
    if scenes is None:
        scenes = [
            {
                "id": "one",
                "prompt": "a rocket",
                "duration_s": 1.0,
                "keyframe": {"image": "images/rocket.jpg"},
                "camera": "zoom_in",
                "transition": "handoff",
            },
            {
                "id": "two",
                "prompt": "an astronaut",
                "duration_s": 1.0,
                "keyframe": {"image": "images/astronaut.png"},
                "camera": "pan_left",
                "transition": "cut",
            },
            {"id": "three", "prompt": "a cat", "duration_s": 1.0, "keyframe": {"image": "images/chelsea.png"}, "camera": "static"},
        ]
    path = folder / (name or f"{story_id}.yaml")
    path.write_text(yaml.safe_dump({"id": story_id, "title": "Tiny tale", "preset": preset, "scenes": scenes}, sort_keys=False))
    return path


DATABASE_ENV = "WAN_PIPELINE_TEST_DATABASE_URL"
"""A ``postgresql://`` URL of a server where the tests may create databases (``.ci/run`` starts a
throwaway cluster and sets it): the Dagster-level tests then run on PostgreSQL instance storage."""


@contextlib.contextmanager
def fresh_database():
    """A new, empty PostgreSQL database on the server of ``WAN_PIPELINE_TEST_DATABASE_URL`` (its URL),
    dropped afterwards; None when the variable is unset (SQLite). Skips the test when the server
    or ``dagster-postgres`` is missing."""
    url = os.environ.get(DATABASE_ENV)
    if not url:
        yield None
        return
    pytest.importorskip("dagster_postgres", reason=f"{DATABASE_ENV} is set but dagster-postgres is not installed")
    import psycopg2

    try:
        admin = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {DATABASE_ENV} ({exc})")
    admin.autocommit = True
    name = f"wan_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@contextlib.contextmanager
def dagster_test_instance():
    """``dg.instance_for_test()`` on SQLite, or on a fresh PostgreSQL database when
    ``WAN_PIPELINE_TEST_DATABASE_URL`` is set."""
    import dagster as dg

    with fresh_database() as url:
        from wan_pipeline.storage import database_url

        overrides = {"storage": {"postgres": {"postgres_url": database_url(url)}}} if url else None
        with dg.instance_for_test(overrides=overrides) as instance:
            yield instance


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """A storage root for a whole test module (``WAN_PIPELINE_STORAGE``)."""
    root = tmp_path_factory.mktemp("storage")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WAN_PIPELINE_STORAGE", str(root))
        yield root


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A temporary project: ``stories/`` with a 3-scene story, ``workflows/`` with the small
    preset, and a fresh storage root; the environment points the code at them."""
    workflows = tmp_path / "workflows"
    write_preset(workflows)
    shutil.copyfile(REPO / "workflows" / "preview.yaml", workflows / "preview.yaml")
    stories = tmp_path / "stories"
    story = write_story(stories)
    storage = tmp_path / "storage"
    monkeypatch.setenv("WAN_PIPELINE_WORKFLOWS", str(workflows))
    monkeypatch.setenv("WAN_PIPELINE_STORIES", str(stories))
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(storage))
    monkeypatch.setenv("DAGSTER_HOME", str(storage))
    with fresh_database() as url:  # PostgreSQL instance storage when the CI started a server
        if url:
            monkeypatch.setenv("WAN_PIPELINE_DATABASE_URL", url)
        else:
            monkeypatch.delenv("WAN_PIPELINE_DATABASE_URL", raising=False)
        yield {"root": tmp_path, "story": story, "stories": stories, "workflows": workflows, "storage": storage, "database": url}
