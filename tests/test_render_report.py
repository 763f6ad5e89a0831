"""The render report: rows from the telemetry sidecars, run-summary.json, the chart, the
`render_report` asset's metadata and `wan-pipeline report` in the terminal."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_pipeline.report import chart_path, memory_series, report_rows, write_report_chart, write_run_summary
from wan_pipeline.stages import STAGES
from wan_pipeline.storage import StorageLayout
from wan_pipeline.story import load_story
from wan_pipeline.telemetry import CONTRACT_KEYS, write_sidecar


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A small copy of the demo story with a telemetry sidecar for every scene stage and the film:
    stage k of scene i took 0.1·(i+1)·(k+1) s and peaked at 100 + 10·i + k MiB RSS (no VRAM)."""
    from tests.small_story import make_small_project

    env = make_small_project(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    story = load_story(Path(env["WAN_PIPELINE_STORIES"]) / "launch_day.yaml")
    layout = StorageLayout.default()
    for i, scene in enumerate(story.scenes):
        for k, stage in enumerate(STAGES.scene_stages()):
            out = layout.output(story.id, scene.id, stage, take="preview")
            out.parent.mkdir(parents=True, exist_ok=True)
            rec = {key: None for key in CONTRACT_KEYS}
            rec.update(
                stage=stage,
                engine=f"engine_{stage}",
                device="cpu",
                duration_s=round(0.1 * (i + 1) * (k + 1), 3),
                gpu_wait_s=0.0,
                peak_rss_mb=100.0 + 10 * i + k,
                frames=1 if stage == "keyframe" else 17,
                fps=None if stage == "keyframe" else 16.0,
                width=128,
                height=80,
                seed=i,
                path=str(out),
            )
            write_sidecar(out, rec)
    film = {key: None for key in CONTRACT_KEYS}
    film.update(stage="film", engine="concat", device="cpu", duration_s=2.5, peak_rss_mb=300.0, frames=64, fps=32.0, width=256, height=160)
    write_sidecar(layout.film(story.id, take="preview"), film)
    return story, layout


def test_rows_summary_and_chart(project, tmp_path):
    story, layout = project
    rows = report_rows(layout, story, "preview")
    assert len(rows) == len(story.scenes) * len(STAGES.scene_stages()) + 1
    assert [r["scene"] for r in rows[:4]] == [story.scenes[0].id] * 4 and rows[-1]["stage"] == "film" and rows[-1]["scene"] is None
    summary = json.loads(write_run_summary(layout, story, "preview", rows).read_text())
    assert summary == json.loads(json.dumps(rows))
    label, mem = memory_series(rows)
    assert label.startswith("peak RSS") and mem[1] == 101.0  # CPU render: RSS stands in for VRAM
    png = write_report_chart(rows, chart_path(layout, story.id, "preview"), title="t")
    img = Image.open(png)
    assert img.format == "PNG" and img.size == (1000, 420)
    assert 10_000 < png.stat().st_size < 300_000
    arr = np.asarray(img.convert("RGB"))
    assert (np.abs(arr.astype(int) - [0x81, 0x72, 0xB3]).sum(axis=2) < 10).sum() > 500  # the film's bars are drawn
    with pytest.raises(ValueError):
        write_report_chart([], tmp_path / "x.png")


def test_memory_prefers_vram_when_measured():
    rows = [{"peak_vram_mb": 5000.0, "peak_rss_mb": 900.0}, {"peak_vram_mb": None, "peak_rss_mb": 800.0}]
    label, mem = memory_series(rows)
    assert label.startswith("peak VRAM") and mem == [5000.0, 0.0]


def test_render_report_asset_metadata(project):
    import dagster as dg

    from assets.story_assets import build_story_assets
    from resources import default_resources

    story, layout = project
    assets = build_story_assets(story)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets, selection=dg.AssetSelection.assets([story.id, "render_report"]), instance=instance, resources=default_resources()
        )
    assert result.success
    (mat,) = result.asset_materializations_for_node("launch_day__render_report")
    meta = mat.metadata
    m = re.search(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", meta["chart"].value)
    chart = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    assert chart.format == "JPEG" and chart.size[0] >= 500
    assert len(meta["chart"].value) < 130_000
    records = meta["report"].records
    assert len(records) == 17 and records[-1].data["scene"] == "(film)"
    assert {c.name for c in meta["report"].schema.columns} >= {"scene", "stage", "duration_s", "peak_vram_mb", "peak_rss_mb"}
    assert records[5].data["duration_s"] == "0.40" and records[5].data["peak_rss_mb"] == "111"  # scene 2, clip
    assert meta["total_duration_s"].value == pytest.approx(sum(0.1 * (i + 1) * (k + 1) for i in range(4) for k in range(4)) + 2.5, abs=1e-3)
    assert Path(meta["chart_path"].path).is_file() and Path(meta["run_summary"].path).is_file()


def test_cli_report_prints_one_row_per_scene_and_stage(project, capsys):
    from wan_pipeline.cli import main

    story, layout = project
    assert main(["report", story.source_path, "--chart"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[-1] == str(chart_path(layout, story.id, "preview")) and Path(lines[-1]).is_file()
    for scene in story.scenes:
        for stage in STAGES.scene_stages():
            assert sum(1 for line in lines if f" {scene.id} " in line and f" {stage} " in line) == 1, (scene.id, stage)
    assert sum(1 for line in lines if "(film)" in line) == 1
    assert "engine_upscaled" in out and "256×160" in out


def test_cli_report_before_rendering_says_what_to_do(tmp_path, monkeypatch, capsys):
    from tests.small_story import make_small_project
    from wan_pipeline.cli import main

    env = make_small_project(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["report", str(Path(env["WAN_PIPELINE_STORIES"]) / "launch_day.yaml")]) == 1
    assert "wan-pipeline render" in capsys.readouterr().err
