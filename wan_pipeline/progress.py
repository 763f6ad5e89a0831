"""Progress events from running stages to whoever listens (the CLI's progress bars).

Stages run in-process under ``wan-pipeline render``, so a module-level reporter is enough; under
``dagster dev`` nobody registers one and events go nowhere (the Dagster log has them).
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def stage_started(self, stage: str, scene: str | None) -> None: ...
    def stage_step(self, stage: str, scene: str | None, done: int, total: int) -> None: ...
    def stage_finished(self, stage: str, scene: str | None, record: dict) -> None: ...


class _Silent:
    def stage_started(self, stage, scene):
        return None

    def stage_step(self, stage, scene, done, total):
        return None

    def stage_finished(self, stage, scene, record):
        return None


_reporter: Reporter = _Silent()


def set_reporter(reporter: Reporter | None) -> None:
    """Install ``reporter`` (None restores the silent one)."""
    global _reporter
    _reporter = reporter or _Silent()


def reporter() -> Reporter:
    return _reporter
