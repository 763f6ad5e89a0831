"""Retries and recovery of killed runs.

* ``STAGE_RETRY_POLICY``: every stage asset retries a failed step twice, after 10 s then 20 s
  (exponential backoff, jittered), requested by :func:`stage_step`; an interrupt is never retried:
  it cancels the run (:func:`cancel_on_interrupt`). Out-of-memory errors are handled before that,
  inside the step, by rebuilding the engine with a stronger memory strategy
  (``resources.engine_cache``).
* A run whose process died (SIGKILL, the kernel's OOM killer) stays ``STARTED`` and keeps its
  ``gpu`` pool slot: the default run launcher has no health check (../shared/DESIGN.md).
  :func:`recover_killed_runs` finds such runs (no process left of those that logged its events)
  and marks them failed and frees their slots; the ``recover_killed_runs`` sensor does it every
  30 s while ``dagster dev`` runs, ``wan-pipeline recover`` on demand. The device file lock needs
  nothing: the OS drops ``flock`` when its process dies.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import dagster as dg
import psutil
from dagster import DagsterEventType, DagsterRunStatus

BAD_INPUT_KEY = "wan_pipeline/bad_input"
"""Metadata key on a step failure caused by bad input (the CLI exits 2 for it)."""
STAGE_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@contextlib.contextmanager
def fail_fast_on_bad_input():
    """Bad input (:class:`~wan_pipeline.errors.InputError`: a broken image, a missing upstream
    output, a wrong preset field) fails the step at once, without the retry policy's attempts:
    retrying cannot fix it, the message says what will."""
    from wan_pipeline.errors import InputError

    try:
        yield
    except InputError as exc:
        raise dg.Failure(description=str(exc), metadata={BAD_INPUT_KEY: True}, allow_retries=False) from exc


def _mark_canceling(context, exc: BaseException) -> None:
    """Mark the run CANCELING, so that Dagster ends it CANCELED (not failed) once the interrupt
    leaves the step; a run already canceling (Terminate in the UI) is left as it is."""
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and run.status not in (DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED):
        context.instance.report_run_canceling(run, message=f"interrupted ({type(exc).__name__} {exc}): canceling the run")


def cancel_on_interrupt(fn):
    """Decorator for asset and check functions (``context`` first, signature kept): an interrupt
    (Ctrl-C, SIGTERM, Terminate) marks the run canceling and goes on up, so the run stops at once
    and ends CANCELED."""

    @functools.wraps(fn)
    def wrapper(context, *args, **kwargs):
        try:
            return fn(context, *args, **kwargs)
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError) as exc:
            _mark_canceling(context, exc)
            raise

    return wrapper


def cancel_interrupted_run(instance: dg.DagsterInstance, run_id: str, signal_name: str) -> None:
    """After an in-process run that a signal interrupted: mark it CANCELED unless it succeeded
    (Dagster ends a run FAILED when the interrupt came between two steps, before any step could
    mark it canceling) and free any concurrency slot it still holds."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED):
        return
    instance.report_run_canceled(run, message=f"interrupted by {signal_name}: the render was stopped")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def stage_step(fn):
    """Decorator for the stage assets' functions (``context`` first, signature kept): bad input
    fails at once (:func:`fail_fast_on_bad_input`), an interrupt cancels the run
    (:func:`cancel_on_interrupt`), any other error retries the step by ``STAGE_RETRY_POLICY``.

    The retries are requested here (``RetryRequested``) rather than by a ``retry_policy`` on the
    asset: Dagster turns an interrupt inside a step with a retry policy into a retry, so Ctrl-C
    would re-run the stage instead of stopping the render."""

    @functools.wraps(fn)
    @cancel_on_interrupt
    def wrapper(context, *args, **kwargs):
        try:
            with fail_fast_on_bad_input():
                return fn(context, *args, **kwargs)
        except (dg.Failure, dg.RetryRequested, dg.DagsterError):
            raise
        except Exception as exc:
            raise dg.RetryRequested(
                max_retries=STAGE_RETRY_POLICY.max_retries,
                seconds_to_wait=STAGE_RETRY_POLICY.calculate_delay(context.retry_number + 1),
            ) from exc

    return wrapper


_PID_EVENTS = {DagsterEventType.RUN_START, DagsterEventType.STEP_START, DagsterEventType.ENGINE_EVENT}


@dataclass
class RecoveredRun:
    run_id: str
    job_name: str
    status_before: str
    pids: list[int]


def _process_alive(pid: int, not_after: float | None) -> bool:
    """Whether ``pid`` is a live process created no later than ``not_after`` (epoch seconds; a
    later one is a different process that reused the id)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not_after is None or proc.create_time() <= not_after + 1.0
    except psutil.Error:
        return False


def run_pids(instance: dg.DagsterInstance, run_id: str) -> tuple[list[int], float | None]:
    """Process ids that logged events of the run (run start, steps, engine events) and the
    timestamp of its first such event."""
    pids, first = [], None
    for entry in instance.all_logs(run_id, of_type=_PID_EVENTS):
        ev = entry.dagster_event
        if ev is None or ev.pid is None:
            continue
        first = entry.timestamp if first is None else min(first, entry.timestamp)
        if ev.pid not in pids:
            pids.append(ev.pid)
    return pids, first


def find_killed_runs(instance: dg.DagsterInstance) -> list[RecoveredRun]:
    """Runs STARTED or CANCELING whose every known process is gone. Runs that logged no process
    id yet are left alone."""
    found = []
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]))
    for run in runs:
        pids, first = run_pids(instance, run.run_id)
        if pids and not any(_process_alive(pid, first) for pid in pids):
            found.append(RecoveredRun(run.run_id, run.job_name, run.status.value, pids))
    return found


def recover_killed_runs(instance: dg.DagsterInstance, log=None) -> list[RecoveredRun]:
    """Mark killed runs failed (CANCELING ones canceled) and free their concurrency slots.

    Returns the runs recovered. ``log``: a callable for one line per run.
    """
    recovered = find_killed_runs(instance)
    for r in recovered:
        run = instance.get_run_by_id(r.run_id)
        message = f"run {r.run_id} ({r.job_name}) was {r.status_before} but its process {', '.join(map(str, r.pids))} is gone (killed?): marked failed and its pool slots freed"
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message=message)
        else:
            instance.report_run_failed(run, message=message)
        instance.event_log_storage.free_concurrency_slots_for_run(r.run_id)
        if log is not None:
            log(message)
    return recovered


@dg.sensor(
    name="recover_killed_runs",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: runs left STARTED by a killed process are marked failed and their gpu pool slots freed.",
)
def recover_killed_runs_sensor(context: dg.SensorEvaluationContext):
    recovered = recover_killed_runs(context.instance, log=context.log.warning)
    return dg.SkipReason(f"recovered {len(recovered)} killed run(s)" if recovered else "no killed runs")
