"""`wan-pipeline status` and `render --stale` on a temporary storage root."""

from pathlib import Path

import yaml

from tests.automation_helpers import edit_scene, make_env
from wan_pipeline.cli import main
from wan_pipeline.media.video_io import probe_video


def test_status_render_stale_and_fresh_again(tmp_path, monkeypatch, capsys):
    path = make_env(tmp_path, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "storage"))
    assert main(["status", str(path)]) == 1
    out = capsys.readouterr().out
    assert "0 fresh, 0 stale, 14 missing" in out
    assert main(["render", str(path), "--stale"]) == 0
    assert main(["status", str(path)]) == 0
    assert "14 fresh, 0 stale, 0 missing, 0 with failed checks" in capsys.readouterr().out
    edit_scene(path, "s3", prompt="a cat asleep")
    assert main(["status", str(path)]) == 1
    out = capsys.readouterr().out
    assert "keyframe      stale (scene s3 edited since it was rendered)" in out
    # keyframe[s3]; clip, interpolated, upscaled of s2 (hands off to s3) and s3; the film; its report
    assert "5 fresh, 9 stale, 0 missing" in out
    assert "render_report  stale (film stale)" in out
    assert "clip          stale (keyframe[s3] stale)" in out
    assert main(["render", str(path), "--stale"]) == 0
    assert main(["status", str(path)]) == 0
    assert "14 fresh, 0 stale" in capsys.readouterr().out


def test_deleted_or_replaced_outputs_are_missing_or_stale_and_rendered_again(tmp_path, monkeypatch, capsys):
    """status and render --stale check each recorded output against the file on disk (its size
    and SHA-256 in the telemetry record), not only the event log."""
    import json
    import shutil

    from wan_pipeline.fingerprint import file_sha256

    path = make_env(tmp_path, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "storage"))
    out_dir = tmp_path / "storage" / "outputs" / "tiny_story" / "tiny"  # the story's own take
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
    # film and its report. Missing: upscaled[s2]. Fresh: keyframe[s2], keyframe[s3], clip[s2], interpolated[s2]
    assert "4 fresh, 9 stale, 1 missing, 0 with failed checks" in out

    assert main(["render", str(path), "--stale"]) == 0
    assert (out_dir / "s2" / "upscaled.mp4").is_file()
    assert main(["status", str(path)]) == 0
    assert "14 fresh, 0 stale, 0 missing" in capsys.readouterr().out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_presets_render_two_takes_side_by_side(tmp_path, monkeypatch, capsys):
    """A second preset writes its own take and never touches the first; status per take; a preset
    change reads as such, never as an edit."""
    path = make_env(tmp_path, monkeypatch)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "storage"))
    wf = tmp_path / "workflows"
    draft = yaml.safe_load((wf / "tiny.yaml").read_text())
    draft.update(name="draft", width=48, height=32)
    (wf / "draft.yaml").write_text(yaml.safe_dump(draft))
    out = tmp_path / "storage" / "outputs" / "tiny_story"

    assert main(["render", str(path)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "tiny" / "film.mp4")
    first = _files(out / "tiny")
    assert main(["render", str(path), "--preset", "draft"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "draft" / "film.mp4")
    assert _files(out / "tiny") == first  # the first take, byte for byte
    sizes = {take: (probe_video(out / take / "film.mp4").width, probe_video(out / take / "film.mp4").height) for take in ("tiny", "draft")}
    assert sizes == {"tiny": (128, 96), "draft": (96, 64)}  # the upscaler doubles
    assert (out / "draft" / "render-report.png").is_file() and (out / "tiny" / "run-summary.json").is_file()

    assert main(["status", str(path)]) == 0  # the story's own take is still fresh
    assert main(["status", str(path), "--preset", "draft"]) == 0
    assert "take draft" in capsys.readouterr().out
    assert main(["report", str(path), "--preset", "draft"]) == 0
    assert "48×32" in capsys.readouterr().out

    # the take `tiny` read against the draft preset: a preset change, not an edit
    assert main(["status", str(path), "--preset", "draft", "--take", "tiny"]) == 1
    text = capsys.readouterr().out
    assert "rendered with preset tiny, current preset draft" in text and "edited" not in text
    # the draft preset edited: its take says so
    draft["fps"] = draft.get("fps", 8) + 2
    (wf / "draft.yaml").write_text(yaml.safe_dump(draft))
    assert main(["status", str(path), "--preset", "draft"]) == 1
    text = capsys.readouterr().out
    assert "rendered with preset draft, current preset draft (edited since)" in text and "scene s1 edited" not in text


def test_a_bad_take_name_is_bad_input(tmp_path, monkeypatch, capsys):
    path = make_env(tmp_path, monkeypatch)
    assert main(["render", str(path), "--take", "../escape"]) == 2
    assert "--take" in capsys.readouterr().err
