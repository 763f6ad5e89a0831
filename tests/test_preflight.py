"""Mistakes are caught before the expensive step: preflight of a preset's stages."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import yaml

from tests.conftest import REPO, write_story
from wan_pipeline.cli import main
from wan_pipeline.models.tiny import ensure_tiny_models, make_tiny_models
from wan_pipeline.preflight import preset_problems
from wan_pipeline.preset import load_preset


def _tiny_preset(folder, **stage_updates):
    data = yaml.safe_load((REPO / "workflows" / "tiny.yaml").read_text())
    for stage, update in stage_updates.items():
        data["stages"][stage].update(update)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(yaml.safe_dump(data))
    return load_preset(folder / "tiny.yaml")


def test_ready_presets_have_no_problems(workspace):
    assert preset_problems(load_preset("preview")) == []


def test_wan22_transformer_with_wan21_vae_is_caught(workspace, tmp_path):
    """The 44-minute crash users reported: a Wan 2.2 (48-channel latent) model paired with a
    Wan 2.1 (16-channel) VAE. Caught from the configs, before anything renders."""
    models = make_tiny_models(tmp_path / "m", names=("wan22-ti2v", "wan21-i2v"))
    mixed = tmp_path / "mixed"
    shutil.copytree(models["wan22-ti2v"], mixed)
    shutil.rmtree(mixed / "vae")
    shutil.copytree(models["wan21-i2v"] / "vae", mixed / "vae")
    preset = _tiny_preset(workspace["workflows"], clip={"model": str(mixed)})
    ensure_tiny_models(workspace["storage"])  # the other stages' miniatures: made explicitly, never on resolve
    problems = preset_problems(preset)
    assert len(problems) == 1 and problems[0].startswith("stages.clip.model:")
    assert "vae" in problems[0] and "16" in problems[0] and "48" in problems[0]


def test_missing_post_weights_and_pickles_are_caught(workspace, tmp_path):
    models = make_tiny_models(tmp_path / "m", names=("wan21-vace",))
    pickled = tmp_path / "pickled"
    shutil.copytree(models["wan21-vace"], pickled)
    weights = next((pickled / "transformer").glob("*.safetensors"))
    weights.rename(weights.with_suffix(".bin"))
    preset = _tiny_preset(workspace["workflows"], upscaled={"model": "models/realesrgan/nope.pth"}, film={"model": str(pickled)})
    problems = preset_problems(preset)
    assert any(p.startswith("stages.upscaled") and "not found" in p for p in problems)
    assert any(p.startswith("stages.film.model") and "transformer" in p and "safetensors" in p for p in problems)


def test_render_refuses_before_any_run(workspace, capsys):
    _tiny_preset(workspace["workflows"], interpolated={"model": "models/rife/missing.pkl"})
    story = write_story(
        workspace["stories"], [{"id": "a", "prompt": "x", "duration_s": 0.5}], story_id="pre", preset="tiny", name="pre.yaml"
    )
    assert main(["render", str(story)]) == 2
    err = capsys.readouterr().err
    assert "stages.interpolated" in err and "missing.pkl" in err
    home = workspace["storage"]
    if (home / "dagster.yaml").exists():
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert instance.get_runs() == []  # nothing was rendered
    assert not (home / "outputs" / "pre").exists()
    json.dumps(err)  # the message is plain text


def test_an_extension_model_that_is_no_vace_checkpoint_is_caught(workspace, capsys):
    """The clip stage's ``extension_model`` (the VACE model that continues long FLF2V scenes) is
    read from its configs before rendering: a text-to-video checkpoint there fails validation
    (exit 2) naming the field and the fix; the tiny preset's own VACE miniature passes."""
    ensure_tiny_models(workspace["storage"])
    assert preset_problems(_tiny_preset(workspace["workflows"])) == []
    problems = preset_problems(_tiny_preset(workspace["workflows"], clip={"extension_model": "models/tiny/t2i"}))
    assert len(problems) == 1 and problems[0].startswith("stages.clip.extension_model: ")
    assert "Wan2.1-T2V-miniature checkpoint, not a Wan VACE one" in problems[0] and "Wan2.1-VACE-14B-diffusers" in problems[0]
    story = write_story(
        workspace["stories"], [{"id": "a", "prompt": "x", "duration_s": 4.0}], story_id="ext", preset="tiny", name="ext.yaml"
    )
    assert main(["validate", str(story)]) == 2
    assert "stages.clip.extension_model" in capsys.readouterr().err
    (problem,) = preset_problems(_tiny_preset(workspace["workflows"], clip={"extension_model": "models/tiny/missing-vace"}))
    assert problem.startswith("stages.clip.extension_model: ") and "missing-vace" in problem
