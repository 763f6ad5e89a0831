"""Scene fingerprints and "what an edit affects", following the render graph downstream.

A scene's fingerprint hashes everything that decides its renders: prompt, negative prompt, seed
(resolved), duration, keyframe spec and the image file's bytes, camera, transition, guidance,
steps, LoRAs (path, strength and file bytes) and the preset's stage parameters
(:meth:`Preset.stage_hash`). The title, comments and key order change nothing.

Dagster's staleness moves one hop at a time (../shared/DESIGN.md), so the set of partitions an edit
makes stale is computed here from the graph itself — the ``reads`` of the stage table
(:mod:`wan_pipeline.stages`)::

    keyframe[i] ─► clip[i] ─► interpolated[i] ─► upscaled[i] ─► film
         └──────► clip[i-1]  (when scene i-1 hands off to i: FLF2V last frame)

No Dagster import: the sensor, the schedule, ``wan-pipeline status`` and ``render --stale`` share it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from wan_pipeline.preset import Preset
from wan_pipeline.stages import STAGES
from wan_pipeline.story import Story

REPORT = "render_report"
"""The report asset read after the last story stage (:mod:`wan_pipeline.report`): every run that
renders the film renders it too, and ``status`` lists it."""
PLAN_TAG_PREFIX = "wan_pipeline/render/"
"""Run tag ``wan_pipeline/render/<stage>`` = comma-separated scene ids that stage renders in the run."""


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a file's bytes (hex), cached on (path, size, mtime); None if it does not exist."""
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    return _file_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)


def scene_payload(story: Story, scene_id: str, preset: Preset | None = None) -> dict:
    """The render-relevant fields of one scene (what :func:`scene_fingerprint` hashes)."""
    scene = story.scene(scene_id)
    payload = scene.model_dump(mode="json", exclude={"id"})
    payload["seed"] = story.seed(scene)
    img = story.image_path(scene)
    if img is not None:
        payload["image_sha256"] = file_sha256(img)
    payload["loras"] = [
        {"path": lora.path, "strength": lora.strength, "sha256": file_sha256(story.lora_path(lora))} for lora in scene.loras
    ]
    if preset is not None:
        payload["preset"] = {stage: preset.stage_hash(stage) for stage in STAGES.names()}
    return payload


def scene_fingerprint(story: Story, scene_id: str, preset: Preset | None = None) -> str:
    """16-hex-digit hash of the scene's render-relevant fields (see the module docstring).

    preset: the preset the story renders with; None leaves the preset out (the story's own
    ``preset`` name is not hashed then, only the scene).
    """
    payload = scene_payload(story, scene_id, preset)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def story_fingerprints(story: Story, preset: Preset | None = None) -> dict[str, str]:
    """``{scene_id: fingerprint}`` for every scene, in story order."""
    return {sid: scene_fingerprint(story, sid, preset) for sid in story.scene_ids}


def structure(story: Story) -> tuple[tuple[str, str], ...]:
    """What the code location's partitions and partition mappings are built from: scene ids and
    transitions in order. A change here needs a code-location reload."""
    return tuple((s.id, s.transition) for s in story.scenes)


def changed_scenes(before: dict[str, str | None], after: dict[str, str]) -> list[str]:
    """Scene ids (in ``after``'s order) whose fingerprint differs from ``before`` (missing = changed)."""
    return [sid for sid, fp in after.items() if before.get(sid) != fp]


def upstream_partitions(story: Story, stage: str, scene_id: str | None) -> list[tuple[str, str]]:
    """The (stage, scene) partitions ``stage[scene_id]`` reads (a story stage: scene_id None)."""
    row = STAGES[stage]
    if not row.per_scene:
        return [(up, s) for s in story.scene_ids for up in row.upstream_stages()]
    deps = []
    for up, on_next in row.upstream():
        if not on_next:
            deps.append((up, scene_id))
        elif (target := story.handoff_target(scene_id)) is not None:
            deps.append((up, target.id))
    return deps


def downstream_partitions(story: Story, stage: str, scene_id: str) -> list[tuple[str, str | None]]:
    """The partitions that read ``stage[scene_id]`` directly (one hop)."""
    out: list[tuple[str, str | None]] = []
    i = story.index(scene_id)
    for reader, on_next in STAGES.readers(stage):
        if not reader.per_scene:
            node = (reader.name, None)
        elif not on_next:
            node = (reader.name, scene_id)
        elif i > 0 and story.scenes[i - 1].transition == "handoff":
            node = (reader.name, story.scenes[i - 1].id)
        else:
            continue
        if node not in out:
            out.append(node)
    return out


