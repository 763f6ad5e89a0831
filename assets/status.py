"""The Dagster side of ``wan-pipeline status`` and of the story sensor: what the instance recorded.

:class:`InstanceRecords` implements :class:`wan_pipeline.status.RenderRecords` on a
``DagsterInstance``; :func:`observed_fingerprints` / :func:`observe_fingerprints` read and write
the ``scene_spec`` observations whose data version is the scene fingerprint.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from assets.checks import CHECKS
from wan_pipeline.errors import InputError
from wan_pipeline.fingerprint import current_fingerprints, story_fingerprints
from wan_pipeline.run_config import PRESET_CONFIG_TAG, STORY_TAG, TAKE_TAG, RunConfig
from wan_pipeline.status import PartitionStatus, Rendered, story_status
from wan_pipeline.storage import StorageLayout
from wan_pipeline.story import Story

DATA_VERSION_TAG = "dagster/data_version"


def _meta_value(meta: dict, key: str):
    v = meta.get(key)
    return getattr(v, "value", v)


class InstanceRecords:
    """Renders and check results of one take of one story as the instance recorded them (a
    materialization belongs to the take in its ``take`` metadata)."""

    def __init__(self, instance: dg.DagsterInstance, story_id: str, take: str):
        self.instance = instance
        self.story_id = story_id
        self.take = take
        self._rendered: dict = {}
        self._checks: dict | None = None

    def _latest(self, stage: str, scene: str | None):
        """The newest materialization of ``stage[scene]`` in this take that is a render (not kept)."""
        flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey([self.story_id, stage]), asset_partitions=[scene] if scene else None)
        cursor = None
        while True:
            page = self.instance.fetch_materializations(flt, limit=50, cursor=cursor)
            for rec in page.records:
                meta = rec.asset_materialization.metadata
                if _meta_value(meta, "take") == self.take and not _meta_value(meta, "reused"):
                    return rec  # a kept output was rendered by an earlier run: not a render
            if not page.has_more:
                return None
            cursor = page.cursor

    def rendered(self, stage: str, scene: str | None) -> Rendered | None:
        if (stage, scene) not in self._rendered:
            rec = self._latest(stage, scene)
            meta = rec.asset_materialization.metadata if rec is not None else {}
            self._rendered[(stage, scene)] = (
                None
                if rec is None
                else Rendered(
                    rec.storage_id,
                    _meta_value(meta, "fingerprint"),
                    _meta_value(meta, "preset"),
                    _meta_value(meta, "preset_sha"),
                    path=_meta_value(meta, "path"),
                    size_bytes=_meta_value(meta, "size_bytes"),
                    sha256=_meta_value(meta, "sha256"),
                )
            )
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


def status_for(instance: dg.DagsterInstance, story: Story, config: RunConfig | None = None) -> list[PartitionStatus]:
    """Per-partition status of one take of ``story`` as written now against the instance's records:
    ``config``'s take and preset (default: the story's own preset and its take)."""
    config = config or story_config(story)
    fingerprints = story_fingerprints(story, config.preset)
    return story_status(story, fingerprints, InstanceRecords(instance, story.id, config.take), config.preset)


def story_config(story: Story, preset=None, take: str | None = None) -> RunConfig:
    """The configuration of one take of ``story`` for reading its state (the story's own preset
    when ``preset`` is None; the device is irrelevant and set to the CPU)."""
    return RunConfig.resolve(story, preset, StorageLayout.default(), device="cpu", take=take)


def known_takes(instance: dg.DagsterInstance, story: Story, limit: int = 500) -> dict[str, RunConfig]:
    """Every take of ``story`` the instance has runs of, with the configuration of its newest run
    (its preset as launched), plus the story's own take; ``{take: RunConfig}``."""
    out: dict[str, RunConfig] = {}
    runs = instance.get_runs(filters=dg.RunsFilter(tags={STORY_TAG: story.id}), limit=limit)  # newest first
    for run in runs:
        take = run.tags.get(TAKE_TAG)
        if not take or take in out or PRESET_CONFIG_TAG not in run.tags:
            continue
        try:
            out[take] = RunConfig.from_tags(story, dict(run.tags), StorageLayout.default(), device="cpu")
        except InputError:
            continue  # a preset that no longer loads: its take is not rendered automatically
    own = story_config(story)
    out.setdefault(own.take, own)
    return out


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
