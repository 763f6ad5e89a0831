"""The render report of a story: one telemetry row per scene and stage (plus the film), as
``run-summary.json``, a PNG chart of duration and peak memory per stage, and a table.

Rows are read from the JSON sidecars that every stage writes next to its output, so a report is
correct whichever way the stages ran (``wan-pipeline render``, the Dagster UI, a backfill).
"""

from __future__ import annotations

import json
from pathlib import Path

from wan_pipeline.media.atomic import atomic_path, write_text_atomic
from wan_pipeline.stages import STAGES
from wan_pipeline.storage import StorageLayout
from wan_pipeline.story import Story
from wan_pipeline.telemetry import read_sidecar

# (key, header, format) of the report table, shared by the terminal and the Dagster UI.
REPORT_COLUMNS = (
    ("scene", "scene", "{}"),
    ("stage", "stage", "{}"),
    ("engine", "engine", "{}"),
    ("device", "device", "{}"),
    ("duration_s", "time (s)", "{:.2f}"),
    ("gpu_wait_s", "wait (s)", "{:.2f}"),
    ("peak_vram_mb", "VRAM (MiB)", "{:.0f}"),
    ("peak_rss_mb", "RSS (MiB)", "{:.0f}"),
    ("frames", "frames", "{}"),
    ("fps", "fps", "{:g}"),
    ("size", "size", "{}"),
)


def chart_path(layout: StorageLayout, story_id: str, take: str) -> Path:
    """``outputs/<story>/<take>/render-report.png``."""
    return layout.take_dir(story_id, take) / "render-report.png"


def report_rows(layout: StorageLayout, story: Story, take: str) -> list[dict]:
    """Telemetry rows of one take in story order: every rendered scene stage, then the film when
    rendered. Each row is the stage's sidecar record with ``stage`` and ``scene`` (None for the film)."""
    rows = []
    for s in story.scenes:
        for stage in STAGES.scene_stages():
            rec = read_sidecar(layout.output(story.id, s.id, stage, take=take))
            if rec is not None:
                rows.append({**rec, "stage": stage, "scene": s.id})
    for stage in STAGES.story_stages():
        rec = read_sidecar(layout.output(story.id, None, stage, take=take))
        if rec is not None:
            rows.append({**rec, "stage": stage, "scene": None})
    return rows


def write_run_summary(layout: StorageLayout, story: Story, take: str, rows: list[dict] | None = None) -> Path:
    """Write ``outputs/<story>/<take>/run-summary.json`` (the rows of :func:`report_rows`) atomically."""
    rows = report_rows(layout, story, take) if rows is None else rows
    return write_text_atomic(layout.run_summary(story.id, take=take), json.dumps(rows, indent=2, default=str) + "\n")


def cell(row: dict, key: str, fmt: str) -> str:
    """One table cell: ``size`` is ``W×H``, the film's scene is ``(film)``, null is ``–``."""
    if key == "size":
        return f"{row['width']}×{row['height']}" if row.get("width") and row.get("height") else "–"
    value = row.get(key)
    if key == "scene" and value is None:
        return "(film)"
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table_cells(rows: list[dict]) -> list[list[str]]:
    """The report table as text cells, one list per row, columns as :data:`REPORT_COLUMNS`."""
    return [[cell(r, key, fmt) for key, _, fmt in REPORT_COLUMNS] for r in rows]


def memory_series(rows: list[dict]) -> tuple[str, list[float]]:
    """Which memory to chart and its values (MiB) per row: peak VRAM when any row measured it,
    else peak RSS (a CPU render has no VRAM). Missing values are 0."""
    if any(r.get("peak_vram_mb") is not None for r in rows):
        return "peak VRAM (MiB)", [float(r.get("peak_vram_mb") or 0) for r in rows]
    return "peak RSS (MiB) — no VRAM measured", [float(r.get("peak_rss_mb") or 0) for r in rows]


def write_report_chart(rows: list[dict], target: str | Path, title: str = "") -> Path:
    """Draw duration (s) and peak memory (MiB) per stage, grouped by scene (the film last), as a
    PNG at ``target`` (atomically, matplotlib Agg, 100 dpi, 1000×420 px). Raises ValueError when
    there are no rows."""
    if not rows:
        raise ValueError("no telemetry rows to chart: render the story first")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups: list[str] = []
    for r in rows:
        g = r["scene"] or "film"
        if g not in groups:
            groups.append(g)
    scene_stages = STAGES.scene_stages()
    stages = [s for s in STAGES.names() if any(r["stage"] == s for r in rows)]
    present = [s for s in stages if s in scene_stages]
    mem_label, mem = memory_series(rows)
    width = 0.8 / max(len(present), 1)

    fig = Figure(figsize=(10, 4.2), dpi=100)  # no pyplot: no global figure state, a lighter import
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    series = (("duration (s)", [float(r.get("duration_s") or 0) for r in rows]), (mem_label, mem))
    for ax, (label, values) in zip(axes, series):
        for stage in stages:  # one bar call per stage
            xs, hs = [], []
            for i, r in enumerate(rows):
                if r["stage"] != stage:
                    continue
                x = groups.index(r["scene"] or "film")
                xs.append(x if r["scene"] is None else x + (present.index(stage) - (len(present) - 1) / 2) * width)
                hs.append(values[i])
            ax.bar(xs, hs, width=width if stage in scene_stages else 0.5, color=STAGES[stage].colour)
        ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(
        handles=[Patch(color=STAGES[s].colour, label=s) for s in stages], loc="upper center", ncol=len(stages), frameon=False, fontsize=8
    )
    if title:
        fig.suptitle(title, y=0.995, fontsize=10, x=0.01, ha="left")
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.2, top=0.86, wspace=0.2)
    target = Path(target)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
