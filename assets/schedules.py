"""The nightly schedules: render whatever is stale or missing, one schedule per story, one run per
take.

Every take the instance has runs of (and the story's own) is checked with the preset it was
last rendered with; the film's runs include the render report.

``nightly_render_<story>`` for every loaded story, each on the story's own ``<story>_render`` job
(stories differ in scene lists, so in partitions). A day of edits (the sensor off, or runs that
failed) renders overnight. The cron is ``$WAN_PIPELINE_NIGHTLY_CRON`` (default ``0 2 * * *``,
02:00 in ``$WAN_PIPELINE_TIMEZONE``, default UTC). STOPPED by default: turn it on per story in the
UI (Automation → nightly_render_<story>).
"""

from __future__ import annotations

import os

import dagster as dg

from assets.jobs import render_job, render_job_name
from assets.render_context import current_story
from assets.sensors import STORY_TAG
from assets.status import known_takes, observe_fingerprints, status_for
from wan_pipeline.errors import InputError
from wan_pipeline.run_config import TAKE_TAG
from wan_pipeline.status import stale_plan
from wan_pipeline.story import Story


def stale_run_request(instance: dg.DagsterInstance, story: Story, reason: str, config=None) -> dg.RunRequest | None:
    """ONE run rendering every stale or missing partition of ``config``'s take of ``story`` (a
    :class:`~wan_pipeline.run_config.RunConfig`; default the story's own); None when all fresh."""
    plan = stale_plan(story, status_for(instance, story, config))
    if plan.empty:
        return None
    run_tags = config.tags() if config is not None else {}
    take = run_tags.get(TAKE_TAG, "")
    return dg.RunRequest(
        job_name=render_job_name(story.id),
        run_key=f"{story.id}/{take}" if take else story.id,  # one per story and take in a tick (Dagster needs keys for several)
        asset_selection=[dg.AssetKey([story.id, name]) for name in plan.assets],
        tags={**run_tags, **plan.tags(story.scene_ids), STORY_TAG: story.id, "wan_pipeline/reason": reason},
    )


def nightly_schedule_name(story_id: str) -> str:
    return f"nightly_render_{story_id}"


def build_nightly_schedule(loaded_story: Story, job=None) -> dg.ScheduleDefinition:
    """``nightly_render_<story>``: ONE run of the story's stale or missing partitions on its own
    ``<story>_render`` job (stories differ in partitions, so each has its schedule); ``job``: that
    job when the caller already built it (a code location holds one definition per job name)."""

    @dg.schedule(
        name=nightly_schedule_name(loaded_story.id),
        cron_schedule=os.environ.get("WAN_PIPELINE_NIGHTLY_CRON", "0 2 * * *"),
        execution_timezone=os.environ.get("WAN_PIPELINE_TIMEZONE", "UTC"),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        target=job if job is not None else render_job(loaded_story),
        description=f"Renders every stale or missing partition of every take of {loaded_story.title or loaded_story.id} (one run per take).",
    )
    def nightly_render(context: dg.ScheduleEvaluationContext):
        try:
            story = current_story(loaded_story)
            observe_fingerprints(context.instance, story)
        except InputError as exc:
            context.log.error(f"story not rendered: {exc}")
            return dg.SkipReason(f"{loaded_story.id}: {exc}")
        requests = []
        for config in known_takes(context.instance, story).values():
            request = stale_run_request(context.instance, story, "nightly", config)
            if request is not None:
                requests.append(request)
        return requests or dg.SkipReason(f"{story.id}: every partition of every take is fresh")

    return nightly_render


def build_nightly_schedules(loaded: list[Story], jobs: dict | None = None) -> list[dg.ScheduleDefinition]:
    """One nightly schedule per loaded story (``jobs``: story id → its render job, if built)."""
    return [build_nightly_schedule(story, (jobs or {}).get(story.id)) for story in loaded]
