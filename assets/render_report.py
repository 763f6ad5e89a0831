"""``<story>/render_report``: what rendering the story cost, per scene and stage, in the UI.

Downstream of ``film``; reads the stages' telemetry sidecars, writes ``run-summary.json`` and
``render-report.png`` (duration and peak VRAM — or peak RSS on a CPU — per stage and scene) and
shows the chart and the table on its materialization. CPU only, not in the ``gpu`` pool.
"""

import dagster as dg

from assets.recovery import cancel_on_interrupt
from resources import GPUResource
from wan_pipeline.previews import encode_jpeg, markdown_image
from wan_pipeline.report import REPORT_COLUMNS, chart_path, report_rows, table_cells, write_report_chart, write_run_summary
from wan_pipeline.story import Story

REPORT_SCHEMA = dg.TableSchema(columns=[dg.TableColumn(key, "string", description=header) for key, header, _ in REPORT_COLUMNS])


def report_metadata(rows: list[dict], chart, summary) -> dict:
    """Materialization metadata of a report: the chart (Markdown image), the table, the files,
    the totals (seconds and MiB)."""
    import numpy as np
    from PIL import Image

    chart_jpeg = encode_jpeg(np.asarray(Image.open(chart).convert("RGB")), max_bytes=90_000)
    totals = sum(float(r.get("duration_s") or 0) for r in rows)
    vram = [r["peak_vram_mb"] for r in rows if r.get("peak_vram_mb") is not None]
    return {
        "chart": dg.MetadataValue.md(markdown_image(chart_jpeg, alt="duration and peak memory per stage and scene")),
        "report": dg.MetadataValue.table(
            [dg.TableRecord(dict(zip([k for k, _, _ in REPORT_COLUMNS], cells))) for cells in table_cells(rows)], schema=REPORT_SCHEMA
        ),
        "chart_path": dg.MetadataValue.path(str(chart)),
        "run_summary": dg.MetadataValue.path(str(summary)),
        "rows": len(rows),
        "total_duration_s": round(totals, 3),
        "max_peak_vram_mb": max(vram) if vram else dg.MetadataValue.null(),
        "max_peak_rss_mb": max((float(r.get("peak_rss_mb") or 0) for r in rows), default=0.0),
    }


def build_render_report(story: Story, film) -> dg.AssetsDefinition:
    """The ``<story>/render_report`` asset of ``story``, downstream of its ``film`` asset."""

    @dg.asset(
        key=[story.id, "render_report"],
        deps=[film],
        group_name=story.id,
        kinds={"json", "matplotlib"},
        description=(
            "What rendering one take of the story cost: run-summary.json (one telemetry row per scene and stage, and the film) "
            "and a chart of duration and peak VRAM (peak RSS on a CPU) per stage and scene. Same table: `wan-pipeline report STORY`."
        ),
    )
    @cancel_on_interrupt
    def render_report(context: dg.AssetExecutionContext, gpu: GPUResource) -> dg.MaterializeResult:
        from assets.render_context import run_config

        config = run_config(context, story, gpu)  # the run's take
        current, layout, take = config.story, config.layout, config.take
        rows = report_rows(layout, current, take)
        if not rows:
            raise dg.Failure(f"no telemetry for {current.id} take {take!r}: materialize its scenes and film first")
        summary = write_run_summary(layout, current, take, rows)
        title = f"{current.title or current.id} ({take}): render telemetry"
        chart = write_report_chart(rows, chart_path(layout, current.id, take), title=title)
        context.log.info(f"render report of {current.id} take {take!r}: {len(rows)} rows → {summary}, {chart}")
        meta = {**report_metadata(rows, chart, summary), "take": take, "preset": config.preset.name}
        return dg.MaterializeResult(metadata=meta)

    return render_report
