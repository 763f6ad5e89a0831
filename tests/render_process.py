"""A ``wan-pipeline render`` subprocess for tests that act on a render while it runs (a second
render at once, a signal): its stderr lines are collected as they come."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO


class RenderProcess:
    """``python -m wan_pipeline.cli render STORY`` in ``env``, started at construction; ``lines``
    are its stderr lines so far."""

    def __init__(self, env: dict, story: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wan_pipeline.cli", "render", str(story)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def wait_for(self, text: str, timeout: float = 180) -> None:
        """Return once a stderr line contains ``text``; fails when the render ends first or after
        ``timeout`` seconds, showing its stderr."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or any(text in line for line in self.lines), self.err
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s:\n{self.err}"
            time.sleep(0.2)

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        """(exit code, stdout) once the render ends."""
        rc = self.proc.wait(timeout)
        out = self.proc.stdout.read()
        time.sleep(0.2)  # the reader thread drains the rest of stderr
        return rc, out

    @property
    def err(self) -> str:
        """The last 3000 characters of its stderr."""
        return "".join(self.lines)[-3000:]
