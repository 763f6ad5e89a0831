"""How a telemetry record reads in the Dagster UI: a preview image and a telemetry table.

The flat contract keys stay on the materialization (the UI plots floats over time); these two
values sit beside them for a person: ``preview`` (Markdown with an inline JPEG, the UI's only way
to show an image), ``animation`` (a video's animated WebP/GIF preview inline, so a clip or the
film plays in the UI) and ``telemetry`` (a key / value / unit table).
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from wan_pipeline.previews import markdown_image
from wan_pipeline.telemetry import CONTRACT_KEYS

UNITS = {
    "duration_s": "s",
    "gpu_wait_s": "s",
    "video_duration_s": "s",
    "expected_duration_s": "s",
    "peak_vram_mb": "MiB",
    "device_vram_used_mb": "MiB",
    "peak_rss_mb": "MiB",
    "fps": "fps",
    "input_fps": "fps",
    "width": "px",
    "height": "px",
    "frames": "frames",
    "input_frames": "frames",
    "size_bytes": "bytes",
}
HIDDEN = {"path", "preview_path", "animation_path"}  # shown as path values already

TELEMETRY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("key", "string", description="telemetry key (contract keys first)"),
        dg.TableColumn("value", "string", description="measured value; empty when not measurable (e.g. VRAM on a CPU)"),
        dg.TableColumn("unit", "string"),
    ]
)


def format_value(value) -> str:
    """A telemetry value as text: floats to 3 significant decimals, null as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def telemetry_rows(record: dict) -> list[dict]:
    """``record`` as rows ``{key, value, unit}``: the contract keys in contract order, then the
    stage's own keys in alphabetical order (paths left out)."""
    keys = [k for k in CONTRACT_KEYS if k in record and k not in HIDDEN]
    keys += sorted(k for k in record if k not in CONTRACT_KEYS and k not in HIDDEN)
    return [{"key": k, "value": format_value(record[k]), "unit": UNITS.get(k, "")} for k in keys]


def telemetry_table(record: dict) -> dg.TableMetadataValue:
    """The telemetry record as a ``MetadataValue.table`` (key, value, unit)."""
    return dg.MetadataValue.table([dg.TableRecord(r) for r in telemetry_rows(record)], schema=TELEMETRY_SCHEMA)


def preview_markdown(record: dict) -> dg.MarkdownMetadataValue | None:
    """The record's preview JPEG (``preview_path``) as a Markdown image, or None without one."""
    path = record.get("preview_path")
    if not path or not Path(path).is_file():
        return None
    where = f"{record.get('stage')}[{record.get('scene')}]" if record.get("scene") else str(record.get("stage"))
    return dg.MetadataValue.md(markdown_image(Path(path).read_bytes(), alt=f"{where} preview"))


def animation_markdown(record: dict) -> dg.MarkdownMetadataValue | None:
    """The record's animated preview (``animation_path``: ``.webp`` or ``.gif``) as a Markdown
    image, or None without one."""
    path = record.get("animation_path")
    if not path or not Path(path).is_file():
        return None
    where = f"{record.get('stage')}[{record.get('scene')}]" if record.get("scene") else str(record.get("stage"))
    mime = "image/gif" if Path(path).suffix.lower() == ".gif" else "image/webp"
    return dg.MetadataValue.md(markdown_image(Path(path).read_bytes(), alt=f"{where} animated preview", mime=mime))
