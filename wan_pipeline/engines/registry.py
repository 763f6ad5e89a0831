"""Build a stage's engine from its preset section.

The engine names a preset may use per stage are the ``engines`` of the stage table
(:mod:`wan_pipeline.stages`): ``"module:Class"`` strings imported on first use, so the CPU-only
preview engines never import torch or diffusers. Each class is built as
``Class(params: dict, ctx: EngineContext)`` and validates its own parameters (raising
:class:`~wan_pipeline.errors.InputError`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from wan_pipeline.engines.context import EngineContext
from wan_pipeline.errors import InputError


def engine_names(stage: str) -> list[str]:
    """The engine names a preset may give for ``stage`` (sorted)."""
    from wan_pipeline.stages import STAGES

    return sorted(STAGES[stage].engines)


def engine_class(stage: str, config, source_path: str | None = None) -> type:
    """The class named by ``config.engine`` for ``stage``. Raises :class:`InputError` naming the
    preset file and ``stages.<stage>.engine`` for an unknown name; ``KeyError`` for an unknown stage."""
    from wan_pipeline.stages import STAGES

    target = STAGES[stage].engines.get(config.engine)
    if target is None:
        raise InputError(source_path, f"stages.{stage}.engine: unknown engine {config.engine!r}; allowed: {', '.join(engine_names(stage))}")
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def build_engine(stage: str, config, ctx):
    """Build the engine named by ``config.engine`` for ``stage`` from a preset section.

    config: :class:`~wan_pipeline.preset.StageConfig`; ctx: an :class:`EngineContext` (or a
    :class:`~wan_pipeline.preset.Preset`, whose context is derived with
    :meth:`EngineContext.for_preset`). Raises :class:`InputError` naming the preset file and
    ``stages.<stage>.engine`` when the name is unknown, or the engine's own parameter errors.
    """
    return _construct(stage, config, ctx)


def _construct(stage: str, config, ctx):
    ctx = EngineContext.for_preset(ctx)
    return engine_class(stage, config, ctx.source_path)(config.params, ctx)


def check_engine(stage: str, config, ctx) -> None:
    """Check that the engine of ``stage`` can be built from ``config`` in ``ctx`` without loading
    any weights: the class's own ``check(params, ctx)`` where it has one (engines with weight
    files read their tensor names and shapes only), else build it and close it (engines that load
    nothing until their first call). Raises :class:`InputError` with the problems."""
    ctx = EngineContext.for_preset(ctx)
    cls = engine_class(stage, config, ctx.source_path)
    check = getattr(cls, "check", None)
    if check is not None:
        check(config.params, ctx)
        return
    with built_engine(stage, config, ctx):
        pass


@contextlib.contextmanager
def built_engine(stage: str, config, ctx) -> Iterator[object]:
    """The engine of ``stage`` built as :func:`build_engine` does, for the block only: closed (its
    ``close()``, where it has one) when the block ends. Engines load weights on their first call,
    so building one to ask it about a preset or a story loads nothing; these checks are not the
    render's builds (:func:`build_engine`, once per engine and render). Raises as
    :func:`build_engine`."""
    engine = _construct(stage, config, ctx)
    try:
        yield engine
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
