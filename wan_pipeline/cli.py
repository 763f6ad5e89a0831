"""``wan-pipeline``: validate and render stories through Dagster, and the per-stage tools.

The only module of the engine library that imports Dagster: ``render`` materializes the story's
assets on the instance of the storage root (``storage/`` or ``$WAN_PIPELINE_STORAGE``), exactly as
the Dagster UI would, so runs, materializations and telemetry show up there.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import warnings
from pathlib import Path

from wan_pipeline.errors import InputError, WanPipelineError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_SIGINT = 130  # 128 + SIGINT (shell convention)

#: Largest frame ``upscale`` writes: 8K UHD (7680x4320) in pixels; the whole clip is held in memory.
MAX_OUTPUT_PIXELS = 7680 * 4320
#: Smallest output side (pixels); the preset schema's own lower bound for width and height.
MIN_OUTPUT_SIDE = 16
#: Frame rates ``interpolate --fps`` accepts (fps); numerator and denominator must also fit the
#: 32-bit rational of FFmpeg's time base (AVRational).
MIN_FPS, MAX_FPS = 1, 1000


def _err(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# argument types: a bad value is an argparse error (usage line, exit 2) naming the option


def _fps_arg(text: str) -> str:
    """``--fps``: a frame rate from :data:`MIN_FPS` to :data:`MAX_FPS` (``60``, ``29.97``,
    ``60000/1001``); returned as given."""
    from wan_pipeline.media.clip import as_fps

    try:
        fps = as_fps(text.strip())
    except (ValueError, ZeroDivisionError, OverflowError):
        fps = None
    if fps is not None and MIN_FPS <= fps <= MAX_FPS and max(fps.numerator, fps.denominator) >= 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} has too many digits for a video time base: round it, e.g. 29.97 or 30000/1001")
    if fps is None or not MIN_FPS <= fps <= MAX_FPS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a frame rate: give frames per second from {MIN_FPS} to {MAX_FPS}, e.g. 60, 29.97 or 60000/1001"
        )
    return text.strip()


def _factor_arg(text: str) -> int:
    """``--factor``: a whole number ≥ 2 (the engine decides which ones it supports)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not an interpolation factor: give a whole number such as 2 or 4")
    return value


def _scale_arg(text: str) -> float:
    """``--scale``: a finite number > 0 (the output size is checked against the input's)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a scale factor: give a positive number such as 2 or 1.5")
    return value


def _height_arg(text: str) -> int:
    """``--height``: output height in pixels, at least :data:`MIN_OUTPUT_SIDE`."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < MIN_OUTPUT_SIDE:
        raise argparse.ArgumentTypeError(f"{text!r} is not an output height: give a whole number of pixels ≥ {MIN_OUTPUT_SIDE}, e.g. 1080")
    return value


def _path_arg(text: str) -> str:
    """A file or folder argument: a name the operating system can use (each component at most
    255 bytes, the whole at most 4096); whether it exists is checked by the command."""
    try:
        os.stat(text)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL):
            raise argparse.ArgumentTypeError(f"{text[:60]!r}…: {exc.strerror}; give a shorter path") from None
    except ValueError as exc:  # embedded NUL
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: {exc}") from None
    return text


def _scenes_arg(text: str) -> str:
    """``--scenes``: comma-separated scene ids, at least one; returned normalised (``a,b``)."""
    ids = [s.strip() for s in text.split(",") if s.strip()]
    if not ids:
        raise argparse.ArgumentTypeError(f"{text!r} names no scene: give scene ids separated by commas, e.g. intro,finale")
    return ",".join(ids)


def _output_file(path: str) -> Path:
    """Raise :class:`InputError` unless ``path`` can be written as a file (not a folder, its
    folder creatable and writable)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(path, "output: this is a folder; give the path of the file to write, e.g. out.mp4")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(path, f"output: {parent} is a file, so no folder can be created there; choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"output: the folder {parent} is not writable; choose another output path")
    return p


def _blame_option(exc: InputError, preset_name: str, stage: str, option: str) -> InputError:
    """An engine error about a value the command line put into the preset's ``stage`` section is
    re-addressed to ``option``: when the preset's own section builds, the option is at fault."""
    from wan_pipeline.preflight import preset_problems
    from wan_pipeline.preset import load_preset

    try:
        preset = load_preset(preset_name)
    except InputError:
        return exc
    if exc.file != preset.source_path or preset_problems(preset, (stage,)):
        return exc
    head = f"stages.{stage}."
    problems = [p.removeprefix(head).removeprefix("(top level): ") for p in exc.problems]
    return InputError(None, [f"{option}: {p} (engine {preset.stage(stage).engine!r} of preset {preset.name!r})" for p in problems])


