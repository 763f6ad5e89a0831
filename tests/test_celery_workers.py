"""Two "machines" on Dagster's Celery executor: two Celery workers (separate processes, each with its
own machine name and device slots, concurrency 1) share the PostgreSQL instance and the storage
root; ``wan-pipeline render`` with ``WAN_PIPELINE_EXECUTOR=celery`` sends the scene-range runs'
steps to them. Needs a Redis broker (``WAN_PIPELINE_TEST_BROKER_URL``) and a PostgreSQL server
(``WAN_PIPELINE_TEST_DATABASE_URL``); ``.ci/run`` starts both, elsewhere the test skips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from wan_pipeline.media import probe_video

ROOT = Path(__file__).resolve().parents[1]
BROKER_ENV = "WAN_PIPELINE_TEST_BROKER_URL"


def _broker() -> str:
    url = os.environ.get(BROKER_ENV)
    if not url:
        pytest.skip(f"no Redis broker: set {BROKER_ENV} (.ci/run starts redis-server)")
    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis server at {BROKER_ENV} ({exc})")
    return url


def _start_worker(tmp_path: Path, name: str, broker: str, storage: Path) -> subprocess.Popen:
    conf = tmp_path / f"celery-{name}"
    conf.mkdir()
    (conf / "dagster_celery_config.py").write_text(f"broker_url = {broker!r}\nresult_backend = {broker!r}\n")
    env = {
        **os.environ,
        "WAN_PIPELINE_MACHINE": name,
        "WAN_PIPELINE_DEVICES": "cpu",
        "DAGSTER_HOME": str(storage),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(conf), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-Q", "dagster", "-n", f"{name}@%h"]
    cmd += ["--concurrency=1", "--prefetch-multiplier=1", "--loglevel=WARNING"]
    return subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "w"))


def test_two_celery_workers_render_one_story(workspace, tmp_path, monkeypatch, capsys):
    broker = _broker()
    if not workspace["database"]:
        pytest.skip("the Celery workers share a PostgreSQL instance: set WAN_PIPELINE_TEST_DATABASE_URL")
    from wan_pipeline.cli import main
    from wan_pipeline.storage import StorageLayout

    storage = workspace["storage"]
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu,cpu")  # the gpu pool: both machines' slots together
    StorageLayout(storage).init()  # dagster.yaml with the PostgreSQL storage, before the workers open it
    assert "default_limit: 2" in (storage / "dagster.yaml").read_text()
    monkeypatch.setenv("WAN_PIPELINE_EXECUTOR", "celery")
    monkeypatch.setenv("WAN_PIPELINE_CELERY_BROKER", broker)
    monkeypatch.setenv("WAN_PIPELINE_CELERY_SLOTS", "2")
    workers = [_start_worker(tmp_path, name, broker, storage) for name in ("machine-a", "machine-b")]
    try:
        assert main(["render", str(workspace["story"]), "--preset", "small"]) == 0, capsys.readouterr().err
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
    film = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert probe_video(film).frames == 3 * 8 * 2 + 1  # the film is complete
    take_dir = storage / "outputs" / "tiny_tale" / "small"  # the take: the preset's name
    records = [json.loads(p.read_text()) for p in take_dir.glob("*/*.json")]
    assert len(records) == 12
    assert {r["host"] for r in records} == {"machine-a", "machine-b"}  # both "machines" rendered stages
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        # scene two ends with a cut: one run per scene range (every per-scene stage), then the film
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert instance.get_materialized_partitions(dg.AssetKey(["tiny_tale", "upscaled"])) == {"one", "two", "three"}


def test_celery_render_of_a_story_outside_the_code_location_is_bad_input(workspace, tmp_path, monkeypatch, capsys):
    """The workers load the code location's stories: another file is refused before any run (exit 2)."""
    from tests.conftest import write_story
    from wan_pipeline.cli import main

    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed")
    other = write_story(tmp_path / "elsewhere", story_id="elsewhere_tale")
    monkeypatch.setenv("WAN_PIPELINE_EXECUTOR", "celery")
    monkeypatch.setenv("WAN_PIPELINE_CELERY_BROKER", "redis://127.0.0.1:1/0")
    assert main(["render", str(other), "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "put the story in" in err and str(workspace["stories"]) in err and "Traceback" not in err
