"""``EngineCache``: stage engines built once per step and reused across its partitions.

A model stage rendering several scenes in one (single-run backfill) step loads its pipeline once;
the asset releases it when the step ends, so the next stage has the device memory.
"""

from __future__ import annotations

import gc
import json

import dagster as dg

from wan_pipeline.engines.registry import build_engine

_CACHE: dict[tuple, object] = {}


def _key(stage: str, preset) -> tuple:
    return (preset.name, preset.source_path, stage, json.dumps(preset.stage(stage).model_dump(), sort_keys=True, default=str))


class EngineCache(dg.ConfigurableResource):
    """Builds engines from a preset (``wan_pipeline.engines.registry``) and keeps them until
    :meth:`release`."""

    def get(self, stage: str, preset):
        """The engine of ``stage`` for ``preset``, built on first use."""
        key = _key(stage, preset)
        if key not in _CACHE:
            _CACHE[key] = build_engine(stage, preset.stage(stage), preset)
        return _CACHE[key]

    def release(self, stage: str | None = None) -> int:
        """Close and drop the cached engines of ``stage`` (all when None); returns how many."""
        keys = [k for k in _CACHE if stage is None or k[2] == stage]
        for k in keys:
            engine = _CACHE.pop(k)
            close = getattr(engine, "close", None)
            if close is not None:
                close()
        if keys:
            gc.collect()
        return len(keys)