# ---------------------------------------------------------------------------------------------
# validate


def cmd_validate(args) -> int:
    """Check the story (schema, images decoded, LoRA files) and its preset (schema and the same
    per-stage checks as ``render``); print every problem of both files at once."""
    from wan_pipeline.config_files import load_document
    from wan_pipeline.preflight import preset_problems, story_problems
    from wan_pipeline.preset import load_preset
    from wan_pipeline.story import load_story

    errors: list[InputError] = []
    story = None
    preset_name = args.preset
    try:
        story = load_story(args.story)
        preset_name = preset_name or story.preset
    except InputError as exc:
        errors.append(exc)
        if preset_name is None:  # still check the preset the file names, if it names one
            try:
                doc = load_document(args.story)
            except InputError:
                doc = None
            named = doc.get("preset", "preview") if isinstance(doc, dict) else None
            preset_name = named if isinstance(named, str) and named.strip() else None
    if preset_name is not None:
        try:
            preset = load_preset(preset_name)
            problems = preset_problems(preset)
            if problems:
                errors.append(InputError(preset.source_path, problems))
            elif story is not None and (scene_problems := story_problems(story, preset)):
                errors.append(InputError(story.source_path, scene_problems))
        except InputError as exc:
            errors.append(exc)
    if errors:
        for exc in errors:
            _err(f"error: {exc}")
        return EXIT_BAD_INPUT
    print(f"ok: {args.story}: story {story.id!r}, {len(story.scenes)} scenes ({', '.join(story.scene_ids)}), preset {preset_name!r}")
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

    config = RunConfig.resolve(story, args.preset, StorageLayout.default(), take=args.take)
    ensure_tiny_models_for(config.preset, config.layout.root)
    return config


def cmd_render(args) -> int:
    """Render; Ctrl-C or SIGTERM stops it (the run canceled, locks freed, no temporary file left)
    with exit 130 / 143."""
    from wan_pipeline import collector
    from wan_pipeline.interrupts import Interrupted, stop_on_signals

    try:
        with stop_on_signals(), collector.paused():  # collected from the first stage on (assets.launch)
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
                f"{config.preset.name!r} into take {config.take!r} ({config.layout.take_dir(story.id, config.take)})",
                file=sys.stderr,
            )
            outcome = render_story(story, config, reporter, scenes, args.verbose)
    if outcome is not None and not outcome.ok:
        _err(outcome.message)
        return EXIT_BAD_INPUT if outcome.bad_input else EXIT_FAILED
    print(str(config.layout.film(story.id, take=config.take)))
    return EXIT_OK


def _instance():
    from assets.instance import storage_instance
    from wan_pipeline.storage import StorageLayout

    return storage_instance(StorageLayout.default())


# ---------------------------------------------------------------------------------------------
# status, reload, recover


def _take_config(args, story):
    """The take ``status`` / ``report`` read: ``--preset`` (default the story's own) and ``--take``
    (default the preset's name)."""
    from assets.status import story_config

    return story_config(story, args.preset, args.take)


def cmd_status(args) -> int:
    from assets.status import status_for
    from wan_pipeline.status import MATERIALIZED, format_status
    from wan_pipeline.story import load_story

    story = load_story(args.story)
    config = _take_config(args, story)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        statuses = status_for(_instance(), story, config)
    print(format_status(story, statuses, config.take))
    return EXIT_OK if all(p.state == MATERIALIZED and not p.failed_checks for p in statuses) else EXIT_FAILED


def cmd_reload(args) -> int:
    from wan_pipeline.webserver import reload_code_locations

    names = reload_code_locations(url=args.url)
    print(f"reloaded code location(s): {', '.join(names) or 'none'}")
    return EXIT_OK


def cmd_recover(args) -> int:
    from assets.recovery import recover_killed_runs
    from wan_pipeline.media.atomic import remove_stale_parts
    from wan_pipeline.storage import StorageLayout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recovered = recover_killed_runs(_instance(), log=print)
    if not recovered:
        print("no killed runs: nothing to recover")
    layout = StorageLayout.default()
    removed = [p for folder in (layout.outputs, layout.models) for p in remove_stale_parts(folder, recursive=True)]
    for path in removed:
        print(f"removed the leftover temporary file of a killed writer: {path}")
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

    machine = None
    if args.vram_gib is not None or args.ram_gib is not None:
        from wan_pipeline.models.machine import hypothetical_machine

        machine = hypothetical_machine(args.vram_gib, args.ram_gib)
    report = doctor_report(load_preset(args.preset), machine=machine)
    print(json.dumps(report, indent=2, default=str) if args.json else render_doctor_text(report))
    return EXIT_OK if report["ready"] else EXIT_FAILED


