"""``GPUResource``: the Dagster face of the library's stage runner.

The work — the device lock, the monitor, the telemetry record, the sidecar and the preview — is
:class:`wan_pipeline.stage_runner.StageRunner`; this resource only carries its configuration
(storage root, device, lock timeout) from Dagster's resource config and turns a telemetry record
into Dagster metadata (:func:`to_dagster_metadata`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from wan_pipeline.device_lock import parse_slots, resolve_slots
from wan_pipeline.devices import pick_device
from wan_pipeline.stage_runner import StageRun, StageRunner
from wan_pipeline.storage import StorageLayout, storage_root

__all__ = ["GPUResource", "StageRun", "to_dagster_metadata"]


def to_dagster_metadata(record: dict) -> dict:
    """Telemetry record → Dagster metadata values (null stays null, ``path`` is a path value,
    lists and dicts become JSON), plus ``preview`` (the output's thumbnail or contact sheet as a
    Markdown image, when the record has a ``preview_path``), ``animation`` (a video's animated
    preview, when it has an ``animation_path``) and ``telemetry`` (the record as a
    key/value/unit table) for people reading the UI."""
    from resources.presentation import animation_markdown, preview_markdown, telemetry_table

    out = {}
    preview = preview_markdown(record)
    if preview is not None:
        out["preview"] = preview
    animation = animation_markdown(record)
    if animation is not None:
        out["animation"] = animation
    out["telemetry"] = telemetry_table(record)
    for key, value in record.items():
        if value is None:
            out[key] = dg.MetadataValue.null()
        elif key in ("path", "preview_path", "animation_path"):
            out[key] = dg.MetadataValue.path(str(value))
        elif isinstance(value, (dict, list)):
            out[key] = dg.MetadataValue.json(value)
        elif isinstance(value, bool):
            out[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, (int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


class GPUResource(dg.ConfigurableResource):
    """One stage at a time on the device, measured (a thin adapter of
    :class:`~wan_pipeline.stage_runner.StageRunner`).

    storage_root: the storage root (empty: ``WAN_PIPELINE_STORAGE`` or ``<checkout>/storage``);
    device: ``auto`` lets the preset decide, or force ``cpu`` / ``cuda:N``;
    devices: the device slots stages lease (``[auto]``: ``WAN_PIPELINE_DEVICES``, else every visible
    CUDA device for a CUDA preset, else the preset's device; or a list such as
    ``[cuda:0, cuda:1]`` or ``[cpu, cpu]``); the ``gpu`` pool limit of the instance equals their
    number (:meth:`wan_pipeline.storage.StorageLayout.init`);
    lock_timeout_s: seconds to wait for a device slot (−1: forever).
    """

    storage_root: str = Field("", description="storage root; empty = $WAN_PIPELINE_STORAGE or <checkout>/storage")
    device: str = Field("auto", description="auto (the preset's device) | cpu | cuda:N")
    devices: list[str] = Field(
        default_factory=lambda: ["auto"],
        description="device slots: [auto] ($WAN_PIPELINE_DEVICES or every visible GPU) | a list like [cuda:0, cuda:1] or [cpu, cpu]",
    )
    lock_timeout_s: float = Field(-1, description="seconds to wait for the device lock; -1 waits forever")

    def layout(self) -> StorageLayout:
        return StorageLayout(Path(self.storage_root).resolve() if self.storage_root else storage_root())

    def resolve_device(self, preset_device: str | None) -> str:
        return pick_device(preset_device if self.device == "auto" else self.device)

    def slots(self, preset_device: str) -> tuple[str, ...]:
        """The device slots for a preset running on ``preset_device`` (resolved)."""
        if self.device != "auto" and parse_slots(self.devices) is None:
            return (self.device,)
        return resolve_slots(self.devices, preset_device)

    def runner(self, preset_device: str | None = None) -> StageRunner:
        """The stage runner; with ``preset_device`` it leases this resource's device slots."""
        return StageRunner(self.layout(), self.lock_timeout_s, self.slots(preset_device) if preset_device else None)

    @contextlib.contextmanager
    def stage(self, log, *, stage: str, engine, device: str, scene: str | None = None, seed: int | None = None) -> Iterator[StageRun]:
        """:meth:`StageRunner.stage` on this resource's storage root (see there)."""
        with self.runner().stage(log, stage=stage, engine=engine, device=device, scene=scene, seed=seed) as run:
            yield run
