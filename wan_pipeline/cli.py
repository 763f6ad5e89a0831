"""``wan-pipeline``: validate and render stories through Dagster, and the per-stage tools.

The only module of the engine library that imports Dagster: ``render`` materializes the story's
assets on the instance of the storage root (``storage/`` or ``$WAN_PIPELINE_STORAGE``), exactly as
the Dagster UI would, so runs, materializations and telemetry show up there.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from wan_pipeline.errors import InputError, WanPipelineError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _err(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# validate


def cmd_validate(args) -> int:
    from wan_pipeline.preset import load_preset
    from wan_pipeline.story import load_story

    story = load_story(args.story)
    load_preset(args.preset or story.preset)
    print(
        f"ok: {args.story}: story {story.id!r}, {len(story.scenes)} scenes ({', '.join(story.scene_ids)}), preset {args.preset or story.preset!r}"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# render


class _ConsoleReporter:
    """Progress of a render on stderr: a line per finished stage and scene, and bars on a terminal."""

    def __init__(self, scenes: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.scenes = scenes
        self.progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.finished: dict[str, int] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def _task(self, stage: str) -> int:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=1 if stage == "film" else self.scenes)
        return self.tasks[stage]

    def stage_started(self, stage, scene):
        self._task(stage)

    def stage_step(self, stage, scene, done, total):
        # within a stage (denoising steps, frames): move the bar by the fraction of this scene
        task = self._task(stage)
        finished = self.finished.get(stage, 0)
        if total:
            self.progress.update(task, completed=finished + min(done, total) / total, description=f"{stage} {scene or ''}".strip()[:13])

    def stage_finished(self, stage, scene, record):
        self.finished[stage] = self.finished.get(stage, 0) + 1
        self.progress.update(self._task(stage), completed=self.finished[stage], description=stage)
        where = f"{stage}[{scene}]" if scene else stage
        fps = f" @ {record['fps']:g} fps" if record.get("fps") else ""
        self.console.print(
            f"  ✓ {where:<28} {record['frames']:>4} frame(s) {record['width']}x{record['height']}{fps}  {record['duration_s']:.2f}s",
            highlight=False,
            markup=False,
        )


def _failure_message(result) -> str:
    lines = []
    for ev in result.get_step_failure_events():
        err = ev.step_failure_data.error
        cause = err
        while cause is not None and cause.cause is not None and "DagsterExecutionStepExecutionError" in (cause.cls_name or ""):
            cause = cause.cause
        msg = (cause.message if cause else str(err)).strip()
        lines.append(f"step {ev.step_key} failed: {msg}")
    return "\n".join(lines) or "the run failed (see the Dagster UI for its logs)"


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


def cmd_render(args) -> int:
    import dagster as dg

    from assets.render_context import PRESET_TAG
    from assets.story_assets import build_story_assets
    from resources import default_resources
    from wan_pipeline import progress
    from wan_pipeline.preflight import check_preset
    from wan_pipeline.preset import load_preset
    from wan_pipeline.storage import StorageLayout
    from wan_pipeline.story import load_story

    story = load_story(args.story)
    preset = load_preset(args.preset or story.preset)
    check_preset(preset)  # every stage ready before the first expensive step
    layout = StorageLayout.default()
    os.environ.setdefault("DAGSTER_HOME", str(layout.init()))
    if getattr(args, "stale", False):
        return _render_stale(args, story, preset)
    scenes = story.scene_ids
    if args.scenes:
        chosen = [s.strip() for s in args.scenes.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in scenes]
        if unknown:
            raise InputError(args.story, f"--scenes: unknown scene id(s) {', '.join(unknown)}; scenes: {', '.join(scenes)}")
        selected = set(chosen)
    else:
        selected = set(scenes)

    assets = build_story_assets(story)
    resources = default_resources()
    per_scene = dg.AssetSelection.groups(story.id) - dg.AssetSelection.assets([story.id, "film"])
    keyframe_only = dg.AssetSelection.assets([story.id, "keyframe"])
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO" if args.verbose else "WARNING"}}}}
    base_tags = {PRESET_TAG: preset.name, "wan_pipeline/story": story.id}

    plan: list[tuple[str, object, dict]] = []
    targets = {t.id for sid in selected if (t := story.handoff_target(sid)) is not None} - selected
    missing_targets = {t for t in targets if not layout.output(story.id, t, "keyframe").is_file()}
    for start, end in _contiguous_ranges(scenes, missing_targets):
        plan.append((f"keyframe {start}..{end} (handoff targets)", keyframe_only, _range_tags(start, end)))
    for start, end in _contiguous_ranges(scenes, selected):
        plan.append((f"scenes {start}..{end}", per_scene, _range_tags(start, end)))
    plan.append(("film", dg.AssetSelection.assets([story.id, "film"], [story.id, "render_report"]), {}))

    print(
        f"rendering {story.id!r} ({len(selected)} of {len(scenes)} scenes) with preset {preset.name!r} into {layout.story_dir(story.id)}",
        file=sys.stderr,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance = dg.DagsterInstance.get()
        with _ConsoleReporter(len(selected)) as reporter:
            progress.set_reporter(reporter)
            try:
                for label, selection, tags in plan:
                    if label == "film":
                        not_ready = [s for s in scenes if not layout.output(story.id, s, "upscaled").is_file()]
                        if not_ready:
                            raise WanPipelineError(
                                f"the film needs every scene; not rendered yet: {', '.join(not_ready)} (run without --scenes)"
                            )
                    result = dg.materialize(
                        assets,
                        selection=selection,
                        instance=instance,
                        resources=resources,
                        tags={**base_tags, **tags},
                        run_config=run_config,
                        raise_on_error=False,
                    )
                    if not result.success:
                        _err(f"render failed ({label}, run {result.run_id}):\n{_failure_message(result)}")
                        return EXIT_FAILED
                if selected == set(scenes):  # the story sensor's baseline: these fingerprints are rendered
                    from assets.status import observe_fingerprints

                    observe_fingerprints(instance, story)
            finally:
                progress.set_reporter(None)
    print(str(layout.film(story.id)))
    return EXIT_OK


def _instance():
    import dagster as dg

    from wan_pipeline.storage import StorageLayout

    os.environ.setdefault("DAGSTER_HOME", str(StorageLayout.default().init()))
    return dg.DagsterInstance.get()


def _render_stale(args, story, preset) -> int:
    """``render --stale``: ONE run of every stale or missing partition (and the film)."""
    import dagster as dg

    from assets.checks import build_story_checks
    from assets.render_context import PRESET_TAG
    from assets.status import observe_fingerprints, status_for
    from assets.story_assets import build_story_assets
    from resources import default_resources
    from wan_pipeline import progress
    from wan_pipeline.status import stale_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance = _instance()
        observe_fingerprints(instance, story)
        plan = stale_plan(story, status_for(instance, story))
        if plan.empty:
            print(f"{story.id}: everything is fresh, nothing to render", file=sys.stderr)
            print(str(_film_path(story.id)))
            return EXIT_OK
        print(f"rendering the stale or missing partitions of {story.id!r}: {plan.describe()}", file=sys.stderr)
        selection = dg.AssetSelection.assets(*[[story.id, st] for st in plan.stages])
        run_config = {"loggers": {"console": {"config": {"log_level": "INFO" if args.verbose else "WARNING"}}}}
        with _ConsoleReporter(len(plan.all_scenes()) or 1) as reporter:
            progress.set_reporter(reporter)
            try:
                result = dg.materialize(
                    [*build_story_assets(story), *build_story_checks(story)],
                    selection=selection,
                    instance=instance,
                    resources=default_resources(),
                    tags={PRESET_TAG: preset.name, **plan.tags(story.scene_ids)},
                    run_config=run_config,
                    raise_on_error=False,
                )
            finally:
                progress.set_reporter(None)
        if not result.success:
            _err(f"render failed (run {result.run_id}):\n{_failure_message(result)}")
            return EXIT_FAILED
    print(str(_film_path(story.id)))
    return EXIT_OK


def _film_path(story_id: str):
    from wan_pipeline.storage import StorageLayout

    return StorageLayout.default().film(story_id)


# ---------------------------------------------------------------------------------------------
# status, reload, recover


def cmd_status(args) -> int:
    from assets.status import status_for
    from wan_pipeline.status import MATERIALIZED, format_status
    from wan_pipeline.story import load_story

    story = load_story(args.story)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        statuses = status_for(_instance(), story)
    print(format_status(story, statuses))
    return EXIT_OK if all(p.state == MATERIALIZED and not p.failed_checks for p in statuses) else EXIT_FAILED


def cmd_reload(args) -> int:
    from wan_pipeline.webserver import reload_code_locations

    names = reload_code_locations(url=args.url)
    print(f"reloaded code location(s): {', '.join(names) or 'none'}")
    return EXIT_OK


def cmd_recover(args) -> int:
    from assets.recovery import recover_killed_runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recovered = recover_killed_runs(_instance(), log=print)
    if not recovered:
        print("no killed runs: nothing to recover")
    return EXIT_OK


def _range_tags(start: str, end: str) -> dict:
    return {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}


# ---------------------------------------------------------------------------------------------
# models and single-stage tools


def cmd_inspect(args) -> int:
    import json

    from wan_pipeline.models import inspect_report

    print(json.dumps(inspect_report(args.model), indent=2, default=str))
    return EXIT_OK


def cmd_doctor(args) -> int:
    import json

    from wan_pipeline.models import doctor_report, render_doctor_text
    from wan_pipeline.preset import load_preset

    machine = None
    if args.vram_gib is not None or args.ram_gib is not None:
        from wan_pipeline.models.machine import hypothetical_machine

        machine = hypothetical_machine(args.vram_gib, args.ram_gib)
    report = doctor_report(load_preset(args.preset), machine=machine)
    print(json.dumps(report, indent=2, default=str) if args.json else render_doctor_text(report))
    return EXIT_OK


def tiny_models_dir() -> Path:
    from wan_pipeline.storage import StorageLayout

    return StorageLayout.default().models / "tiny"


def cmd_make_tiny_models(args) -> int:
    from wan_pipeline.models.tiny import make_all_tiny_models

    folder = Path(args.dir).resolve() if args.dir else tiny_models_dir()
    for name, path in sorted(make_all_tiny_models(folder).items()):
        print(f"{name:<24} {path}")
    return EXIT_OK


def cmd_interpolate(args) -> int:
    from wan_pipeline.postprocess import interpolate_file

    info = interpolate_file(args.input, args.output, factor=args.factor, fps=args.fps, preset=args.preset)
    print(
        f"{info.frames} frames at {info.fps} fps ({float(info.fps):.3f}), {info.width}x{info.height}, audio: {'kept' if info.has_audio else 'none'}",
        file=sys.stderr,
    )
    print(info.path)
    return EXIT_OK


def cmd_upscale(args) -> int:
    from wan_pipeline.postprocess import upscale_file

    info = upscale_file(args.input, args.output, scale=args.scale, height=args.height, preset=args.preset)
    print(
        f"{info.frames} frames at {info.fps} fps, {info.width}x{info.height}, audio: {'kept' if info.has_audio else 'none'}",
        file=sys.stderr,
    )
    print(info.path)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# report


def cmd_report(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from wan_pipeline.report import REPORT_COLUMNS, chart_path, report_rows, table_cells, write_report_chart
    from wan_pipeline.storage import StorageLayout
    from wan_pipeline.story import load_story

    story = load_story(args.story)
    layout = StorageLayout.default()
    rows = report_rows(layout, story)
    if not rows:
        raise WanPipelineError(
            f"nothing rendered yet for {story.id!r} in {layout.story_dir(story.id)}: run `wan-pipeline render {args.story}` first"
        )
    table = Table(title=f"{story.title or story.id}: render telemetry ({layout.story_dir(story.id)})", title_justify="left")
    numeric = {"duration_s", "gpu_wait_s", "peak_vram_mb", "peak_rss_mb", "frames", "fps"}
    for key, header, _ in REPORT_COLUMNS:
        table.add_column(header, justify="right" if key in numeric else "left", no_wrap=True)
    for cells in table_cells(rows):
        table.add_row(*cells)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: never squash the columns
    console.print(table)
    if args.chart:
        print(str(write_report_chart(rows, chart_path(layout, story.id), title=f"{story.title or story.id}: render telemetry")))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wan-pipeline", description="Story-to-video rendering with Wan, orchestrated by Dagster.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a story file (exit 0 if valid, 2 with the errors)")
    p.add_argument("story", help="story file (YAML or JSON)")
    p.add_argument("--preset", help="also check this preset instead of the story's own")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="render a story through Dagster; prints the film's path last")
    p.add_argument("story", help="story file (YAML or JSON), anywhere on disk")
    p.add_argument("--preset", help="preset name (workflows/<name>.yaml) or file; default: the story's own")
    p.add_argument("--scenes", help="comma-separated scene ids to (re)render; default: all")
    p.add_argument("--stale", action="store_true", help="render only what is stale or missing (one run), see `status`")
    p.add_argument("-v", "--verbose", action="store_true", help="show Dagster's INFO log")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("inspect", help="identify a Wan checkpoint from its configs (no weights read); JSON")
    p.add_argument("model", help="local diffusers folder or Hugging Face repo id (looked up in the HF cache, offline)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("doctor", help="what this machine has and what a preset's models need")
    p.add_argument("preset", nargs="?", default="preview", help="preset name or file (default: preview)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--vram-gib", type=float, help="answer for a GPU of this many GiB, all free (0: no GPU), instead of this machine's")
    p.add_argument("--ram-gib", type=float, help="answer for this many GiB of available host RAM instead of this machine's")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("make-tiny-models", help="write the random-weight miniature checkpoints of the `tiny` preset")
    p.add_argument("dir", nargs="?", help="target folder (default: <storage>/models/tiny)")
    p.set_defaults(func=cmd_make_tiny_models)

    p = sub.add_parser("interpolate", help="interpolate any video with the preset's interpolation engine")
    p.add_argument("input")
    p.add_argument("output")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--factor", type=int, help="2 or 4: n frames become factor*(n-1)+1")
    g.add_argument("--fps", help="target frame rate, e.g. 60 or 60000/1001")
    p.add_argument("--preset", default="preview", help="preset whose `interpolated` engine is used (default: preview)")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("upscale", help="upscale any video with the preset's upscaling engine")
    p.add_argument("input")
    p.add_argument("output")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scale", type=float, help="scale factor")
    g.add_argument("--height", type=int, help="output height in pixels (width keeps the aspect, even)")
    p.add_argument("--preset", default="preview", help="preset whose `upscaled` engine is used (default: preview)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("status", help="per scene and stage: materialized / stale (why) / missing / failed check; exit 1 unless all fresh")
    p.add_argument("story", help="story file (YAML or JSON)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "reload", help="reload the code location of the running Dagster webserver (after scenes were added, removed or reordered)"
    )
    p.add_argument("--url", help="webserver URL (default $WAN_PIPELINE_WEBSERVER or http://127.0.0.1:3000)")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("recover", help="mark runs whose process was killed as failed and free their gpu pool slots")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("report", help="print the render telemetry of a story: one row per scene and stage, and the film")
    p.add_argument("story", help="story file (YAML or JSON)")
    p.add_argument("--chart", action="store_true", help="also (re)write outputs/<story>/render-report.png and print its path")
    p.set_defaults(func=cmd_report)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wan-pipeline`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", module=r"dagster(\..*)?$")
    try:
        return args.func(args)
    except InputError as exc:
        _err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except WanPipelineError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
