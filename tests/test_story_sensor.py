"""The story sensor, evaluated with Dagster's test helpers on a temporary instance."""

import dagster as dg
import pytest

from assets.definitions import build_definitions
from assets.sensors import build_story_sensor
from assets.status import status_for
from tests.automation_helpers import edit_scene, make_env, render_all, write_story
from tests.conftest import dagster_test_instance
from wan_pipeline.fingerprint import current_fingerprints
from wan_pipeline.status import MATERIALIZED
from wan_pipeline.story import load_story


class LogSpy:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        return lambda msg, *a, **k: self.lines.append((level, msg))


def tick(instance, path, cursor=None, loaded=None):
    loaded = loaded or [load_story(path)]
    sensor = build_story_sensor(loaded, path.parent)
    defs = build_definitions(stories=loaded)
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    spy = LogSpy()
    cls = type(ctx)
    original = cls.__dict__["log"]
    cls.log = property(lambda self: spy)  # the sensor's log lines, to assert on
    try:
        result = sensor(ctx)
    finally:
        cls.log = original
    for event in result.asset_events:  # what the daemon would store
        instance.report_runless_asset_event(event)
    return result, spy.lines


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sensor")
    mp = pytest.MonkeyPatch()
    path = make_env(tmp, mp)
    with dagster_test_instance() as instance:
        render_all(instance, path)
        yield instance, path
    mp.undo()


def test_prompt_edit_requests_one_run_for_affected_partitions_then_fresh(rendered):
    instance, path = rendered
    first, _ = tick(instance, path)
    assert first.run_requests == []  # rendered and observed: nothing changed
    edit_scene(path, "s2", prompt="an astronaut waving at the camera")
    result, lines = tick(instance, path, cursor=first.cursor)
    assert len(result.run_requests) == 1
    req = result.run_requests[0]
    assert {tuple(k.path) for k in req.asset_selection} == {
        ("tiny_story", st) for st in ("keyframe", "clip", "interpolated", "upscaled", "film", "render_report")
    }
    assert req.tags["wan_pipeline/story"] == "tiny_story" and req.tags["wan_pipeline/changed_scenes"] == "s2"
    assert req.tags["wan_pipeline/take"] == "tiny" and req.tags["wan_pipeline/preset"] == "tiny"
    assert (req.tags["dagster/asset_partition_range_start"], req.tags["dagster/asset_partition_range_end"]) == ("s1", "s2")
    assert req.tags["wan_pipeline/render/keyframe"] == "s2"
    assert req.tags["wan_pipeline/render/clip"] == req.tags["wan_pipeline/render/upscaled"] == "s1,s2"
    new_fp = current_fingerprints(load_story(path))["s2"]
    assert [(e.partition, e.tags["dagster/data_version"]) for e in result.asset_events] == [("s2", new_fp)]

    story = load_story(path)
    stale = {(p.stage, p.scene) for p in status_for(instance, story) if p.state != MATERIALIZED}
    assert stale == {
        ("keyframe", "s2"),
        ("clip", "s1"),
        ("clip", "s2"),
        ("interpolated", "s1"),
        ("interpolated", "s2"),
        ("upscaled", "s1"),
        ("upscaled", "s2"),
        ("film", None),
        ("render_report", None),
    }

    # execute the requested run as the daemon would
    from assets.checks import build_story_checks
    from assets.story_assets import build_story_assets
    from resources import default_resources

    before = {s: (path.parent.parent / "storage/outputs/tiny_story/tiny" / s / "keyframe.png").stat().st_mtime_ns for s in ("s1", "s3")}
    run = dg.materialize(
        [*build_story_assets(story), *build_story_checks(story)],
        selection=req.asset_selection,
        instance=instance,
        resources=default_resources(),
        tags=req.tags,
    )
    assert run.success
    after = {s: (path.parent.parent / "storage/outputs/tiny_story/tiny" / s / "keyframe.png").stat().st_mtime_ns for s in ("s1", "s3")}
    assert after == before  # keyframe[s1] (in the range) was kept, s3 untouched
    assert all(p.state == MATERIALIZED for p in status_for(instance, story))
    again, _ = tick(instance, path, cursor=result.cursor)
    assert again.run_requests == []


def test_title_or_comment_edit_requests_nothing(rendered):
    instance, path = rendered
    doc = path.read_text()
    first, _ = tick(instance, path)
    write_story(path, [dict(s) for s in load_story(path).model_dump(mode="json")["scenes"]], title="New title", comment="just a note")
    result, _ = tick(instance, path, cursor=first.cursor)
    assert result.run_requests == [] and result.asset_events == []
    path.write_text(doc)


def test_invalid_story_is_logged_and_renders_nothing(rendered):
    instance, path = rendered
    doc = path.read_text()
    loaded = [load_story(path)]
    path.write_text(doc.replace("duration_s: 0.5", "duration_s: -1", 1))
    result, lines = tick(instance, path, loaded=loaded)
    assert result.run_requests == []
    assert any(level == "error" and "duration_s" in msg for level, msg in lines)
    path.write_text(doc)


def test_scene_list_change_asks_for_reload_then_renders_new_scene(rendered, monkeypatch):
    instance, path = rendered
    doc = path.read_text()
    monkeypatch.setenv("WAN_PIPELINE_WEBSERVER", "http://127.0.0.1:9")  # nothing listens: reload is only asked for
    loaded = [load_story(path)]
    scenes = load_story(path).model_dump(mode="json")["scenes"]
    new = {"id": "s4", "prompt": "a coffee cup", "duration_s": 0.5, "seed": 4, "camera": "pan_left", "transition": "cut"}
    write_story(path, [*scenes, new])
    result, lines = tick(instance, path, loaded=loaded)
    assert result.run_requests == []
    assert any("RELOAD NEEDED" in msg and "s4" in msg for _, msg in lines)
    # after the reload the code location knows s4: it renders s4 (s3 cuts to it: no other clip)
    result, _ = tick(instance, path, cursor=result.cursor)
    (req,) = result.run_requests
    assert req.tags["wan_pipeline/render/keyframe"] == "s4" and req.tags["wan_pipeline/render/clip"] == "s4"
    path.write_text(doc)
