"""`wan-pipeline status` and `render --stale` on a temporary storage root."""

from tests.automation_helpers import edit_scene, make_env
from wan_pipeline.cli import main


def test_status_render_stale_and_fresh_again(tmp_path, monkeypatch, capsys):
    path = make_env(tmp_path, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "storage"))
    assert main(["status", str(path)]) == 1
    out = capsys.readouterr().out
    assert "0 fresh, 0 stale, 13 missing" in out
    assert main(["render", str(path), "--stale"]) == 0
    assert main(["status", str(path)]) == 0
    assert "13 fresh, 0 stale, 0 missing, 0 with failed checks" in capsys.readouterr().out
    edit_scene(path, "s3", prompt="a cat asleep")
    assert main(["status", str(path)]) == 1
    out = capsys.readouterr().out
    assert "keyframe      stale (scene s3 edited since it was rendered)" in out
    # keyframe[s3]; clip, interpolated, upscaled of s2 (hands off to s3) and s3; the film
    assert "5 fresh, 8 stale, 0 missing" in out
    assert "clip          stale (keyframe[s3] stale)" in out
    assert main(["render", str(path), "--stale"]) == 0
    assert main(["status", str(path)]) == 0
    assert "13 fresh, 0 stale" in capsys.readouterr().out
