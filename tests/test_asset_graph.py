"""The asset graph of a story: keys, partitions, the FLF2V handoff edge, pools; bad stories skipped."""

from __future__ import annotations

import dagster as dg

from assets.definitions import build_definitions, load_stories
from tests.conftest import write_story
from wan_pipeline.story import load_story


def _upstream_keyframes(defs, story_id: str, scene: str) -> list[str]:
    g = defs.resolve_asset_graph()
    clip, kf = dg.AssetKey([story_id, "clip"]), dg.AssetKey([story_id, "keyframe"])
    pd = g.get(clip).partitions_def
    mapping = g.get_partition_mapping(clip, kf)
    res = mapping.get_upstream_mapped_partitions_result_for_partitions(pd.subset_with_partition_keys([scene]), pd, pd)
    return sorted(res.partitions_subset.get_partition_keys())


def test_keys_partitions_and_handoff_edges(tmp_path):
    scenes = [
        {"id": "a", "prompt": "x", "duration_s": 1, "transition": "handoff"},
        {"id": "b", "prompt": "x", "duration_s": 1, "transition": "cut"},
        {"id": "c", "prompt": "x", "duration_s": 1, "transition": "handoff"},
        {"id": "d", "prompt": "x", "duration_s": 1},
    ]
    story = load_story(write_story(tmp_path, scenes, story_id="graph", preset="preview"))
    defs = build_definitions(stories=[story])
    g = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in g.get_all_asset_keys()}
    assert keys == {f"graph/{n}" for n in ("scene_spec", "keyframe", "clip", "interpolated", "upscaled", "film", "render_report")}
    report = g.get(dg.AssetKey(["graph", "render_report"]))
    assert {k.to_user_string() for k in report.parent_keys} == {"graph/film"} and report.partitions_def is None
    for name in ("keyframe", "clip", "interpolated", "upscaled"):
        node = g.get(dg.AssetKey(["graph", name]))
        assert node.partitions_def.get_partition_keys() == ["a", "b", "c", "d"]  # story order
        assert node.pools == {"gpu"} and node.group_name == "graph"
    film = g.get(dg.AssetKey(["graph", "film"]))
    assert film.partitions_def is None and film.pools == {"gpu"}
    assert {k.to_user_string() for k in film.parent_keys} == {"graph/upscaled", "graph/clip"}
    # clip[i] reads keyframe[i] and, when handing off, keyframe[i+1]
    assert _upstream_keyframes(defs, "graph", "a") == ["a", "b"]
    assert _upstream_keyframes(defs, "graph", "b") == ["b"]  # cut
    assert _upstream_keyframes(defs, "graph", "c") == ["c", "d"]
    assert _upstream_keyframes(defs, "graph", "d") == ["d"]  # last scene


def test_invalid_story_is_reported_and_others_load(tmp_path, caplog):
    write_story(tmp_path, [{"id": "a", "prompt": "x", "duration_s": 1}], story_id="good_one", preset="preview")
    (tmp_path / "broken.yaml").write_text("id: broken\nscenes:\n  - id: a\n    prompt: ''\n    duration_s: 1\n")
    (tmp_path / "syntax.yaml").write_text("id: [oops\n")
    stories, errors = load_stories(tmp_path)
    assert [s.id for s in stories] == ["good_one"]
    assert "scenes[0].prompt" in errors[str(tmp_path / "broken.yaml")]
    assert "YAML syntax error at line" in errors[str(tmp_path / "syntax.yaml")]
    defs = build_definitions(folder=tmp_path)
    assert dg.AssetKey(["good_one", "film"]) in defs.resolve_asset_graph().get_all_asset_keys()


def test_code_location_module_loads_repo_stories():
    import assets.definitions as module

    keys = module.defs.resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(["launch_day", "clip"]) in keys
