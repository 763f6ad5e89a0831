"""Rendering a story from the command line: plan the runs, materialize them on the instance.

``wan-pipeline render`` is a thin shell over :func:`render_story`: the preset is resolved once
(:class:`~wan_pipeline.run_config.RunConfig`) and its content travels in every run's tags; the
assets run exactly as from the Dagster UI, on the storage root's instance, so runs,
materializations and telemetry show up there. With one device slot a full render is ONE run (every
stage over the whole scene range, the film and the render report): one resource lifecycle, so
post-processing weights load once. With N slots (``WAN_PIPELINE_DEVICES``) the scenes are cut into
N contiguous ranges and each range is its own run, the runs of a phase at the same time in their
own processes (:func:`plan_parallel`): a run over a partition range has ONE step per asset (a
single-run backfill), so a multiprocess executor inside one run would not spread scenes; runs per
range do, each still loading its models once. The pre-render check runs once, before the first
run, reading weight files' tensor shapes only, and the runs are tagged so their steps skip it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.executors import celery_enabled
from assets.recovery import BAD_INPUT_KEY
from wan_pipeline import collector, interrupts, progress
from wan_pipeline.errors import InputError
from wan_pipeline.fingerprint import REPORT
from wan_pipeline.preflight import check_preset, check_story
from wan_pipeline.run_config import CHECKED_TAG, RunConfig
from wan_pipeline.stages import STAGES
from wan_pipeline.story import Story


@dataclass
class RenderOutcome:
    """How a render ended: ``ok``; on failure the message and whether the cause was bad input."""

    ok: bool
    message: str = ""
    bad_input: bool = False
    run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedRun:
    """One Dagster run of a render: a label, the asset selection, its tags; ``needs_all_scenes``:
    launched only once every scene's last per-scene output exists (the film after a subset)."""

    label: str
    selection: dg.AssetSelection
    tags: dict
    needs_all_scenes: bool = False
    stages: tuple[str, ...] = ()


def _contiguous_ranges(ordered: list[str], chosen: set[str]) -> list[tuple[str, str]]:
    ranges, start, prev = [], None, None
    for sid in ordered:
        if sid in chosen:
            start = start or sid
            prev = sid
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return ranges


def range_tags(start: str, end: str) -> dict:
    """The run tags of a partition range."""
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


def _story_selection(story: Story) -> dg.AssetSelection:
    keys = [[story.id, name] for name in STAGES.story_stages()] + [[story.id, REPORT]]
    return dg.AssetSelection.assets(*keys)


def plan_render(story: Story, config: RunConfig, scenes: list[str] | None = None) -> list[PlannedRun]:
    """The runs that render ``scenes`` (default: all) of ``story``.

    All scenes: one run over the whole range with every stage, the film and the report. A subset:
    first the keyframes their handoffs read that are not rendered yet, then one run per contiguous
    range of the chosen scenes, then the film and the report once every scene is rendered.
    """
    order = story.scene_ids
    chosen = set(scenes or order)
    per_scene = dg.AssetSelection.assets(*[[story.id, s] for s in STAGES.scene_stages()])
    if chosen == set(order):
        return [PlannedRun(f"all {len(order)} scenes and the film", per_scene | _story_selection(story), range_tags(order[0], order[-1]))]
    targets = {t.id for sid in chosen if (t := story.handoff_target(sid)) is not None} - chosen
    missing = {t for t in targets if not config.output("keyframe", t).is_file()}
    keyframe = dg.AssetSelection.assets([story.id, "keyframe"])
    runs = [PlannedRun(f"keyframe {a}..{b} (handoff targets)", keyframe, range_tags(a, b)) for a, b in _contiguous_ranges(order, missing)]
    runs += [PlannedRun(f"scenes {a}..{b}", per_scene, range_tags(a, b)) for a, b in _contiguous_ranges(order, chosen)]
    runs.append(PlannedRun("film", _story_selection(story), {}, needs_all_scenes=True))
    return runs


def _split(ids: list[str], parts: int) -> list[tuple[str, str]]:
    """``ids`` cut into ``parts`` contiguous ranges of near-equal length (first, last)."""
    parts = max(1, min(parts, len(ids)))
    size, extra = divmod(len(ids), parts)
    out, i = [], 0
    for k in range(parts):
        n = size + (1 if k < extra else 0)
        out.append((ids[i], ids[i + n - 1]))
        i += n
    return out