def downstream_closure(story: Story, roots) -> set[tuple[str, str | None]]:
    """``roots`` and everything downstream of them: (stage, scene) pairs, film as ("film", None)."""
    seen: set[tuple[str, str | None]] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node[1] is not None:
            todo.extend(downstream_partitions(story, *node))
    return seen


@dataclass(frozen=True)
class RenderPlan:
    """What one run renders: per stage the scene ids (story order), whether the film, and whether
    the render report (always with the film; alone when only the report is out of date).

    A run covers one partition range (Dagster runs one range per run); the stage assets render
    only the scenes listed for them in the run's ``wan_pipeline/render/<stage>`` tags and keep the
    others of the range as they are.
    """

    story_id: str
    scenes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    film: bool = False
    report: bool = False

    @property
    def empty(self) -> bool:
        return not self.film and not self.report and not any(self.scenes.values())

    @property
    def assets(self) -> list[str]:
        """The story's assets the run materializes: :attr:`stages`, then the render report."""
        return self.stages + ([REPORT] if self.film or self.report else [])

    @property
    def stages(self) -> list[str]:
        """Stages with work, in graph order (``film`` last)."""
        return [st for st in STAGES.scene_stages() if self.scenes.get(st)] + (list(STAGES.story_stages()) if self.film else [])

    def all_scenes(self) -> set[str]:
        return {s for ids in self.scenes.values() for s in ids}

    def partition_range(self, order: list[str]) -> tuple[str, str] | None:
        """First and last scene (in ``order``) any stage renders; None when no scene stage works."""
        chosen = [s for s in order if s in self.all_scenes()]
        return (chosen[0], chosen[-1]) if chosen else None

    def tags(self, order: list[str]) -> dict[str, str]:
        """Run tags: the partition range, ``wan_pipeline/render/<stage>`` lists, ``wan_pipeline/story``."""
        tags = {"wan_pipeline/story": self.story_id}
        rng = self.partition_range(order)
        if rng is not None:
            tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"] = rng
        for st in STAGES.scene_stages():
            if self.scenes.get(st):
                tags[PLAN_TAG_PREFIX + st] = ",".join(self.scenes[st])
        return tags

    def describe(self) -> str:
        parts = [f"{st}[{', '.join(self.scenes[st])}]" for st in STAGES.scene_stages() if self.scenes.get(st)]
        if self.film:
            parts.append("film")
        if self.film or self.report:
            parts.append(REPORT)
        return " → ".join(parts) or "nothing"


def plan_for(story: Story, nodes) -> RenderPlan:
    """A :class:`RenderPlan` rendering exactly ``nodes`` ((stage, scene) pairs, film as ("film", None),
    the report as (:data:`REPORT`, None))."""
    nodes = set(nodes)
    scenes = {st: tuple(s for s in story.scene_ids if (st, s) in nodes) for st in STAGES.scene_stages()}
    film = any(s is None and st != REPORT for st, s in nodes)
    return RenderPlan(story.id, {k: v for k, v in scenes.items() if v}, film=film, report=(REPORT, None) in nodes)


def affected_by_edit(story: Story, changed: list[str]) -> RenderPlan:
    """What editing ``changed`` scenes makes stale: keyframe[i], clip[i], clip[i-1] when scene i-1
    hands off to i, their interpolated and upscaled, and the film. Empty for no change."""
    return plan_for(story, downstream_closure(story, [("keyframe", s) for s in changed if s in story.scene_ids]))


def scenes_from_tag(value: str | None) -> list[str] | None:
    """Parse a ``wan_pipeline/render/<stage>`` tag; None when the tag is absent (render the range)."""
    if value is None:
        return None
    return [s for s in value.split(",") if s]


def current_fingerprints(story: Story) -> dict[str, str]:
    """Fingerprints of every scene with the story's own preset (``story.preset``).

    Raises :class:`~wan_pipeline.errors.InputError` when that preset does not load.
    """
    from wan_pipeline.preset import load_preset

    return story_fingerprints(story, load_preset(story.preset))
