"""``EngineCache``: the stage engines of a run, built once and reused across its steps.

The cache itself is :class:`wan_pipeline.stage_runner.EngineCache`; this resource gives it the
run's lifecycle: created in ``setup_for_execution``, every engine closed in
``teardown_after_execution`` (private attribute, no module global). A model stage rendering several
scenes in one (single-run backfill) step loads its pipeline once; its asset releases it when the
step ends so the next stage has the device memory, while small post-processing engines stay for the
film's seams.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from wan_pipeline.stage_runner import EngineCache as _Cache
from wan_pipeline.stage_runner import OOMRetryingEngine

__all__ = ["EngineCache", "OOMRetryingEngine"]


class EngineCache(dg.ConfigurableResource):
    """Builds engines for a run (:func:`wan_pipeline.engines.registry.build_engine`) and keeps
    them until :meth:`release` or the end of the run."""

    _cache: _Cache | None = PrivateAttr(default=None)
    _checked: set = PrivateAttr(default_factory=set)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._cache = _Cache()
        self._checked = set()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def _engines(self) -> _Cache:
        if self._cache is None:  # used outside a run (direct calls in scripts and tests)
            self._cache = _Cache()
        return self._cache

    def get(self, stage: str, config):
        """The engine of ``stage`` for the run configuration ``config``
        (:class:`~wan_pipeline.run_config.RunConfig`), built on first use."""
        return self._engines().get(stage, config.preset, config.engine_context())

    def preflight(self, config, stages: tuple[str, ...]) -> None:
        """Check ``stages`` of the run's preset before the first expensive step
        (:func:`wan_pipeline.preflight.check_preset`), each stage once per run. The engines are
        built into this run's cache, so post-processing weights load once per render and the
        stages reuse them. Raises :class:`~wan_pipeline.errors.InputError` with every problem."""
        from wan_pipeline.preflight import check_preset

        todo = tuple(s for s in stages if (config.preset.content_sha, s) not in self._checked)
        if todo:
            check_preset(config.preset, todo, config.engine_context(), build=lambda stage: self.get(stage, config))
            self._checked.update((config.preset.content_sha, s) for s in todo)

    def release(self, stage: str | None = None) -> int:
        """Close the engines of ``stage`` (all when None) except those the stage table keeps for
        the rest of the run; returns how many."""
        return self._engines().release(stage)