def tiny_models_dir() -> Path:
    from wan_pipeline.storage import StorageLayout

    return StorageLayout.default().models / "tiny"


def cmd_make_tiny_models(args) -> int:
    from wan_pipeline.models.tiny import make_all_tiny_models

    folder = Path(args.dir).resolve() if args.dir else tiny_models_dir()
    for name, path in sorted(make_all_tiny_models(folder).items()):
        print(f"{name:<24} {path}")
    return EXIT_OK


def _crf_or_default(crf: int | None) -> int:
    from wan_pipeline.postprocess import DELIVERY_CRF

    return DELIVERY_CRF if crf is None else crf


def cmd_interpolate(args) -> int:
    from wan_pipeline.postprocess import interpolate_file

    _output_file(args.output)
    try:
        info = interpolate_file(
            args.input,
            args.output,
            factor=args.factor,
            fps=args.fps,
            preset=args.preset,
            lossless=args.lossless,
            crf=_crf_or_default(args.crf),
        )
    except InputError as exc:
        option = f"--factor {args.factor}" if args.factor is not None else f"--fps {args.fps}"
        raise _blame_option(exc, args.preset, "interpolated", option) from None
    print(
        f"{info.frames} frames at {info.fps} fps ({float(info.fps):.3f}), {info.width}x{info.height} {info.pix_fmt}, "
        f"audio: {'kept' if info.has_audio else 'none'}",
        file=sys.stderr,
    )
    print(info.path)
    return EXIT_OK


