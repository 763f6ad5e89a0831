"""The story sensor: a story file edited in ``stories/`` re-renders exactly what the edit affects.

Every tick (default 15 s) it reads the story files whose bytes changed since the last tick:

* a file that does not validate: the validation message goes to the sensor's log; nothing renders;
* a story whose scene list or transitions differ from the loaded code location (scenes added,
  removed, reordered; a new story): its partitions cannot change without a reload, so the sensor
  logs ``RELOAD NEEDED …`` once, tries the webserver's ``reloadRepositoryLocation`` mutation
  (``wan-pipeline reload`` does the same by hand) and, once reloaded, renders the new scenes;
* otherwise: each scene's fingerprint against the last observed one (``scene_spec`` data
  version; for a never-observed scene the one its keyframe was rendered from in the story's own
  take; a scene never rendered counts as changed). Changed scenes are observed with their new
  fingerprints, and ONE run per take is requested for what they affect
  (:func:`wan_pipeline.fingerprint.affected_by_edit`, the film and the render report included):
  the story's own take and every other take the instance has runs of, each with the preset it
  was last rendered with (its run tags), tagged ``wan_pipeline/story``, ``wan_pipeline/take`` and
  ``wan_pipeline/changed_scenes``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg

from assets.jobs import render_job, render_job_name
from assets.status import InstanceRecords, known_takes, observations, observed_fingerprints, story_config
from wan_pipeline.errors import InputError, WanPipelineError
from wan_pipeline.fingerprint import affected_by_edit, changed_scenes, current_fingerprints, structure
from wan_pipeline.story import Story, load_story, story_files

CHANGED_TAG = "wan_pipeline/changed_scenes"
STORY_TAG = "wan_pipeline/story"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def baseline_fingerprints(instance: dg.DagsterInstance, story: Story) -> dict[str, str | None]:
    """Per scene, the fingerprint last seen: the observed ``scene_spec`` data version, else the
    one its keyframe was rendered from, else ``"rendered"`` (rendered before fingerprints were
    recorded: not re-rendered) or None (never rendered: render it)."""
    observed = observed_fingerprints(instance, story)
    records = InstanceRecords(instance, story.id, story_config(story).take)
    out = {}
    for sid in story.scene_ids:
        if observed[sid] is not None:
            out[sid] = observed[sid]
            continue
        rendered = records.rendered("keyframe", sid)
        out[sid] = None if rendered is None else (rendered.fingerprint or "rendered")
    return out


def _loaded_digest(loaded: list[Story]) -> str:
    return hashlib.sha256(json.dumps([[s.id, structure(s)] for s in loaded]).encode()).hexdigest()[:12]


def run_request_for(story: Story, changed: list[str], config=None) -> dg.RunRequest | None:
    """ONE run rendering what editing ``changed`` affects in ``config``'s take (a
    :class:`~wan_pipeline.run_config.RunConfig`; default the story's own), or None when nothing."""
    plan = affected_by_edit(story, changed)
    if plan.empty:
        return None
    config = config or story_config(story)
    tags = {**config.tags(), **plan.tags(story.scene_ids), STORY_TAG: story.id, CHANGED_TAG: ",".join(changed)}
    return dg.RunRequest(
        run_key=f"{story.id}:{hashlib.sha256(json.dumps(sorted(tags.items())).encode()).hexdigest()[:12]}",
        job_name=render_job_name(story.id),
        asset_selection=[dg.AssetKey([story.id, name]) for name in plan.assets],
        tags=tags,
    )


def _request_reload(context, message: str) -> None:
    from wan_pipeline.webserver import reload_code_locations

    context.log.warning(
        f"RELOAD NEEDED: {message}. Reloading the code location (or run `wan-pipeline reload`, or Deployment → Reload in the UI)."
    )
    try:
        names = reload_code_locations(timeout_s=30)
        context.log.info(f"reloaded code location(s) {', '.join(names)}; the new scenes render at the next tick")
    except WanPipelineError as exc:
        context.log.warning(f"automatic reload not possible: {exc}")


def build_story_sensor(loaded: list[Story], folder, minimum_interval_seconds: int = 15, jobs: list | None = None) -> dg.SensorDefinition:
    """The ``story_changes`` sensor over ``folder`` for the stories the code location ``loaded``.

    It targets each loaded story's own ``<story>_render`` job (:mod:`assets.jobs`) and names it in
    every run request: stories with different scene lists have different partitions, which no
    single job (nor one asset-selection target) may mix. ``jobs``: those jobs when the caller
    already built them (a code location holds one definition per job name)."""
    loaded_by_id = {s.id: s for s in loaded}

    @dg.sensor(
        name="story_changes",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=(jobs if jobs is not None else [render_job(s) for s in loaded]) or None,
        description=f"Watches {folder}: re-renders exactly the partitions a story edit affects, in one run per story.",
    )
    def story_changes(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        new_cursor, requests, events = {}, [], []
        for path in story_files(Path(folder)):
            # a file is looked at again when its bytes or the loaded partitions change (a reload)
            key = str(path)
            seen = _sha(path) + "|" + _loaded_digest(loaded)
            new_cursor[key] = seen
            if cursor.get(key) == seen:
                continue
            try:
                story = load_story(path)
                fingerprints = current_fingerprints(story)
            except InputError as exc:
                context.log.error(f"story not rendered: {exc}")
                continue
            current = loaded_by_id.get(story.id)
            if current is None or structure(current) != structure(story):
                was = "not loaded" if current is None else ", ".join(f"{i}:{t}" for i, t in structure(current))
                now = ", ".join(f"{i}:{t}" for i, t in structure(story))
                _request_reload(context, f"{path}: the scenes of story {story.id!r} are now {now} (code location: {was})")
                continue
            changed = changed_scenes(baseline_fingerprints(context.instance, story), fingerprints)
            if not changed:
                continue
            events.extend(observations(story, {s: fingerprints[s] for s in changed}))
            takes = known_takes(context.instance, story)
            context.log.info(
                f"{story.id}: scenes {', '.join(changed)} changed → {affected_by_edit(story, changed).describe()} "
                f"in take(s) {', '.join(takes)}"
            )
            for config in takes.values():
                request = run_request_for(story, changed, config)
                if request is not None:
                    requests.append(request)
        return dg.SensorResult(run_requests=requests, asset_events=events, cursor=json.dumps(new_cursor, sort_keys=True))

    return story_changes
