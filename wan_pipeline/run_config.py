"""One resolved run configuration per render: the story, the preset, the storage root, the device.

A render resolves its preset once — a name in ``workflows/`` or a path to a YAML file — and every
step uses exactly that preset: the run tags carry the preset's content (canonical JSON) and its
hash, so a step (or a run re-executed from the Dagster UI later) rebuilds the very same preset
without looking it up by name again. Engines get an explicit
:class:`~wan_pipeline.engines.context.EngineContext` from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wan_pipeline.engines.context import EngineContext
from wan_pipeline.errors import InputError
from wan_pipeline.preset import Preset, load_preset, preset_from_json
from wan_pipeline.storage import StorageLayout, check_take
from wan_pipeline.story import Story

PRESET_TAG = "wan_pipeline/preset"
"""Run tag: the preset as the user named it (a name in ``workflows/`` or a file path)."""
PRESET_SHA_TAG = "wan_pipeline/preset_sha"
"""Run tag: :attr:`Preset.content_sha` of the resolved preset."""
PRESET_CONFIG_TAG = "wan_pipeline/preset_config"
"""Run tag: the resolved preset's content (:meth:`Preset.to_json`)."""
PRESET_FILE_TAG = "wan_pipeline/preset_file"
"""Run tag: the resolved preset's file (error messages name it)."""
STORY_TAG = "wan_pipeline/story"
"""Run tag: the story id."""
TAKE_TAG = "wan_pipeline/take"
"""Run tag: the take the run writes (``outputs/<story>/<take>/``); default the preset's name."""
CHECKED_TAG = "wan_pipeline/checked"
"""Run tag: the :attr:`Preset.content_sha` whose every stage the launcher checked before the run
(its steps skip the check)."""


@dataclass(frozen=True)
class RunConfig:
    """What every step of one render uses.

    story: the story as on disk when the step runs; preset: the resolved preset; layout: the
    storage root; device: the torch device the stages run on (resolved: ``cpu``, ``cuda:0``);
    take: the take the render writes (``outputs/<story>/<take>/``), derived from the preset's
    name when not given (:func:`default_take`).
    """

    story: Story | None
    preset: Preset
    layout: StorageLayout
    device: str
    take: str = ""

    def __post_init__(self):
        object.__setattr__(self, "take", check_take(self.take or default_take(self.preset)))

    @classmethod
    def resolve(
        cls,
        story: Story | None,
        preset: str | Path | Preset | None,
        layout: StorageLayout,
        device: str | None = None,
        take: str | None = None,
    ) -> RunConfig:
        """Resolve ``preset`` (a name, a file path, a loaded preset, or None: the story's own),
        the device (``device`` or the preset's) and the take (``take`` or the preset's name).
        Raises :class:`InputError` for an unknown preset, an unusable device or a bad take name."""
        from wan_pipeline.devices import pick_device

        if not isinstance(preset, Preset):
            if preset is None:
                if story is None:
                    raise InputError(None, "no preset given: name one (e.g. --preset preview)")
                preset = story.preset
            preset = load_preset(preset)
        try:
            resolved = pick_device(device or preset.device)
        except InputError as exc:
            raise InputError(preset.source_path, [f"device: {p}" for p in exc.problems]) from None
        return cls(story=story, preset=preset, layout=layout, device=resolved, take=take or "")

    @classmethod
    def from_tags(cls, story: Story | None, tags: dict, layout: StorageLayout, device: str | None = None) -> RunConfig:
        """The configuration a run was launched with: the preset content in its tags (checked
        against its hash), else the preset named by :data:`PRESET_TAG`, else the story's own.
        Raises :class:`InputError` when the tags disagree with themselves."""
        content, take = tags.get(PRESET_CONFIG_TAG), tags.get(TAKE_TAG) or None
        if content:
            preset = preset_from_json(content, tags.get(PRESET_FILE_TAG))
            expected = tags.get(PRESET_SHA_TAG)
            if expected and preset.content_sha != expected:
                raise InputError(
                    tags.get(PRESET_FILE_TAG),
                    f"the run's preset content hashes to {preset.content_sha}, its tag says {expected}: launch the render again",
                )
            return cls.resolve(story, preset, layout, device, take)
        return cls.resolve(story, tags.get(PRESET_TAG) or None, layout, device, take)

    def tags(self) -> dict[str, str]:
        """Run tags that make every step (and a later re-execution) use exactly this preset."""
        ref = self.preset.source_path if self.preset.source_path and not _is_named(self.preset) else self.preset.name
        tags = {
            PRESET_TAG: str(ref),
            PRESET_SHA_TAG: self.preset.content_sha,
            PRESET_CONFIG_TAG: self.preset.to_json(),
            TAKE_TAG: self.take,
        }
        if self.preset.source_path:
            tags[PRESET_FILE_TAG] = str(self.preset.source_path)
        if self.story is not None:
            tags[STORY_TAG] = self.story.id
        return tags

    def on_device(self, device: str | None) -> RunConfig:
        """This configuration on ``device`` (a leased device slot); itself when None or the same."""
        from dataclasses import replace

        return self if device in (None, self.device) else replace(self, device=device)

    def engine_context(self) -> EngineContext:
        """The context every engine of this render is built with."""
        return EngineContext(
            name=self.preset.name,
            source_path=self.preset.source_path,
            device=self.device,
            width=int(self.preset.width),
            height=int(self.preset.height),
            fps=float(self.preset.fps),
            storage_root=self.layout.root,
            story_dir=self.story.base_dir if self.story is not None else None,
        )

    def output(self, stage: str, scene_id: str | None) -> Path:
        """Where ``stage`` of ``scene_id`` (None: a story stage) writes in this take."""
        return self.layout.output(self.story.id, scene_id, stage, take=self.take)


def default_take(preset: Preset) -> str:
    """The take a preset renders into unless ``--take`` says otherwise: its name, with any
    character a take name cannot hold (:data:`~wan_pipeline.storage.TAKE_RE`) replaced by ``-``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", str(preset.name or "take"))[:64].lstrip(".")
    return name or "take"


def _is_named(preset: Preset) -> bool:
    """True when ``preset`` is the file ``workflows/<name>.yaml`` (the tag can say just the name)."""
    from wan_pipeline.preset import workflows_dir

    return bool(preset.source_path) and Path(preset.source_path) == (workflows_dir() / f"{preset.name}.yaml").resolve()
