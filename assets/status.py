"""The Dagster side of ``wan-pipeline status`` and of the story sensor: what the instance recorded.

:class:`InstanceRecords` implements :class:`wan_pipeline.status.RenderRecords` on a
``DagsterInstance``; :func:`observed_fingerprints` / :func:`observe_fingerprints` read and write
the ``scene_spec`` observations whose data version is the scene fingerprint.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from assets.checks import CHECKS
from wan_pipeline.fingerprint import current_fingerprints, story_fingerprints
from wan_pipeline.status import PartitionStatus, Rendered, story_status
from wan_pipeline.story import Story

DATA_VERSION_TAG = "dagster/data_version"


def _meta_value(meta: dict, key: str):
    v = meta.get(key)
    return getattr(v, "value", v)


class InstanceRecords:
    """Renders and check results of one story as the instance recorded them."""

    def __init__(self, instance: dg.DagsterInstance, story_id: str):
        self.instance = instance
        self.story_id = story_id
        self._rendered: dict = {}
        self._checks: dict | None = None

    def rendered(self, stage: str, scene: str | None) -> Rendered | None:
        if (stage, scene) not in self._rendered:
            flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey([self.story_id, stage]), asset_partitions=[scene] if scene else None)
            found = None
            for rec in self.instance.fetch_materializations(flt, limit=25).records:
                meta = rec.asset_materialization.metadata
                if _meta_value(meta, "reused"):
                    continue  # kept by a run that rendered its neighbours: not a render
                found = Rendered(
                    rec.storage_id,
                    _meta_value(meta, "fingerprint"),
                    path=_meta_value(meta, "path"),
                    size_bytes=_meta_value(meta, "size_bytes"),
                    sha256=_meta_value(meta, "sha256"),
                )
                break
            self._rendered[(stage, scene)] = found
        return self._rendered[(stage, scene)]

    def _check_failures(self) -> dict:
        if self._checks is None:
            keys = [dg.AssetCheckKey(dg.AssetKey([self.story_id, stage]), name) for stage, name in CHECKS]
            latest = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
            self._checks = {}
            for key, rec in latest.items():
                if rec.status != AssetCheckExecutionRecordStatus.FAILED or rec.event is None:
                    continue
                evaluation = rec.event.dagster_event.event_specific_data
                failed = _meta_value(dict(evaluation.metadata), "failed_scenes") or []
                self._checks[(key.asset_key.path[-1], key.name)] = list(failed)
        return self._checks

    def failed_checks(self, stage: str, scene: str | None) -> list[str]:
        return [name for (st, name), scenes in self._check_failures().items() if st == stage and (scene is None or scene in scenes)]


def status_for(instance: dg.DagsterInstance, story: Story, preset=None) -> list[PartitionStatus]:
    """Per-partition status of ``story`` as written now against the instance's records, with
    ``preset`` (default: the story's own) in the scene fingerprints."""
    fingerprints = current_fingerprints(story) if preset is None else story_fingerprints(story, preset)
    return story_status(story, fingerprints, InstanceRecords(instance, story.id))


def observed_fingerprints(instance: dg.DagsterInstance, story: Story) -> dict[str, str | None]:
    """The latest observed ``scene_spec`` data version of each scene (None: never observed)."""
    out = {}
    key = dg.AssetKey([story.id, "scene_spec"])
    for sid in story.scene_ids:
        recs = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[sid]), limit=1).records
        out[sid] = recs[0].asset_observation.tags.get(DATA_VERSION_TAG) if recs else None
    return out


def observations(story: Story, fingerprints: dict[str, str]) -> list[dg.AssetObservation]:
    """``scene_spec`` observations carrying each fingerprint as the partition's data version."""
    key = dg.AssetKey([story.id, "scene_spec"])
    return [
        dg.AssetObservation(asset_key=key, partition=sid, tags={DATA_VERSION_TAG: fp}, metadata={"fingerprint": fp})
        for sid, fp in fingerprints.items()
    ]


def observe_fingerprints(
    instance: dg.DagsterInstance, story: Story, fingerprints: dict[str, str] | None = None, *, only_outdated: bool = False
) -> None:
    """Record the story's current fingerprints as ``scene_spec`` observations (runless events).

    only_outdated: record only scenes whose last observation differs from now (after a render: a
    never-observed scene's baseline is the fingerprint its keyframe recorded, so it needs none)."""
    fingerprints = fingerprints or current_fingerprints(story)
    if only_outdated:
        observed = observed_fingerprints(instance, story)
        fingerprints = {sid: fp for sid, fp in fingerprints.items() if observed.get(sid) not in (None, fp)}
    for obs in observations(story, fingerprints):
        instance.report_runless_asset_event(obs)
