"""Device slots: a stage leases one free slot of ``WAN_PIPELINE_DEVICES``, two processes run on two
slots at once but never two stages on one slot, a killed holder frees its slot, model affinity, and
the instance's ``gpu`` pool limit follows the slot count."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone

import pytest

from wan_pipeline.device_lock import lease_slot, parse_slots, record_model, resolve_slots, slot_lock_path, slot_order
from wan_pipeline.errors import InputError
from wan_pipeline.storage import StorageLayout, instance_yaml

WORKER = textwrap.dedent(
    """
    import json, logging, sys, time
    from wan_pipeline.engines import KeyframeRequest
    from wan_pipeline.engines.registry import build_engine
    from wan_pipeline.media import write_image
    from wan_pipeline.preset import load_preset
    from wan_pipeline.stage_runner import StageRunner
    from wan_pipeline.storage import StorageLayout
    from pathlib import Path
    root, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    preset = load_preset("preview")
    runner = StageRunner(StorageLayout(Path(root)), slots=("cpu", "cpu"))
    built = []
    def factory(device):
        built.append(device)
        return build_engine("keyframe", preset.stages.keyframe, preset)
    records = []
    Path(root, out + ".ready").touch()
    while len(list(Path(root).glob("*.ready"))) < int(sys.argv[4]):
        time.sleep(0.01)
    for i in range(n):
        with runner.stage(logging.getLogger("t"), stage="keyframe", engine=factory, device="cpu", scene=f"s{i}", model_key="k") as run:
            image = run.engine.render(KeyframeRequest("s", "p", "", i, 64, 48))
            time.sleep(0.4)
            run.output = write_image(f"{root}/{out}-{i}.png", image)
        records.append(run.record)
    json.dump({"records": records, "built": built}, open(f"{root}/{out}.json", "w"))
    """
)


def _spans(tmp_path, workers: int) -> list[dict]:
    return [r for i in range(workers) for r in json.loads((tmp_path / f"w{i}.json").read_text())["records"]]


def _ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def test_slots_from_the_environment_and_the_resource(monkeypatch):
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu, cpu")
    assert resolve_slots(None, "cpu") == ("cpu", "cpu")
    assert resolve_slots(["cuda:1", "cuda"], "cpu") == ("cuda:1", "cuda:0")  # explicit beats the environment
    monkeypatch.delenv("WAN_PIPELINE_DEVICES")
    assert resolve_slots("auto", "cpu") == ("cpu",)  # auto on a CPU preset: one slot, the preset's device
    assert parse_slots("auto") is None and parse_slots(["auto"]) is None
    with pytest.raises(InputError, match="'gpu0' is not a device"):
        parse_slots("cpu,gpu0")
    assert [slot_lock_path("/l", ("cpu", "cpu", "cuda:1"), i).name for i in range(3)] == ["gpu-cpu.lock", "gpu-cpu-1.lock", "gpu-1.lock"]


def test_two_slots_run_two_stages_at_once_never_three(tmp_path):
    """Three processes, two CPU slots: stages of different processes overlap, at most two at a time,
    never two on one slot; each record says its slot, host and UTC start/end."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), f"w{i}", "3", "3"]) for i in range(3)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0]
    records = _spans(tmp_path, 3)
    assert len(records) == 9
    for r in records:
        assert r["device"] == "cpu" and r["device_slot"] in (0, 1) and r["host"] == socket.gethostname()  # no WAN_PIPELINE_MACHINE
        start, end = datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])
        assert start.tzinfo == timezone.utc and end > start
    events = sorted(
        [(_ts(r["started_at"]), 1, r["device_slot"]) for r in records] + [(_ts(r["finished_at"]), -1, r["device_slot"]) for r in records]
    )
    running, busiest, on_slot = 0, 0, {0: 0, 1: 0}
    for _, step, slot in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        on_slot[slot] += step
        busiest = max(busiest, running)
        assert on_slot[slot] <= 1, "two stages on one slot"
    assert busiest == 2  # both slots busy at once, never a third stage
    assert {r["device_slot"] for r in records} == {0, 1}
    assert max(r["gpu_wait_s"] for r in records) > 0.1  # the third process waited for a free slot


