"""``EngineCache``: stage engines built once per step and reused across its partitions.

A model stage rendering several scenes in one (single-run backfill) step loads its pipeline once;
the asset releases it when the step ends, so the next stage has the device memory.
"""

from __future__ import annotations

import gc
import json
import logging

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
            config = preset.stage(stage)
            strategy = config.params.get("memory_strategy")
            _CACHE[key] = OOMRetryingEngine(
                build_engine(stage, config, preset),
                strategy,
                lambda s: build_engine(stage, config.model_copy(update={"memory_strategy": s}), preset),
            )
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


class OOMRetryingEngine:
    """An engine whose stage calls survive out-of-memory errors.

    On ``torch.OutOfMemoryError`` in ``render``/``interpolate``/``upscale``/``join`` the engine is
    closed and rebuilt by ``rebuild(strategy)`` with :func:`wan_pipeline.models.memory.stronger_strategy`,
    and the call repeated, until the ladder ends (then the error propagates). Engines whose preset
    section has no ``memory_strategy`` are not rebuilt. :meth:`memory_record` gives
    ``oom_retries`` (of the last call) and ``memory_strategy`` for the telemetry.
    """

    STAGE_METHODS = ("render", "interpolate", "upscale", "join")

    def __init__(self, engine, strategy: str | None, rebuild, log=None):
        self._engine = engine
        self._strategy = strategy
        self._rebuild = rebuild
        self._log = log
        self.oom_retries = 0

    @property
    def engine(self):
        return self._engine

    def memory_record(self) -> dict:
        return {"oom_retries": self.oom_retries, "memory_strategy": self._strategy} if self._strategy else {}

    def close(self) -> None:
        close = getattr(self._engine, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name):
        attr = getattr(self._engine, name)
        if name not in self.STAGE_METHODS or not callable(attr):
            return attr

        def call(*args, **kwargs):
            from wan_pipeline.devices import free_device_memory
            from wan_pipeline.models.memory import stronger_strategy
            from wan_pipeline.oom import is_oom

            self.oom_retries = 0
            while True:
                try:
                    return getattr(self._engine, name)(*args, **kwargs)
                except Exception as exc:
                    current = getattr(self._engine, "memory_strategy", None)
                    if isinstance(current, str) and current != "auto":
                        self._strategy = current  # the strategy "auto" resolved to
                    try:
                        nxt = stronger_strategy(self._strategy) if (self._strategy and is_oom(exc)) else None
                    except ValueError:
                        nxt = None
                    if nxt is None:
                        raise
                # out of the except block: the traceback no longer pins the failed call's tensors
                message = f"{getattr(self._engine, 'name', 'engine')}: out of memory with {self._strategy!r}; retrying with {nxt!r}"
                (self._log or logging.getLogger("wan_pipeline").warning)(message)
                self.close()
                self._engine = None
                free_device_memory()
                self._engine = self._rebuild(nxt)
                self._strategy = nxt
                self.oom_retries += 1

        return call
