"""Bad input (issue 11): every case is an InputError / exit 2 naming the file or option and the fix,
never a traceback; one unreadable story never takes down the others."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.conftest import IMAGES, write_story
from wan_pipeline.cli import main
from wan_pipeline.errors import InputError
from wan_pipeline.media.image_io import MAX_IMAGE_PIXELS, read_image
from wan_pipeline.story import ID_MAX_LENGTH, load_story, parse_story

GOOD_SCENE = {"id": "dawn", "prompt": "a lighthouse", "duration_s": 1.0}


def _error(path) -> InputError:
    with pytest.raises(InputError) as exc:
        load_story(path)
    assert exc.value.file == str(path)
    return exc.value


def _cli(argv, capsys) -> tuple[int, str]:
    """Run the CLI; argparse errors (SystemExit) count as their exit code."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- 1. unreadable story files --------------------------------------------------------------------

LATIN1 = "id: tale\nscenes:\n  - {id: one, prompt: 'caf\xe9 au lait', duration_s: 1}\n"


def _unreadable_files(folder: Path) -> dict[str, Path]:
    return {
        "latin1": _write(folder / "latin1.yaml", LATIN1.encode("latin-1")),
        "utf16": _write(folder / "utf16.yaml", LATIN1.encode("utf-16")),
        "deep_yaml": _write(folder / "deep.yaml", ("id: tale\nx: " + "[" * 5000 + "]" * 5000 + "\n").encode()),
        "deep_json": _write(folder / "deep.json", ('{"id": "tale", "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()),
        "deep_map": _write(folder / "deepmap.yaml", ("id: tale\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n").encode()),
    }


@pytest.mark.parametrize("kind", ["latin1", "utf16", "deep_yaml", "deep_json", "deep_map"])
def test_unreadable_story_is_an_input_error_with_the_fix(tmp_path, kind):
    path = _unreadable_files(tmp_path)[kind]
    exc = _error(path)
    fix = {"latin1": "save the file as UTF-8", "utf16": "is UTF-16 text; save it as UTF-8"}
    assert fix.get(kind, "nested more than 32 levels deep") in str(exc)


def test_utf8_with_bom_is_read(tmp_path):
    path = _write(tmp_path / "bom.yaml", b"\xef\xbb\xbf" + LATIN1.encode("utf-8"))
    assert load_story(path).scene("one").prompt == "caf\xe9 au lait"


def test_one_unreadable_file_does_not_take_down_the_other_stories(tmp_path):
    from assets.definitions import load_stories

    write_story(tmp_path, [GOOD_SCENE], story_id="good_one", preset="preview")
    bad = _unreadable_files(tmp_path)
    stories, errors = load_stories(tmp_path)
    assert [s.id for s in stories] == ["good_one"]
    assert set(errors) == {str(p) for p in bad.values()}


@pytest.mark.parametrize("command", ["validate", "status"])
def test_validate_and_status_print_no_traceback(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "storage"))
    for path in _unreadable_files(tmp_path).values():
        rc, err = _cli([command, path], capsys)
        assert rc == 2 and str(path) in err


# -- 2. image content, LoRA paths, scene-id length, preset checks ------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid 1x1 greyscale PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")


def _story_with_image(folder: Path, data: bytes, name: str = "key.png") -> Path:
    path = write_story(folder, [{**GOOD_SCENE, "keyframe": {"image": f"images/{name}"}}], preset="preview")
    _write(folder / "images" / name, data)
    return path


@pytest.mark.parametrize("case", ["not_an_image", "truncated", "bomb"])
def test_validate_checks_image_content(tmp_path, capsys, case):
    png = (IMAGES / "coffee.png").read_bytes()
    data = {"not_an_image": b"this is text, not a PNG\n" * 10, "truncated": png[: len(png) // 2], "bomb": _png_claiming(30000, 30000)}
    path = _story_with_image(tmp_path, data[case])
    exc = _error(path)
    assert "scenes[0].keyframe" in str(exc) and "key.png" in str(exc)
    if case == "bomb":
        assert "million pixels" in str(exc) and "scale it down" in str(exc)
    rc, err = _cli(["validate", path], capsys)
    assert rc == 2 and "scenes[0].keyframe" in err


def test_bomb_is_refused_from_the_header_before_decoding(tmp_path):
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    with pytest.raises(InputError, match="million"):
        read_image(_write(tmp_path / "b.png", _png_claiming(side, side)))


def test_16_bit_png_keeps_its_tones(tmp_path):
    grey16 = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    img = read_image(tmp_path / "g16.png")
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    expected = np.round(grey16 / 257.0)
    assert np.abs(img[..., 0].astype(int) - expected).max() <= 1
    assert (img[..., 0] == img[..., 2]).all() and abs(img.mean() - 127.5) < 1  # not a white frame
    rgb16 = np.stack([grey16, grey16 // 2, 65535 - grey16], axis=-1)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    img = read_image(tmp_path / "c16.png")
    assert np.abs(img.astype(int) - np.round(rgb16 / 257.0)).max() <= 1
    # and it passes validation as a keyframe
    story = _story_with_image(tmp_path / "s", (tmp_path / "g16.png").read_bytes())
    assert load_story(story).scene_ids == ["dawn"]


@pytest.mark.parametrize("mode", ["P", "LA", "L", "1", "CMYK", "RGBA", "I", "F"])
def test_other_image_modes_convert_to_rgb(tmp_path, mode):
    from PIL import Image

    src = Image.open(IMAGES / "coffee.png").convert("RGB").resize((64, 48))
    expected = np.asarray(src.convert("L").convert("RGB") if mode in ("LA", "L", "I", "F") else src, dtype=np.int16)
    img = src.convert(mode) if mode not in ("I", "F") else src.convert("L").convert(mode)
    if mode == "I":  # 16-bit range, as a 16-bit PNG decodes
        img = Image.fromarray(np.asarray(img, dtype=np.int32) * 257, mode="I")
    if mode == "F":  # float 0..1
        img = Image.fromarray(np.asarray(img, dtype=np.float32) / 255.0, mode="F")
    if mode == "P":  # the palette's own colours (quantised and dithered from the photo)
        expected = np.asarray(img.convert("RGB"), dtype=np.int16)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.tif" if mode in ("I", "F") else "x.png")
    img.save(path)
    out = read_image(path)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    if mode != "1":  # 1-bit is dithered: only its brightness is comparable
        tolerance = {"CMYK": 8}.get(mode, 1)  # JPEG quantisation, mean grey levels
        assert np.abs(out.astype(np.int16) - expected).mean() <= tolerance
    assert 20 < out.mean() < 235  # never a white (or black) frame


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg").shape == (40, 20, 3)


def _lora_file(path: Path) -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"blocks.0.attn.to_q.lora_A.weight": np.zeros((4, 16), np.float32)}, str(path))
    return path


def _story_with_lora(folder: Path, lora_path: str) -> Path:
    return write_story(folder, [{**GOOD_SCENE, "loras": [{"path": lora_path, "strength": 0.5}]}], preset="preview")


def test_lora_inside_the_story_folder_is_accepted(tmp_path):
    _lora_file(tmp_path / "loras" / "style.safetensors")
    story = load_story(_story_with_lora(tmp_path, "loras/style.safetensors"))
    scene = story.scene("dawn")
    assert story.lora_path(scene.loras[0]) == (tmp_path / "loras" / "style.safetensors").resolve()


@pytest.mark.parametrize(
    ("lora", "expected"),
    [
        ("../outside.safetensors", "outside the story's folder"),
        ("/dev/zero", "outside the story's folder"),
        ("loras/missing.safetensors", "not found"),
        ("loras/model.ckpt", "must be a .safetensors file"),
        ("loras/garbage.safetensors", "not a readable safetensors file"),
        ("loras/zero.safetensors", "not a regular file"),
    ],
)
def test_bad_lora_paths_fail_validation(tmp_path, capsys, lora, expected):
    folder = tmp_path / "story"
    _lora_file(tmp_path / "outside.safetensors")
    _write(folder / "loras" / "model.ckpt", b"\x80\x04pickle")
    _write(folder / "loras" / "garbage.safetensors", b"\xff" * 64)
    (folder / "loras" / "zero.safetensors").symlink_to(folder / "loras")  # a folder named like a file
    path = _story_with_lora(folder, lora)
    exc = _error(path)
    assert "scenes[0].loras[0].path" in str(exc) and expected in str(exc)
    rc, err = _cli(["validate", path], capsys)
    assert rc == 2 and expected in err


@pytest.mark.parametrize("field", ["image", "lora"])
@pytest.mark.parametrize("name", ["a" * 300 + ".png", "a\x00b.png"])
def test_unusable_paths_are_field_errors(tmp_path, field, name):
    scene = {**GOOD_SCENE, "keyframe": {"image": name}} if field == "image" else {**GOOD_SCENE, "loras": [{"path": name}]}
    msg = str(_error(write_story(tmp_path, [scene], preset="preview")))
    where = "scenes[0].keyframe" if field == "image" else "scenes[0].loras[0].path"
    assert where in msg and "not a usable path" in msg


def test_fingerprint_never_reads_a_lora_outside_the_story_folder(tmp_path):
    from wan_pipeline.fingerprint import scene_fingerprint

    _lora_file(tmp_path / "outside.safetensors")
    folder = tmp_path / "story"
    folder.mkdir()
    data = {"id": "tale", "scenes": [{**GOOD_SCENE, "loras": [{"path": "../outside.safetensors"}]}]}
    story = parse_story(data)  # built without a source file: no folder to check against at load
    story = story.model_copy(update={"source_path": str(folder / "tale.yaml")})
    with pytest.raises(InputError, match="outside the story's folder"):
        scene_fingerprint(story, "dawn")


def test_long_scene_id_fails_validation_with_the_limit(tmp_path, capsys):
    path = write_story(tmp_path, [{**GOOD_SCENE, "id": "a" * 500}], preset="preview")
    exc = _error(path)
    assert "scenes[0].id" in str(exc) and str(ID_MAX_LENGTH) in str(exc)
    ok = write_story(tmp_path / "ok", [{**GOOD_SCENE, "id": "a" * ID_MAX_LENGTH}], preset="preview")
    assert load_story(ok).scene_ids == ["a" * ID_MAX_LENGTH]


def _bad_preset(folder: Path) -> Path:
    from tests.conftest import REPO

    data = yaml.safe_load((REPO / "workflows" / "preview.yaml").read_text())
    data["stages"]["interpolated"]["engine"] = "no_such_engine"
    data["stages"]["film"]["crf"] = -5
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bad.yaml").write_text(yaml.safe_dump(data))
    return folder / "bad.yaml"


def test_validate_runs_the_render_preset_checks_and_lists_every_problem(tmp_path, capsys):
    preset = _bad_preset(tmp_path / "presets")
    story = write_story(tmp_path / "story", [{**GOOD_SCENE, "duration_s": 0}, {**GOOD_SCENE, "id": "b", "camera": "spin"}])
    rc, err = _cli(["validate", story, "--preset", preset], capsys)
    assert rc == 2
    for expected in ("scenes[0].duration_s", "scenes[1].camera", "stages.interpolated.engine", "no_such_engine", "stages.film.crf"):
        assert expected in err, expected
    assert str(story) in err and str(preset) in err


# -- 3. misleading messages -------------------------------------------------------------------------


def test_scene_errors_add_no_false_empty_scenes_error(tmp_path):
    msg = str(_error(write_story(tmp_path, [{**GOOD_SCENE, "camera": "spin"}, {**GOOD_SCENE, "id": "b", "extra": 1}])))
    assert "scenes[0].camera" in msg and "scenes[1].extra" in msg
    assert "at least 1 item" not in msg and "2 problems" in msg
    empty = tmp_path / "empty.yaml"
    empty.write_text("id: tale\nscenes: []\n")
    assert "at least one scene" in str(_error(empty))


@pytest.mark.parametrize(("text", "expected"), [(".nan", "not a number"), (".inf", "not a number"), ("true", "must be a number, not true")])
def test_nan_and_boolean_durations(tmp_path, text, expected):
    path = tmp_path / "s.yaml"
    path.write_text(f"id: tale\nscenes:\n  - id: one\n    prompt: x\n    duration_s: {text}\n")
    msg = str(_error(path))
    assert f"scenes[0].duration_s: {expected}" in msg and "600" not in msg


def test_json_nan_duration_and_boolean_seed(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"id": "tale", "scenes": [{"id": "one", "prompt": "x", "duration_s": NaN, "seed": false}]}')
    msg = str(_error(path))
    assert "scenes[0].duration_s: not a number" in msg and "scenes[0].seed: must be a whole number, not false" in msg


def test_allowed_fields_hide_internal_source_path(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("id: tale\ntitel: x\nscenes:\n  - {id: one, prompt: x, duration_s: 1}\n")
    msg = str(_error(path))
    assert "titel: unknown field" in msg and "title" in msg and "source_path" not in msg


def test_duplicate_keys_are_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("id: tale\nscenes:\n  - id: one\n    prompt: x\n    duration_s: 1\n    duration_s: 2\n")
    msg = str(_error(path))
    assert "'duration_s' is given twice" in msg and "line 6" in msg
    js = tmp_path / "s.json"
    js.write_text(json.dumps({"id": "tale", "scenes": []})[:-1] + ', "id": "other"}')
    assert "'id' is given twice" in str(_error(js))


def test_bad_factor_and_scale_are_blamed_on_the_option(tmp_path, capsys):
    from wan_pipeline.media.clip import Clip
    from wan_pipeline.media.video_io import write_video

    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    src = write_video(tmp_path / "in.mp4", Clip(frames, 8), lossless=True).path
    rc, err = _cli(["interpolate", src, tmp_path / "o.mp4", "--factor", "3"], capsys)
    assert rc == 2 and "--factor 3" in err and "2 or 4" in err and "preview.yaml" not in err
    rc, err = _cli(["upscale", src, tmp_path / "o.mp4", "--scale", "10"], capsys)
    assert rc == 2 and "--scale 10" in err and "less than or equal to 8" in err and "preview.yaml" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_empty_scene_list_is_exit_2(workspace, capsys):
    rc, err = _cli(["render", workspace["story"], "--scenes", ",,,"], capsys)
    assert rc == 2 and "--scenes" in err


# -- 4. CLI numbers, output paths, storage root, telemetry sidecar --------------------------------


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    from wan_pipeline.media.clip import Clip
    from wan_pipeline.media.video_io import write_video

    folder = tmp_path_factory.mktemp("clip")
    frames = np.random.default_rng(1).integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    return write_video(folder / "in.mp4", Clip(frames, 8), lossless=True).path


@pytest.mark.parametrize(
    "args",
    [
        ["interpolate", "--fps", "0"],
        ["interpolate", "--fps", "-5"],
        ["interpolate", "--fps", "abc"],
        ["interpolate", "--fps", "nan"],
        ["interpolate", "--fps", "1/0"],
        ["interpolate", "--fps", "1e-10"],
        ["interpolate", "--fps", "1.00000000001"],
        ["interpolate", "--factor", "x"],
        ["upscale", "--scale", "0.001"],
        ["upscale", "--scale", "nan"],
        ["upscale", "--scale", "-2"],
        ["upscale", "--height", "100000"],
        ["upscale", "--height", "0"],
    ],
)
def test_bad_cli_numbers_are_exit_2_naming_the_option(clip_file, tmp_path, capsys, args):
    out = _write(tmp_path / "out.mp4", b"a good output")
    rc, err = _cli([args[0], clip_file, out, *args[1:]], capsys)
    assert rc == 2 and args[1] in err
    assert out.read_bytes() == b"a good output"


def test_output_path_that_is_a_folder_or_under_a_file(clip_file, tmp_path, capsys):
    rc, err = _cli(["upscale", clip_file, tmp_path, "--scale", "2"], capsys)
    assert rc == 2 and "is a folder" in err
    rc, err = _cli(["interpolate", clip_file, Path(clip_file) / "x.mp4", "--factor", "2"], capsys)
    assert rc == 2 and "is a file" in err


@pytest.mark.parametrize("case", ["file", "under_a_file"])
def test_storage_root_that_is_unusable(workspace, monkeypatch, capsys, case):
    blocker = _write(workspace["root"] / "blocker", b"x")
    root = blocker if case == "file" else blocker / "storage"
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(root))
    for command in ("status", "report", "render"):
        rc, err = _cli([command, workspace["story"]], capsys)
        assert rc == 2 and str(root) in err and "WAN_PIPELINE_STORAGE" in err


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0, reason="root writes anywhere")
def test_read_only_storage_root(workspace, monkeypatch, capsys):
    root = workspace["root"] / "ro"
    root.mkdir()
    root.chmod(0o555)
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(root))
    rc, err = _cli(["status", workspace["story"]], capsys)
    assert rc == 2 and "not writable" in err


def test_corrupt_telemetry_sidecar_in_report(workspace, capsys):
    from wan_pipeline.storage import StorageLayout

    sidecar = StorageLayout.default().output("tiny_tale", "one", "clip", take="small").with_suffix(".json")
    _write(sidecar, b'{"duration_s": 1.0, "frames": ')
    rc, err = _cli(["report", workspace["story"]], capsys)
    assert rc == 2 and str(sidecar) in err and "re-render" in err
    _write(sidecar, b"[1, 2]")
    rc, err = _cli(["report", workspace["story"]], capsys)
    assert rc == 2 and str(sidecar) in err


@pytest.mark.parametrize("command", ["validate", "status", "render", "report", "upscale-in", "upscale-out", "doctor", "inspect"])
def test_path_arguments_too_long_for_the_os_are_exit_2(clip_file, tmp_path, capsys, command):
    long = str(tmp_path / ("x" * 300 + ".yaml"))
    argv = {
        "upscale-in": ["upscale", long, tmp_path / "o.mp4"],
        "upscale-out": ["upscale", clip_file, long],
    }.get(command, [command, long])
    rc, err = _cli(argv, capsys)
    assert rc == 2 and "File name too long" in err and "shorter path" in err


def test_make_tiny_models_into_a_folder_under_a_file(tmp_path, capsys):
    blocker = _write(tmp_path / "blocker", b"x")
    rc, err = _cli(["make-tiny-models", blocker / "tiny"], capsys)
    assert rc == 2 and str(blocker / "tiny") in err and "Not a directory" in err


def test_image_broken_after_loading_fails_its_stage_at_once_and_keeps_the_good_output(workspace):
    """Validation at load cannot see an image replaced while a render runs: the keyframe stage
    then fails with the file named, without retries (bad input is not transient)."""
    import dagster as dg

    from assets.story_assets import build_story_assets
    from resources import default_resources

    story = load_story(workspace["story"])
    key = dg.AssetSelection.assets([story.id, "keyframe"])
    tags = {"dagster/partition": "one"}
    with dg.instance_for_test() as instance:
        assets = build_story_assets(story)
        assert dg.materialize(assets, selection=key, instance=instance, resources=default_resources(), tags=tags).success
        from wan_pipeline.storage import StorageLayout

        good = StorageLayout.default().output(story.id, "one", "keyframe", take="small")
        before = good.read_bytes()
        (workspace["story"].parent / "images" / "rocket.jpg").write_bytes(b"this is not a jpeg")
        result = dg.materialize(assets, selection=key, instance=instance, resources=default_resources(), tags=tags, raise_on_error=False)
        assert not result.success
        (failure,) = result.get_step_failure_events()
        assert "rocket.jpg" in str(failure.step_failure_data.error) and "cannot be read as an image" in str(failure.step_failure_data.error)
        assert instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
        assert good.read_bytes() == before
