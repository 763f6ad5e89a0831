"""Many stories in one code location: three stories with different scene lists (so different
partitions) load together — through ``dagster definitions validate``, through a running webserver's
GraphQL, and through the story sensor and the nightly schedules evaluated against them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import write_preset, write_story

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENES = {
    "alpha": ["one", "two", "three"],
    "beta": ["x"],
    "gamma": ["p", "q"],
}


def _scenes(ids: list[str]) -> list[dict]:
    images = ["images/rocket.jpg", "images/astronaut.png", "images/chelsea.png"]
    return [
        {"id": sid, "prompt": f"scene {sid}", "duration_s": 0.5, "keyframe": {"image": images[i % 3]}, "transition": "cut"}
        for i, sid in enumerate(ids)
    ]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """``stories/`` with three stories of 3, 1 and 2 scenes, the small preset, a fresh storage root;
    yields the environment pointing at them (also set in this process)."""
    root = tmp_path_factory.mktemp("many")
    write_preset(root / "workflows")
    for story_id, ids in SCENES.items():
        write_story(root / "stories", _scenes(ids), story_id=story_id)
    (root / "storage").mkdir()
    env = {
        "WAN_PIPELINE_STORIES": str(root / "stories"),
        "WAN_PIPELINE_WORKFLOWS": str(root / "workflows"),
        "WAN_PIPELINE_STORAGE": str(root / "storage"),
        "DAGSTER_HOME": str(root / "storage"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield {**os.environ, **env, "PYTHONPATH": str(ROOT)}


def test_definitions_validate_with_three_stories(project):
    done = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "assets.definitions"],
        cwd=ROOT,
        env=project,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Validation successful for code location assets.definitions" in done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict:
    req = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        payload = json.loads(resp.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


WORKSPACE = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"
REPOSITORY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  jobs { name } sensors { name sensorState { status } } schedules { name }
  assetNodes { assetKey { path } partitionKeysByDimension { partitionKeys } } } } } }"""


@pytest.mark.slow
def test_webserver_loads_three_stories(project, tmp_path):
    """The webserver's code location loads every story with its own partitions, jobs and schedule,
    and the one story sensor."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "webserver.log"
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=project,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, entries = time.monotonic() + 180, None
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                entries = _graphql(url, WORKSPACE)["workspaceOrError"]["locationEntries"]
            except OSError:
                entries = None
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                break
            time.sleep(1)
        assert entries and all(e["loadStatus"] == "LOADED" for e in entries), (entries, log.read_text()[-3000:])
        assert [e["locationOrLoadError"]["__typename"] for e in entries] == ["RepositoryLocation"], entries
        (repo,) = _graphql(url, REPOSITORY)["repositoriesOrError"]["nodes"]
        jobs = {j["name"] for j in repo["jobs"]}
        schedules = {s["name"] for s in repo["schedules"]}
        for story_id in SCENES:
            assert {f"{story_id}_scenes", f"{story_id}_film", f"{story_id}_render"} <= jobs
            assert f"nightly_render_{story_id}" in schedules
        assert {s["name"] for s in repo["sensors"]} >= {"story_changes", "recover_killed_runs"}
        partitions = {
            tuple(n["assetKey"]["path"]): n["partitionKeysByDimension"][0]["partitionKeys"]
            for n in repo["assetNodes"]
            if n["partitionKeysByDimension"]
        }
        for story_id, ids in SCENES.items():
            assert partitions[(story_id, "keyframe")] == ids
            assert partitions[(story_id, "upscaled")] == ids
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _definitions():
    from assets.definitions import build_definitions

    return build_definitions()


def test_sensor_requests_one_run_per_story_on_its_own_job(project):
    """Nothing rendered yet: the sensor's first tick asks for every scene of every story, one run
    per story, each on the story's own job and within the story's partitions."""
    defs = _definitions()
    sensor = defs.resolve_sensor_def("story_changes")
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    by_story = {r.tags["wan_pipeline/story"]: r for r in result.run_requests}
    assert set(by_story) == set(SCENES)
    for story_id, ids in SCENES.items():
        req = by_story[story_id]
        assert req.job_name == f"{story_id}_render"
        assert {k.path[0] for k in req.asset_selection} == {story_id}
        assert (req.tags["dagster/asset_partition_range_start"], req.tags["dagster/asset_partition_range_end"]) == (ids[0], ids[-1])
        job = defs.resolve_job_def(req.job_name)
        assert set(req.asset_selection) <= set(job.asset_layer.executable_asset_keys)


def test_sensor_request_executes_on_its_job(project):
    """A sensor request of the one-scene story runs as the daemon would launch it: its job, its
    asset selection and tags; the film comes out."""
    from wan_pipeline.storage import StorageLayout

    defs = _definitions()
    sensor = defs.resolve_sensor_def("story_changes")
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        (req,) = [r for r in result.run_requests if r.tags["wan_pipeline/story"] == "beta"]
        job = defs.resolve_job_def(req.job_name)
        run = job.execute_in_process(instance=instance, asset_selection=req.asset_selection, tags=req.tags)
        assert run.success
    assert StorageLayout.default().film("beta", take=req.tags["wan_pipeline/take"]).stat().st_size > 0


def test_nightly_schedule_per_story(project):
    defs = _definitions()
    with dg.instance_for_test() as instance:
        for story_id, ids in SCENES.items():
            schedule = defs.resolve_schedule_def(f"nightly_render_{story_id}")
            assert schedule.job_name == f"{story_id}_render"
            (req,) = schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests
            assert req.job_name == f"{story_id}_render"
            assert req.tags["wan_pipeline/story"] == story_id
            assert {k.path[0] for k in req.asset_selection} == {story_id}
            assert {k.path[1] for k in req.asset_selection} >= {"keyframe", "film"}
            assert req.tags["dagster/asset_partition_range_end"] == ids[-1]
