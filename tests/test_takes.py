"""Takes: the nightly schedule and the story sensor work per take, each with its own preset."""

from __future__ import annotations

import dagster as dg

from assets.schedules import build_nightly_schedule
from assets.sensors import build_story_sensor
from assets.status import known_takes
from assets.story_assets import build_story_assets
from resources import default_resources
from tests.automation_helpers import edit_scene, make_env
from wan_pipeline.run_config import RunConfig
from wan_pipeline.storage import StorageLayout
from wan_pipeline.story import load_story


def _render_keyframe(instance, story, take: str) -> None:
    config = RunConfig.resolve(story, None, StorageLayout.default(), device="cpu", take=take)
    assert dg.materialize(
        build_story_assets(story),
        selection=dg.AssetSelection.assets([story.id, "keyframe"]),
        partition_key="s1",
        instance=instance,
        resources=default_resources(),
        tags=config.tags(),
    ).success


def test_schedule_and_sensor_request_one_run_per_take(tmp_path, monkeypatch):
    path = make_env(tmp_path, monkeypatch)
    story = load_story(path)
    outputs = tmp_path / "storage" / "outputs" / story.id
    with dg.instance_for_test() as instance:
        assert list(known_takes(instance, story)) == ["tiny"]  # the story's own take, never rendered
        _render_keyframe(instance, story, "alt")
        assert sorted(known_takes(instance, story)) == ["alt", "tiny"]
        assert (outputs / "alt" / "s1" / "keyframe.png").is_file() and not (outputs / "tiny").exists()

        schedule = build_nightly_schedule(story)
        requests = list(schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests)
        by_take = {r.tags["wan_pipeline/take"]: r for r in requests}
        assert sorted(by_take) == ["alt", "tiny"]
        for take, request in by_take.items():
            assets = {tuple(k.path)[1] for k in request.asset_selection}
            assert {"keyframe", "clip", "interpolated", "upscaled", "film", "render_report"} == assets, take
            assert request.tags["wan_pipeline/preset"] == "tiny"
        assert by_take["alt"].tags["wan_pipeline/render/keyframe"] == "s2,s3"  # keyframe[s1] is fresh in take alt
        assert by_take["tiny"].tags["wan_pipeline/render/keyframe"] == "s1,s2,s3"

        sensor = build_story_sensor([story], path.parent)
        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        edit_scene(path, "s3", prompt="a cat asleep")
        second = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
        assert sorted(r.tags["wan_pipeline/take"] for r in second.run_requests) == ["alt", "tiny"]
        assert all(r.tags["wan_pipeline/changed_scenes"] == "s3" for r in second.run_requests)


def test_the_story_jobs_show_the_take_they_render(tmp_path, monkeypatch):
    from assets.definitions import build_definitions

    path = make_env(tmp_path, monkeypatch)
    defs = build_definitions(path.parent)
    for name in ("tiny_story_scenes", "tiny_story_film"):
        job = defs.resolve_job_def(name)
        assert job.tags["wan_pipeline/take"] == "tiny" and job.tags["wan_pipeline/preset"] == "tiny", name
