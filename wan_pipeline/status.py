"""Per scene and stage: materialized, stale (with the reason), missing, or a failed check.

Computed from the story file as it is now (its fingerprints) and from what the Dagster instance
recorded, read through the small :class:`RenderRecords` interface (``assets/status.py`` implements
it on a ``DagsterInstance``; no Dagster import here). The rules follow the render graph
(:mod:`wan_pipeline.fingerprint`):

* ``keyframe[i]`` is stale when scene i's fingerprint differs from the one it was rendered from;
* any partition is stale when a partition it reads is missing or stale, or was rendered after it;
* what was never rendered is missing. Kept (``reused``) outputs count as renders of their time;
* the output file must still be the one recorded (its size and SHA-256 in the telemetry record):
  deleted, it is missing; replaced or edited, it is stale — either way it is rendered again.
* the render report (:data:`~wan_pipeline.fingerprint.REPORT`) reads the film like a story stage.

Everything is per take: the records are the take's renders, the fingerprints those of the
take's preset; a keyframe rendered with another preset than the take's current one reads
"rendered with preset X, current preset Y" (not "edited").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from wan_pipeline.fingerprint import REPORT, RenderPlan, plan_for, upstream_partitions
from wan_pipeline.stages import STAGES
from wan_pipeline.story import Story

MATERIALIZED, STALE, MISSING = "materialized", "stale", "missing"


@dataclass(frozen=True)
class Rendered:
    """The last real render of one partition: its event storage id (orders renders in time),
    for keyframes the scene fingerprint it was rendered from, the preset it was rendered with (name
    and :attr:`~wan_pipeline.preset.Preset.content_sha`), and the output file as recorded: its
    path, size (bytes) and SHA-256 (each None when not recorded)."""

    storage_id: int
    fingerprint: str | None = None
    preset: str | None = None
    preset_sha: str | None = None
    path: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None


class RenderRecords(Protocol):
    def rendered(self, stage: str, scene: str | None) -> Rendered | None:
        """The last render of ``stage[scene]`` (film: scene None), or None."""

    def failed_checks(self, stage: str, scene: str | None) -> list[str]:
        """Names of the asset checks whose latest evaluation failed for ``stage[scene]``."""


@dataclass
class PartitionStatus:
    stage: str
    scene: str | None
    state: str
    reasons: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        text = self.state
        if self.reasons:
            more = f" (+{len(self.reasons) - 2} more)" if len(self.reasons) > 2 else ""
            text += f" ({'; '.join(self.reasons[:2])}{more})"
        if self.failed_checks:
            text += f" · failed check: {', '.join(self.failed_checks)}"
        return text


def output_problem(rendered: Rendered) -> tuple[str, str] | None:
    """Whether the recorded output is still on disk as recorded: ``(MISSING, reason)`` when the
    file is gone, ``(STALE, reason)`` when it is another file (other size, or other SHA-256), None
    when it is the recorded file (or nothing was recorded to compare with)."""
    from wan_pipeline.fingerprint import file_sha256

    if not rendered.path:
        return None
    path = Path(rendered.path)
    if not path.is_file():
        return MISSING, f"output {path} no longer exists"
    if rendered.size_bytes is not None and path.stat().st_size != rendered.size_bytes:
        return STALE, f"output {path.name} replaced since it was rendered ({path.stat().st_size} bytes, recorded {rendered.size_bytes})"
    if rendered.sha256 is not None and file_sha256(path) != rendered.sha256:
        return STALE, f"output {path.name} changed since it was rendered (content hash differs)"
    return None


def _name(stage: str, scene: str | None) -> str:
    return f"{stage}[{scene}]" if scene else stage


def _upstream(story: Story, stage: str, scene: str | None) -> list[tuple[str, str | None]]:
    if stage == REPORT:
        return [(STAGES.story_stages()[-1], None)]
    return upstream_partitions(story, stage, scene)


def _preset_changed(mine: Rendered, preset) -> str | None:
    if preset is None or mine.preset_sha is None or mine.preset_sha == preset.content_sha:
        return None
    was = mine.preset or mine.preset_sha
    now = preset.name if preset.name != was else f"{preset.name} (edited since)"
    return f"rendered with preset {was}, current preset {now}"


def story_status(story: Story, fingerprints: dict[str, str], records: RenderRecords, preset=None) -> list[PartitionStatus]:
    """Status of every partition (scene stages in story order, then the film and the report).

    fingerprints: ``{scene_id: fingerprint}`` of the story as it is now, with the take's preset
    (:func:`wan_pipeline.fingerprint.story_fingerprints`); preset: the take's current preset
    (:class:`~wan_pipeline.preset.Preset`): a keyframe rendered with another one is stale for
    that reason rather than for an edit.
    """
    scene_stages = STAGES.scene_stages()
    nodes = [(st, s) for s in story.scene_ids for st in scene_stages]
    nodes.sort(key=lambda n: scene_stages.index(n[0]))  # graph order: all keyframes first
    nodes.extend((st, None) for st in [*STAGES.story_stages(), REPORT])
    out: dict[tuple, PartitionStatus] = {}
    for stage, scene in nodes:
        mine = records.rendered(stage, scene)
        failed = records.failed_checks(stage, scene)
        if mine is None:
            out[(stage, scene)] = PartitionStatus(stage, scene, MISSING, failed_checks=failed)
            continue
        problem = output_problem(mine)
        if problem is not None and problem[0] == MISSING:
            out[(stage, scene)] = PartitionStatus(stage, scene, MISSING, [problem[1]], failed)
            continue
        reasons = [problem[1]] if problem is not None else []
        if stage == "keyframe":
            changed = _preset_changed(mine, preset)
            if changed:
                reasons.append(changed)
            elif mine.fingerprint is not None and mine.fingerprint != fingerprints.get(scene):
                reasons.append(f"scene {scene} edited since it was rendered")
        for up in _upstream(story, stage, scene):
            up_status = out[up]
            if up_status.state == MISSING:
                reasons.append(f"{_name(*up)} missing")
            elif up_status.state == STALE:
                reasons.append(f"{_name(*up)} stale")
            else:
                theirs = records.rendered(*up)
                if theirs is not None and theirs.storage_id > mine.storage_id:
                    reasons.append(f"{_name(*up)} re-rendered after it")
        out[(stage, scene)] = PartitionStatus(stage, scene, STALE if reasons else MATERIALIZED, reasons, failed)
    return list(out.values())


def stale_plan(story: Story, statuses: list[PartitionStatus]) -> RenderPlan:
    """A plan rendering every stale or missing partition (and so the film when any)."""
    return plan_for(story, [(p.stage, p.scene) for p in statuses if p.state in (STALE, MISSING)])


def format_status(story: Story, statuses: list[PartitionStatus], take: str | None = None) -> str:
    """A table: one row per scene, one column per stage, then the film's and the report's lines."""
    by = {(p.stage, p.scene): p for p in statuses}
    width = max(len(s) for s in story.scene_ids + ["scene", REPORT])
    lines = [f"story {story.id} ({story.source_path})" + (f", take {take}" if take else "")]
    for sid in story.scene_ids:
        lines.append(f"  {sid:<{width}}")
        for st in STAGES.scene_stages():
            lines.append(f"    {st:<13} {by[(st, sid)].label}")
    for st in [*STAGES.story_stages(), REPORT]:
        if (st, None) in by:
            lines.append(f"  {st:<{width}}  {by[(st, None)].label}")
    counts = {k: sum(p.state == k for p in statuses) for k in (MATERIALIZED, STALE, MISSING)}
    failed = sum(bool(p.failed_checks) for p in statuses)
    lines.append(f"{counts[MATERIALIZED]} fresh, {counts[STALE]} stale, {counts[MISSING]} missing, {failed} with failed checks")
    return "\n".join(lines)
