"""The error types the pipeline raises for bad input, with messages a person can act on."""

from __future__ import annotations


class WanPipelineError(Exception):
    """Base class of every error this project raises on purpose (never a bug)."""


class InputError(WanPipelineError):
    """Bad input: a story, preset, image or video that cannot be used.

    The message names the file, the field path (e.g. ``scenes[2].keyframe.image``) and the fix.
    """

    def __init__(self, file: str | None, problems: list[str] | str):
        self.file = file
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = f"{file}: " if file else ""
        if len(self.problems) == 1:
            super().__init__(head + self.problems[0])
        else:
            super().__init__(head + f"{len(self.problems)} problems\n" + "\n".join(f"  - {p}" for p in self.problems))


class StageError(WanPipelineError):
    """A stage engine could not produce its output (the previous output is left untouched)."""
