"""The code location: every story file in ``stories/`` (or ``$WAN_PIPELINE_STORIES``) as an asset group.

``workspace.yaml`` loads this module. A story that fails validation is logged and skipped; the
other stories still load. Any number of stories with different scene lists load together: each
story's assets are partitioned by its own scene ids, so every job and schedule is per story
(:mod:`assets.jobs`, :mod:`assets.schedules`) and the one story sensor names the story's job in
each run request.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dagster as dg

from assets.checks import build_story_checks
from assets.executors import code_location_executor
from assets.jobs import film_job, render_job, story_job
from assets.recovery import recover_killed_runs_sensor
from assets.schedules import build_nightly_schedules
from assets.sensors import build_story_sensor
from assets.story_assets import build_story_assets
from resources import default_resources
from wan_pipeline.errors import InputError
from wan_pipeline.preset import project_root
from wan_pipeline.story import Story, load_story, story_files

log = logging.getLogger("wan_pipeline")


def stories_dir() -> Path:
    env = os.environ.get("WAN_PIPELINE_STORIES")
    return Path(env).resolve() if env else project_root() / "stories"


def load_stories(folder: Path | None = None) -> tuple[list[Story], dict[str, str]]:
    """Valid stories in ``folder`` and, per invalid file, its error message. Duplicate story ids
    keep the first file and report the others."""
    stories, errors, seen = [], {}, {}
    for path in story_files(folder or stories_dir()):
        try:
            story = load_story(path)
        except InputError as exc:
            errors[str(path)] = str(exc)
            log.error("story not loaded: %s", exc)
            continue
        if story.id in seen:
            errors[str(path)] = f"{path}: id: story id {story.id!r} is already used by {seen[story.id]}; give this story another id"
            log.error("story not loaded: %s", errors[str(path)])
            continue
        seen[story.id] = str(path)
        stories.append(story)
    return stories, errors


def build_definitions(folder: Path | None = None, stories: list[Story] | None = None) -> dg.Definitions:
    """Definitions for ``stories`` (default: every valid story file in ``folder``)."""
    if stories is None:
        stories, _ = load_stories(folder)
    assets, jobs, checks = [], [], []
    render_jobs = {story.id: render_job(story) for story in stories}
    for story in stories:
        assets.extend(build_story_assets(story))
        checks.extend(build_story_checks(story))
        jobs.extend([story_job(story), film_job(story), render_jobs[story.id]])
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=jobs,
        resources=default_resources(),
        sensors=[build_story_sensor(stories, folder or stories_dir(), jobs=list(render_jobs.values())), recover_killed_runs_sensor],
        schedules=build_nightly_schedules(stories, render_jobs),
        executor=code_location_executor(),
    )


defs = build_definitions()
