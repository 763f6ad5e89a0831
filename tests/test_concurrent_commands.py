"""Commands started at the same time on one storage root: the Dagster instance is created once,
whole, whoever comes first (``StorageLayout.instance_lock``)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORY = ROOT / "stories" / "launch_day.yaml"


def _env(storage: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return {**env, "WAN_PIPELINE_STORAGE": str(storage), "PYTHONPATH": str(ROOT)}


def _status(storage: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wan_pipeline.cli", "status", str(STORY)],
        cwd=ROOT,
        env=_env(storage),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _schema_heads(storage: Path) -> dict[str, list]:
    """Each SQLite database of the instance → its alembic_version rows."""
    out = {}
    for db in sorted(storage.rglob("*.db")):
        with sqlite3.connect(db) as conn:
            out[str(db.relative_to(storage))] = conn.execute("select version_num from alembic_version").fetchall()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(3))
def test_four_status_commands_at_once_on_a_fresh_root(tmp_path, round_):
    storage = tmp_path / "storage"  # does not exist yet: every command races to create it
    procs = [_status(storage) for _ in range(4)]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    for rc, out, err in results:
        assert "Traceback" not in err, err[-3000:]
        assert rc == 1, err[-3000:]  # a valid answer: nothing rendered yet, so not all fresh
        assert "0 fresh" in out and "missing" in out
    heads = _schema_heads(storage)
    assert set(heads) == {"history/runs.db", "history/runs/index.db", "schedules/schedules.db"}
    assert all(len(rows) == 1 for rows in heads.values()), heads  # one schema revision each, not two heads
    again = _status(storage)
    assert again.wait(timeout=120) == 1 and "Traceback" not in again.communicate()[1]