def test_a_killed_holder_frees_its_slot(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\nfrom wan_pipeline.device_lock import lease_slot\n"
            "with lease_slot(sys.argv[1], ('cpu', 'cpu')) as l:\n    print(l.slot, flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "0"
    with lease_slot(tmp_path, ("cpu", "cpu"), timeout_s=5) as lease:
        assert lease.slot == 1  # slot 0 is held by the other process
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    t0 = time.perf_counter()
    with lease_slot(tmp_path, ("cpu",), timeout_s=5) as lease:  # the killed holder's slot is free at once
        assert lease.slot == 0 and time.perf_counter() - t0 < 2


def test_model_affinity_prefers_the_slot_that_ran_the_model_in_this_process(tmp_path):
    slots = ("cpu", "cpu", "cpu")
    assert slot_order(tmp_path, slots, "clip:wan:m") == [0, 1, 2]
    record_model(tmp_path, slots, 2, "clip:wan:m")
    record_model(tmp_path, slots, 1, "interpolated:rife:r")
    assert slot_order(tmp_path, slots, "clip:wan:m") == [2, 0, 1]
    with lease_slot(tmp_path, slots, "clip:wan:m") as lease:
        assert lease.slot == 2
        with lease_slot(tmp_path, slots, "clip:wan:m") as other:  # the preferred slot is busy: the next free one
            assert other.slot == 0
    (tmp_path / "gpu-cpu-2.model").write_text(json.dumps({"model": "clip:wan:m", "pid": -1, "host": "elsewhere"}))
    assert slot_order(tmp_path, slots, "clip:wan:m")[0] == 2  # ran there by another process: still preferred over none


def test_pool_limit_and_database_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu,cpu,cpu")
    monkeypatch.delenv("WAN_PIPELINE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    layout = StorageLayout(tmp_path)
    home = layout.init()
    text = (home / "dagster.yaml").read_text()
    assert "default_limit: 3" in text and "postgres" not in text.split("telemetry")[1]
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cuda:0,cuda:1")
    layout.init()  # a file made from the template follows the slot count
    assert "default_limit: 2" in (home / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 7\n")
    layout.init()  # somebody else's file is left alone
    assert "default_limit: 7" in (home / "dagster.yaml").read_text()
    import yaml

    data = yaml.safe_load(instance_yaml("postgresql://u:pw@db:5432/wan", slots=4))
    assert data["concurrency"]["pools"]["default_limit"] == 4
    assert data["storage"] == {"postgres": {"postgres_url": "postgresql+psycopg2://u:pw@db:5432/wan"}}
    with pytest.raises(InputError, match="not a postgresql:// URL"):
        instance_yaml("mysql://db/wan", slots=1)


def test_machines_sharing_a_storage_root_lock_their_own_slots(tmp_path, monkeypatch):
    """cuda:0 of one machine never waits for cuda:0 of another on a shared (network) storage root."""
    layout = StorageLayout(tmp_path)
    monkeypatch.setenv("WAN_PIPELINE_MACHINE", "machine-a")
    a = layout.machine_locks()
    monkeypatch.setenv("WAN_PIPELINE_MACHINE", "machine-b")
    b = layout.machine_locks()
    assert a != b and a.parent == b.parent == tmp_path / "locks"
    with lease_slot(a, ("cuda:0",)) as first, lease_slot(b, ("cuda:0",), timeout_s=1) as second:
        assert first.slot == second.slot == 0


def test_ui_backfills_split_into_one_run_per_slot(tmp_path, monkeypatch):
    from assets.story_assets import build_story_assets
    from tests.conftest import write_preset, write_story
    from wan_pipeline.story import load_story

    write_preset(tmp_path / "workflows")
    monkeypatch.setenv("WAN_PIPELINE_WORKFLOWS", str(tmp_path / "workflows"))
    story = load_story(write_story(tmp_path / "stories"))
    monkeypatch.delenv("WAN_PIPELINE_DEVICES", raising=False)
    clip = next(a for a in build_story_assets(story) if a.key.path[-1] == "clip")
    assert clip.backfill_policy.max_partitions_per_run is None  # one slot: a single run, models load once
    monkeypatch.setenv("WAN_PIPELINE_DEVICES", "cpu,cpu")
    clip = next(a for a in build_story_assets(story) if a.key.path[-1] == "clip")
    assert clip.backfill_policy.max_partitions_per_run == 2  # 3 scenes over 2 slots: runs of 2 and 1
