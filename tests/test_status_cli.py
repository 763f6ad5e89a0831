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


def test_deleted_or_replaced_outputs_are_missing_or_stale_and_rendered_again(tmp_path, monkeypatch, capsys):
    """status and render --stale check each recorded output against the file on disk (its size
    and SHA-256 in the telemetry record), not only the event log."""
    import json
    import shutil

    from wan_pipeline.fingerprint import file_sha256

    path = make_env(tmp_path, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "storage"))
    out_dir = tmp_path / "storage" / "outputs" / "tiny_story"
    assert main(["render", str(path)]) == 0
    sidecar = json.loads((out_dir / "s1" / "clip.json").read_text())
    assert sidecar["size_bytes"] == (out_dir / "s1" / "clip.mp4").stat().st_size
    assert sidecar["sha256"] == file_sha256(out_dir / "s1" / "clip.mp4")
    assert main(["status", str(path)]) == 0
    capsys.readouterr()

    (out_dir / "s2" / "upscaled.mp4").unlink()  # deleted
    shutil.copyfile(out_dir / "s3" / "interpolated.mp4", out_dir / "s3" / "clip.mp4")  # replaced by another file
    keyframe = out_dir / "s1" / "keyframe.png"
    data = bytearray(keyframe.read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    keyframe.write_bytes(bytes(data))
    assert main(["status", str(path)]) == 1
    out = capsys.readouterr().out
    assert "upscaled      missing (output " in out and "upscaled.mp4 no longer exists" in out
    assert "clip          stale (output clip.mp4 replaced since it was rendered" in out
    assert "keyframe      stale (output keyframe.png changed since it was rendered (content hash differs))" in out
    # stale: keyframe[s1] and clip, interpolated, upscaled of s1; clip[s3] and its downstream; the
    # film. Missing: upscaled[s2]. Fresh: keyframe[s2], keyframe[s3], clip[s2], interpolated[s2]
    assert "4 fresh, 8 stale, 1 missing, 0 with failed checks" in out

    assert main(["render", str(path), "--stale"]) == 0
    assert (out_dir / "s2" / "upscaled.mp4").is_file()
    assert main(["status", str(path)]) == 0
    assert "13 fresh, 0 stale, 0 missing" in capsys.readouterr().out
