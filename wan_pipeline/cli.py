"""``wan-pipeline``: validate and render stories through Dagster, and the per-stage tools.

The only module of the engine library that imports Dagster: ``render`` materializes the story's
assets on the instance of the storage root (``storage/`` or ``$WAN_PIPELINE_STORAGE``), exactly as
the Dagster UI would, so runs, materializations and telemetry show up there.
"""

from __future__ import annotations

import argparse
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


def _run_config(args, story):
    """The render's configuration: the preset resolved once (``--preset`` name or file, else the
    story's), the storage root, and the miniatures made where the preset's models are them."""
    from wan_pipeline.models.tiny import ensure_tiny_models_for
    from wan_pipeline.run_config import RunConfig
    from wan_pipeline.storage import StorageLayout

    config = RunConfig.resolve(story, args.preset, StorageLayout.default())
    ensure_tiny_models_for(config.preset, config.layout.root)
    return config


def cmd_render(args) -> int:
    """Render; Ctrl-C or SIGTERM stops it (the run canceled, locks freed, no temporary file left)
    with exit 130 / 143."""
    from wan_pipeline.interrupts import Interrupted, stop_on_signals

    try:
        with stop_on_signals():
            return _render(args)
    except Interrupted as exc:
        _err(f"interrupted ({exc.name}): the render stopped; what finished is kept, run it again to continue")
        return exc.exit_code


def _render(args) -> int:
    from assets.launch import render_stale, render_story
    from wan_pipeline.story import load_story

    story = load_story(args.story)
    config = _run_config(args, story)
    scenes = None
    if args.scenes:
        scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
    with _ConsoleReporter(len(scenes or story.scene_ids)) as reporter:
        if getattr(args, "stale", False):
            outcome = render_stale(story, config, reporter, args.verbose, announce=lambda m: print(m, file=sys.stderr))
            if outcome is None:
                print(f"{story.id}: everything is fresh, nothing to render", file=sys.stderr)
        else:
            print(
                f"rendering {story.id!r} ({len(scenes or story.scene_ids)} of {len(story.scene_ids)} scenes) with preset "
                f"{config.preset.name!r} into {config.layout.story_dir(story.id)}",
                file=sys.stderr,
            )
            outcome = render_story(story, config, reporter, scenes, args.verbose)
    if outcome is not None and not outcome.ok:
        _err(outcome.message)
        return EXIT_BAD_INPUT if outcome.bad_input else EXIT_FAILED
    print(str(config.layout.film(story.id)))
    return EXIT_OK


def _instance():
    from assets.instance import storage_instance
    from wan_pipeline.storage import StorageLayout

    return storage_instance(StorageLayout.default())


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

    report = doctor_report(load_preset(args.preset))
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