def split_at_cuts(story: Story, parts: int) -> list[tuple[str, str]]:
    """The story's scenes in ``parts`` contiguous ranges (first, last) of near-equal length, each
    boundary moved by up to a quarter of a range to the nearest scene that ends with a cut, so that
    no range's last clip hands off to (reads the keyframe of) the next range's first scene."""
    ids = story.scene_ids
    ranges = _split(ids, parts)
    ends = [ids.index(last) for _, last in ranges[:-1]]  # index of each range's last scene
    reach = max(0, len(ids) // max(1, len(ranges)) // 4)
    lower = 0
    for k, end in enumerate(ends):
        upper = (ends[k + 1] if k + 1 < len(ends) else len(ids) - 1) - 1  # keep every range non-empty
        for shift in sorted(range(-reach, reach + 1), key=abs):
            j = end + shift
            if lower <= j <= upper and story.handoff_target(ids[j]) is None:
                ends[k] = j
                break
        lower = ends[k] + 1
    starts = [0] + [e + 1 for e in ends]
    return [(ids[a], ids[b]) for a, b in zip(starts, ends + [len(ids) - 1])]


def plan_parallel(story: Story, slots: int) -> list[list[PlannedRun]]:
    """A full render of ``story`` over ``slots`` device slots, as phases of runs that run at the
    same time: one run per contiguous scene range with every per-scene stage, then the film and the
    report. Ranges end at a cut where one is near (:func:`split_at_cuts`); where a range's last
    clip still hands off to the next range (FLF2V reads that scene's keyframe, which the other run
    makes), the keyframes come first, one run per range, before the other per-scene stages. One
    slot: the single run of :func:`plan_render`."""
    ranges = split_at_cuts(story, slots)
    stages = STAGES.scene_stages()
    film = [PlannedRun("film", _story_selection(story), {}, needs_all_scenes=True)]
    if all(story.handoff_target(last) is None for _, last in ranges[:-1]):
        every = dg.AssetSelection.assets(*[[story.id, s] for s in stages])
        return [[PlannedRun(f"scenes {a}..{b}", every, range_tags(a, b), stages=tuple(stages)) for a, b in ranges], film]
    first, *rest = stages
    head = dg.AssetSelection.assets([story.id, first])
    tail = dg.AssetSelection.assets(*[[story.id, s] for s in rest])
    return [
        [PlannedRun(f"{first} {a}..{b}", head, range_tags(a, b), stages=(first,)) for a, b in ranges],
        [PlannedRun(f"scenes {a}..{b}", tail, range_tags(a, b), stages=tuple(rest)) for a, b in ranges],
        film,
    ]


def _failure(result) -> tuple[str, bool]:
    lines, bad = [], False
    for ev in result.get_step_failure_events():
        data = ev.step_failure_data
        err = data.error
        cause = err
        while cause is not None and cause.cause is not None and "DagsterExecutionStepExecutionError" in (cause.cls_name or ""):
            cause = cause.cause
        meta = (data.user_failure_data.metadata if data.user_failure_data else None) or {}
        if BAD_INPUT_KEY in meta:
            bad = True
            msg = (data.user_failure_data.description or "").strip()
        else:
            msg = (cause.message if cause else str(err)).strip()
        lines.append(f"step {ev.step_key} failed: {msg}")
    if not lines:  # the run failed outside any step (start-up, the instance): say what Dagster said
        for ev in getattr(result, "all_events", []):
            error = getattr(ev.event_specific_data, "error", None)
            if ev.is_failure or error is not None:
                lines.append(f"{ev.event_type_value}: {ev.message or ''} {error.message.strip() if error else ''}".strip())
    return "\n".join(lines) or "the run failed (see the Dagster UI for its logs)", bad


def _materialize(
    instance, story: Story, runs: list[PlannedRun], config: RunConfig, verbose: bool, with_checks: bool = False
) -> RenderOutcome:
    from assets.story_assets import build_story_assets
    from resources import default_resources

    assets = build_story_assets(story)
    if with_checks:
        from assets.checks import build_story_checks

        assets = [*assets, *build_story_checks(story)]
    resources = default_resources(config.layout.root)
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO" if verbose else "WARNING"}}}}
    with collector.long_lived_frozen():
        return _materialize_runs(instance, story, runs, config, assets, resources, run_config)


def _materialize_runs(instance, story: Story, runs: list[PlannedRun], config: RunConfig, assets, resources, run_config) -> RenderOutcome:
    outcome = RenderOutcome(ok=True)
    last_scene_stage = STAGES.scene_stages()[-1]
    for run in runs:
        if run.needs_all_scenes:
            not_ready = [s for s in story.scene_ids if not config.output(last_scene_stage, s).is_file()]
            if not_ready:
                message = f"the film needs every scene; not rendered yet: {', '.join(not_ready)} (run without --scenes)"
                return RenderOutcome(False, message, False, outcome.run_ids)
        result = dg.materialize(
            assets,
            selection=run.selection,
            instance=instance,
            resources=resources,
            tags={**config.tags(), CHECKED_TAG: config.preset.content_sha, **run.tags},
            run_config=run_config,
            raise_on_error=False,
        )
        outcome.run_ids.append(result.run_id)
        _stop_if_interrupted(instance, result.run_id)
        if not result.success:
            message, bad = _failure(result)
            return RenderOutcome(False, f"render failed ({run.label}, run {result.run_id}):\n{message}", bad, outcome.run_ids)
    return outcome


def _stop_if_interrupted(instance: dg.DagsterInstance, run_id: str) -> None:
    """Ctrl-C / SIGTERM arrived during the run (:mod:`wan_pipeline.interrupts`): the run is
    marked canceled and :class:`~wan_pipeline.interrupts.Interrupted` stops the render here."""
    from assets.recovery import cancel_interrupted_run

    got = interrupts.received()
    if got:
        cancel_interrupted_run(instance, run_id, interrupts.Interrupted(got[0]).name)
        interrupts.raise_if_received()


# ---------------------------------------------------------------------------------------------
# several runs at once: one process per run (each run's steps in-process, its own engine cache)

_events = None  # in a worker process: the queue its progress events go to


class _QueueReporter:
    """A progress reporter in a worker process that sends its events to the launching process."""

    def stage_started(self, stage, scene):
        _events.put(("stage_started", (stage, scene)))

    def stage_step(self, stage, scene, done, total):
        _events.put(("stage_step", (stage, scene, done, total)))

    def stage_finished(self, stage, scene, record):
        _events.put(("stage_finished", (stage, scene, record)))


def _worker_init(events) -> None:
    global _events
    _events = events
    progress.set_reporter(_QueueReporter())
    import assets.story_assets  # noqa: F401  the import (dagster, the engines) once per worker, at start


def _use_threads(threads: int | None) -> None:
    """CPU slots share the cores: a worker's thread pools (OpenCV, the video codecs, torch) get
    its run's share of them; 0: every core (a run alone in its phase, as the film's); None: as
    they are (GPU slots)."""
    if threads is None:
        return
    import cv2

    from wan_pipeline.media.video_io import set_codec_threads

    cores = threads or os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(cores)  # torch, imported later if at all, sizes its pool from this
    cv2.setNumThreads(threads or -1)  # -1: OpenCV's default
    set_codec_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(cores)


def _worker_materialize(story: Story, run: PlannedRun, config: RunConfig, verbose: bool, threads: int | None) -> RenderOutcome:
    _use_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if celery_enabled():
            return _execute_on_celery(story, run, config)
        return _materialize(init_instance(config), story, [run], config, verbose)


def _execute_on_celery(story: Story, run: PlannedRun, config: RunConfig) -> RenderOutcome:
    """One planned run through the code location's job with the Celery executor: its steps go to
    the Celery workers (any machine), this process waits for them."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from wan_pipeline.preset import project_root

    repo = ReconstructableRepository.for_module("assets.definitions", "defs", working_directory=str(project_root()))
    job = repo.get_reconstructable_job(f"{story.id}_scenes" if run.stages else f"{story.id}_film")
    keys = [dg.AssetKey([story.id, s]) for s in run.stages] or None
    tags = {**config.tags(), CHECKED_TAG: config.preset.content_sha, **run.tags}
    with dg.execute_job(job, dg.DagsterInstance.get(), tags=tags, asset_selection=keys) as result:
        if result.success:
            return RenderOutcome(True, run_ids=[result.run_id])
        message, bad = _failure(result)
        return RenderOutcome(False, f"render failed ({run.label}, run {result.run_id}):\n{message}", bad, [result.run_id])


def check_celery_story(story: Story) -> None:
    """The Celery workers load the code location's stories: raise :class:`InputError` naming the
    folder when ``story`` is not one of them."""
    from assets.definitions import stories_dir

    if story.source_path is None or Path(story.source_path).resolve().parent != stories_dir():
        raise InputError(
            story.source_path,
            f"the Celery workers render the code location's stories: put the story in {stories_dir()} (WAN_PIPELINE_STORIES)",
        )


def _relay(events, reporter) -> None:
    while (item := events.get()) is not None:
        name, args = item
        getattr(reporter, name)(*args)


class _WorkerPool:
    """The worker processes of a render spread over several device slots: ``width`` processes,
    spawned (a clean interpreter, no forked torch or database state) and started as soon as the
    pool is entered, so that their import of Dagster and the engines overlaps the render's own
    set-up (pre-render check, instance); they serve every phase. ``slots``: the device slots, for
    the CPU thread share of each run."""

    def __init__(self, width: int, slots: tuple[str, ...]):
        self.width, self.slots = width, slots

    def __enter__(self) -> _WorkerPool:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        self.events = ctx.Queue()
        self.executor = ProcessPoolExecutor(self.width, mp_context=ctx, initializer=_worker_init, initargs=(self.events,))
        for _ in range(self.width):  # start every worker now (spawned workers start on the first submit)
            self.executor.submit(os.getpid)
        return self

    def __exit__(self, *exc) -> None:
        self.executor.shutdown(cancel_futures=True)

    def threads(self, runs_at_once: int) -> int | None:
        """Threads per run when ``runs_at_once`` runs share this machine's cores: 0 (every core)
        for a run alone; None for GPU slots (see :func:`_use_threads`)."""
        if not all(s == "cpu" for s in self.slots):
            return None
        return 0 if runs_at_once <= 1 else max(1, (os.cpu_count() or 1) // runs_at_once)


def _materialize_parallel(
    story: Story, phases: list[list[PlannedRun]], config: RunConfig, pool: _WorkerPool, verbose: bool
) -> RenderOutcome:
    """Run each phase's runs at the same time, one worker process of ``pool`` per run, phase after
    phase; the first failed run ends the render. The stages of all runs lease the device slots, so
    never two share one."""
    import threading

    from assets.story_assets import GPU_POOL

    # the pool's row in the instance, made here once: two runs starting at the same moment would
    # both insert it, and on PostgreSQL the loser's transaction fails and fails its run (Dagster
    # 1.13's insert-then-update runs in one transaction, so only insert when the row is missing)
    instance = dg.DagsterInstance.get()
    if GPU_POOL not in instance.event_log_storage.get_concurrency_keys():
        instance.event_log_storage.initialize_concurrency_limit_to_default(GPU_POOL)
    relay = threading.Thread(target=_relay, args=(pool.events, progress.reporter()), daemon=True)
    relay.start()
    outcome = RenderOutcome(ok=True)
    try:
        for phase in phases:
            # every run in a worker, the film's too: the workers have imported everything already
            threads = pool.threads(len(phase))
            futures = [pool.executor.submit(_worker_materialize, story, run, config, verbose, threads) for run in phase]
            results = [f.result() for f in futures]
            for result in results:
                outcome.run_ids.extend(result.run_ids)
            failed = [r for r in results if not r.ok]
            if failed:
                return RenderOutcome(False, "\n".join(r.message for r in failed), any(r.bad_input for r in failed), outcome.run_ids)
    finally:
        pool.events.put(None)
        relay.join(timeout=5)
    return outcome


def render_slots(config: RunConfig) -> tuple[str, ...]:
    """The device slots the scenes are spread over: this machine's for ``config``'s preset
    (``WAN_PIPELINE_DEVICES``); with the Celery executor, ``WAN_PIPELINE_CELERY_SLOTS`` (the
    slots of all workers together; default 2)."""
    from wan_pipeline.device_lock import resolve_slots

    if celery_enabled():
        return ("celery",) * max(1, int(os.environ.get("WAN_PIPELINE_CELERY_SLOTS", "2")))
    return resolve_slots(None, config.device)


def init_instance(config: RunConfig) -> dg.DagsterInstance:
    """The storage root's Dagster instance (``DAGSTER_HOME``, set to the storage root unless set),
    created safely when several commands start at once (:func:`assets.instance.storage_instance`)."""
    from assets.instance import storage_instance

    return storage_instance(config.layout)


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def story_render_lock(config: RunConfig, story: Story, announce=_to_stderr) -> Iterator[bool]:
    """One CLI render of a story at a time per storage root (``locks/render-<story>.lock``, a
    cross-process file lock the OS frees if its holder dies); yields whether it had to wait for
    another render of the story. ``announce`` gets one line when it waits. Another story's
    render does not wait: the device lock and the ``gpu`` pool share the device between them."""
    from filelock import FileLock, Timeout

    path = config.layout.locks / f"render-{story.id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), thread_local=False, is_singleton=False)
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        announce(
            f"another render of {story.id!r} is running on {config.layout.root}: waiting for it, then rendering only what it left stale or missing"
        )
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()


def runs_after_waiting(instance: dg.DagsterInstance, story: Story, config: RunConfig) -> list[PlannedRun]:
    """The runs of a full render that waited for another render of the story: only what is
    stale or missing for this render's preset (none when the other render left everything fresh
    with the same preset), so the same work is never done twice."""
    from assets.status import status_for
    from wan_pipeline.status import stale_plan

    plan = stale_plan(story, status_for(instance, story, config))
    if plan.empty:
        return []
    selection = dg.AssetSelection.assets(*[[story.id, st] for st in plan.stages])
    return [PlannedRun(plan.describe(), selection, plan.tags(story.scene_ids))]


def _is_story_preset(story: Story, config: RunConfig) -> bool:
    from wan_pipeline.preset import load_preset

    try:
        return load_preset(story.preset).content_sha == config.preset.content_sha
    except InputError:
        return False


def render_story(story: Story, config: RunConfig, reporter, scenes: list[str] | None = None, verbose: bool = False) -> RenderOutcome:
    """Render ``scenes`` (default: all) of ``story`` with ``config``; ``reporter`` receives the
    stage progress (:mod:`wan_pipeline.progress`). Raises :class:`InputError` for unknown scene ids."""
    if scenes is not None:
        unknown = [s for s in scenes if s not in story.scene_ids]
        if unknown:
            raise InputError(story.source_path, f"--scenes: unknown scene id(s) {', '.join(unknown)}; scenes: {', '.join(story.scene_ids)}")
    slots = render_slots(config)
    spread = (len(slots) > 1 or celery_enabled()) and scenes is None and len(story.scene_ids) > 1
    if spread and celery_enabled():
        check_celery_story(story)
    phases = plan_parallel(story, len(slots)) if spread else []
    width = max((len(phase) for phase in phases), default=0)
    with _WorkerPool(width, slots) if spread else contextlib.nullcontext() as pool, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = config.engine_context()
        check_preset(config.preset, ctx=ctx)  # once, before any run: every stage, no weights loaded
        check_story(story, config.preset, ctx=ctx, scene_ids=scenes)
        instance = init_instance(config)
        with story_render_lock(config, story) as waited:
            runs = runs_after_waiting(instance, story, config) if waited and scenes is None else None
            if waited and not runs:
                _to_stderr(f"{story.id}: the other render left every partition fresh; nothing to render")
            progress.set_reporter(reporter)
            try:
                if runs is None and spread:
                    outcome = _materialize_parallel(story, phases, config, pool, verbose)
                else:
                    outcome = _materialize(
                        instance, story, runs if runs is not None else plan_render(story, config, scenes), config, verbose
                    )
            finally:
                progress.set_reporter(None)
            if outcome.ok and (scenes is None or set(scenes) == set(story.scene_ids)):
                from assets.status import observe_fingerprints

                # the story sensor's baseline: these fingerprints are rendered (a never-observed scene
                # rendered with the story's own preset has it in its keyframe's record already)
                observe_fingerprints(instance, story, only_outdated=_is_story_preset(story, config))
    return outcome


def render_stale(story: Story, config: RunConfig, reporter, verbose: bool = False, announce=print) -> RenderOutcome | None:
    """ONE run of every stale or missing partition of ``story`` (and the film); None when
    everything is fresh. ``announce`` gets the plan in words before the run starts."""
    from assets.status import observe_fingerprints, status_for
    from wan_pipeline.status import stale_plan

    ctx = config.engine_context()
    check_preset(config.preset, ctx=ctx)
    check_story(story, config.preset, ctx=ctx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance = init_instance(config)
        with story_render_lock(config, story, announce):
            observe_fingerprints(instance, story)
            plan = stale_plan(story, status_for(instance, story, config))
            if plan.empty:
                return None
            announce(f"rendering the stale or missing partitions of {story.id!r}, take {config.take!r}: {plan.describe()}")
            selection = dg.AssetSelection.assets(*[[story.id, name] for name in plan.assets])
            progress.set_reporter(reporter)
            try:
                run = PlannedRun(plan.describe(), selection, plan.tags(story.scene_ids))
                return _materialize(instance, story, [run], config, verbose, with_checks=True)
            finally:
                progress.set_reporter(None)