def cmd_upscale(args) -> int:
    from wan_pipeline.media.video_io import probe_video
    from wan_pipeline.postprocess import upscale_file

    _output_file(args.output)
    option = f"--scale {args.scale:g}" if args.scale is not None else f"--height {args.height}" if args.height is not None else None
    if option is not None:
        src = probe_video(args.input)
        f = args.scale if args.scale is not None else args.height / src.height
        w, h = round(src.width * f), round(src.height * f)
        if min(w, h) < MIN_OUTPUT_SIDE or w * h > MAX_OUTPUT_PIXELS:
            raise InputError(
                None,
                f"{option}: the {src.width}x{src.height} input would become {w}x{h}; the output must be at least "
                f"{MIN_OUTPUT_SIDE} pixels a side and at most {MAX_OUTPUT_PIXELS / 1e6:.1f} million pixels (8K UHD)",
            )
    try:
        info = upscale_file(
            args.input,
            args.output,
            scale=args.scale,
            height=args.height,
            preset=args.preset,
            lossless=args.lossless,
            crf=_crf_or_default(args.crf),
        )
    except InputError as exc:
        if option is None:
            raise
        raise _blame_option(exc, args.preset, "upscaled", option) from None
    print(
        f"{info.frames} frames at {info.fps} fps, {info.width}x{info.height} {info.pix_fmt}, audio: {'kept' if info.has_audio else 'none'}",
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
    layout, take = StorageLayout.default(), _take_config(args, story).take
    rows = report_rows(layout, story, take)
    where = layout.take_dir(story.id, take)
    if not rows:
        others = ", ".join(t for t in layout.takes(story.id) if t != take)
        hint = f" (takes on disk: {others}; pick one with --take)" if others else ""
        raise WanPipelineError(
            f"nothing rendered yet for {story.id!r} take {take!r} in {where}: run `wan-pipeline render {args.story}` first{hint}"
        )
    table = Table(title=f"{story.title or story.id}, take {take}: render telemetry ({where})", title_justify="left")
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
        print(
            str(write_report_chart(rows, chart_path(layout, story.id, take), title=f"{story.title or story.id} ({take}): render telemetry"))
        )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------


def _crf(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"CRF must be 0..51 (x264), got {value}")
    return value


def _add_output_format(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--crf",
        type=_crf,
        help="H.264 4:2:0 quality, 0..51, lower is better (default: postprocess.DELIVERY_CRF = 18, visually lossless)",
    )
    g.add_argument(
        "--lossless", action="store_true", help="write the pipeline's lossless intermediate (RGB 4:4:4, large; few players open it)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wan-pipeline", description="Story-to-video rendering with Wan, orchestrated by Dagster.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a story file (exit 0 if valid, 2 with the errors)")
    p.add_argument("story", type=_path_arg, help="story file (YAML or JSON)")
    p.add_argument("--preset", type=_path_arg, help="also check this preset instead of the story's own")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="render a story through Dagster; prints the film's path last")
    p.add_argument("story", type=_path_arg, help="story file (YAML or JSON), anywhere on disk")
    p.add_argument("--preset", type=_path_arg, help="preset name (workflows/<name>.yaml) or file; default: the story's own")
    p.add_argument("--scenes", type=_scenes_arg, help="comma-separated scene ids to (re)render; default: all")
    p.add_argument("--take", help="take name: outputs/<story>/<take>/ (default: the preset's name, e.g. preview)")
    p.add_argument("--stale", action="store_true", help="render only what is stale or missing (one run), see `status`")
    p.add_argument("-v", "--verbose", action="store_true", help="show Dagster's INFO log")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("inspect", help="identify a Wan checkpoint from its configs or tensor shapes (no weights read); JSON")
    p.add_argument(
        "model",
        type=_path_arg,
        help="local diffusers folder, Hugging Face repo id (HF cache, offline), or a .safetensors / .gguf transformer file",
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "doctor", help="what this machine has and what a preset's models need; exit 1, with each fix, when the preset cannot run here"
    )
    p.add_argument("preset", type=_path_arg, nargs="?", default="preview", help="preset name or file (default: preview)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--vram-gib", type=float, help="answer for a GPU of this many GiB, all free (0: no GPU), instead of this machine's")
    p.add_argument("--ram-gib", type=float, help="answer for this many GiB of available host RAM instead of this machine's")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("make-tiny-models", help="write the random-weight miniature checkpoints of the `tiny` preset")
    p.add_argument("dir", type=_path_arg, nargs="?", help="target folder (default: <storage>/models/tiny)")
    p.set_defaults(func=cmd_make_tiny_models)

    p = sub.add_parser("interpolate", help="interpolate any video with the preset's interpolation engine")
    p.add_argument("input", type=_path_arg)
    p.add_argument("output", type=_path_arg)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--factor", type=_factor_arg, help="2 or 4: n frames become factor*(n-1)+1")
    g.add_argument("--fps", type=_fps_arg, help="target frame rate, e.g. 60 or 60000/1001")
    p.add_argument("--preset", type=_path_arg, default="preview", help="preset whose `interpolated` engine is used (default: preview)")
    _add_output_format(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("upscale", help="upscale any video with the preset's upscaling engine")
    p.add_argument("input", type=_path_arg)
    p.add_argument("output", type=_path_arg)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scale", type=_scale_arg, help="scale factor")
    g.add_argument("--height", type=_height_arg, help="output height in pixels (width keeps the aspect, even)")
    p.add_argument("--preset", type=_path_arg, default="preview", help="preset whose `upscaled` engine is used (default: preview)")
    _add_output_format(p)
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("status", help="per scene and stage: materialized / stale (why) / missing / failed check; exit 1 unless all fresh")
    p.add_argument("story", type=_path_arg, help="story file (YAML or JSON)")
    p.add_argument("--preset", type=_path_arg, help="the take's preset, name or file (default: the story's own)")
    p.add_argument("--take", help="take name (default: the preset's name)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "reload", help="reload the code location of the running Dagster webserver (after scenes were added, removed or reordered)"
    )
    p.add_argument("--url", help="webserver URL (default $WAN_PIPELINE_WEBSERVER or http://127.0.0.1:3000)")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("recover", help="mark runs whose process was killed as failed and free their gpu pool slots")
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("report", help="print the render telemetry of a story: one row per scene and stage, and the film")
    p.add_argument("story", type=_path_arg, help="story file (YAML or JSON)")
    p.add_argument("--preset", type=_path_arg, help="the take's preset, name or file (default: the story's own)")
    p.add_argument("--take", help="take name (default: the preset's name)")
    p.add_argument("--chart", action="store_true", help="also (re)write outputs/<story>/<take>/render-report.png and print its path")
    p.set_defaults(func=cmd_report)

    return parser


#: OS errors on a path that mean the path is wrong (exit 2), not that the machine failed (exit 1).
BAD_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}

#: The commands that open the storage root (Dagster instance, outputs); checked before they run.
STORAGE_COMMANDS = ("render", "status", "recover", "report")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wan-pipeline`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", module=r"dagster(\..*)?$")
    try:
        if args.command in STORAGE_COMMANDS:
            from wan_pipeline.storage import check_storage_root

            check_storage_root()
        code = args.func(args)
        if argv is None:  # the console script, about to exit
            from wan_pipeline.collector import skip_final_collection

            skip_final_collection()
        return code
    except InputError as exc:
        _err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except WanPipelineError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        # a path the user gave or pointed at (storage, output, model folder) that cannot be used
        if exc.filename is None:
            raise
        _err(f"error: {exc.filename}: {exc.strerror or exc}; check the path and its permissions")
        return EXIT_BAD_INPUT if exc.errno in BAD_PATH_ERRNOS else EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
