"""RIFE 4.6 engine: weight files through the real loader, exact counts/fps/sizes, cuts, errors."""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_pipeline.engines.rife import (
    IFNet,
    RifeInterpolator,
    RifeRunner,
    backward_warp,
    load_ifnet,
    pad_multiple,
    read_state_dict,
)
from wan_pipeline.errors import InputError
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import fit_image, read_image
from wan_pipeline.models.tiny_rife import TINY_WIDTHS, make_tiny_rife, make_tiny_rife_files, tiny_rife_state_dict
from wan_pipeline.preset import load_preset
from wan_pipeline.stages import STAGES

IMAGES = Path(__file__).resolve().parent.parent / "stories" / "images"


def pan_clip(name: str, n: int, width: int, height: int, step: int = 4) -> np.ndarray:
    """n frames of a camera pan over a real photo, uint8 (n, height, width, 3)."""
    big = fit_image(read_image(IMAGES / name), width + step * n, height)
    return np.stack([big[:, i * step : i * step + width] for i in range(n)])


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return make_tiny_rife_files(tmp_path_factory.mktemp("rife"))


@pytest.fixture(scope="module")
def preset():
    return load_preset("preview").model_copy(update={"device": "cpu"})


def engine(weights, preset, **params):
    return RifeInterpolator({"model": str(weights["pkl"]), **params}, preset)


# --- architecture and weights -----------------------------------------------------------------


def test_full_width_module_has_the_official_v46_layout():
    state = IFNet().state_dict()
    assert len(state) == 4 * (2 * 2 + 8 * 3 + 2)  # conv0 ×2, convblock ×8 (conv w/b, beta), lastconv
    assert state["block0.conv0.0.0.weight"].shape == (96, 7, 3, 3)
    assert state["block1.conv0.0.0.weight"].shape == (64, 12, 3, 3)
    assert state["block0.convblock.7.beta"].shape == (1, 192, 1, 1)
    assert state["block3.convblock.0.conv.weight"].shape == (64, 64, 3, 3)
    assert state["block2.lastconv.0.weight"].shape == (96, 24, 4, 4)
    assert 5.2e6 < sum(v.numel() for v in state.values()) < 5.4e6


def test_tiny_weights_are_in_official_format_and_deterministic(weights):
    raw = torch.load(weights["pkl"], weights_only=True)
    assert all(k.startswith("module.block") for k in raw)
    again = tiny_rife_state_dict()
    assert raw.keys() == again.keys() and all(torch.equal(raw[k], again[k]) for k in raw)


def test_pkl_and_safetensors_load_the_same_network(weights):
    a, b = load_ifnet(weights["pkl"]), load_ifnet(weights["safetensors"])
    assert a.widths == b.widths == TINY_WIDTHS
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_full_width_file_loads_strict(tmp_path):
    path = tmp_path / "flownet.pkl"
    torch.save({f"module.{k}": v for k, v in IFNet().state_dict().items()}, path)
    assert load_ifnet(path).widths == (192, 128, 96, 64)


def test_corrupt_file_names_the_file(tmp_path):
    bad = tmp_path / "flownet.pkl"
    bad.write_bytes(b"not a torch file at all")
    with pytest.raises(InputError) as err:
        load_ifnet(bad)
    assert str(bad) in str(err.value) and "cannot be read" in str(err.value)
    bad_st = tmp_path / "flownet.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(InputError, match="cannot be read"):
        load_ifnet(bad_st)
    with pytest.raises(InputError, match="not found"):
        load_ifnet(tmp_path / "missing.pkl")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("module.block1.convblock.3.beta"), "tensor 'block1.convblock.3.beta' is missing"),
        (
            lambda s: s.__setitem__("module.block2.lastconv.0.weight", torch.zeros(16, 30, 4, 4)),
            "tensor 'block2.lastconv.0.weight' has shape (16, 30, 4, 4), expected (16, 24, 4, 4)",
        ),
        (lambda s: s.__setitem__("module.encode.cnn0.weight", torch.zeros(16, 3, 3, 3)), "unexpected tensor 'encode.cnn0.weight'"),
    ],
)
def test_mismatched_state_dict_names_file_and_first_key(tmp_path, edit, message):
    state = tiny_rife_state_dict()
    edit(state)
    path = tmp_path / "flownet.pkl"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        load_ifnet(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_older_rife_layout_is_rejected_at_its_first_key(tmp_path):
    # RIFE 4.0-4.5 style blocks: plain conv stacks ("convblock.0.0.weight"), no beta gains
    state = {k.replace(".conv.", ".0."): v for k, v in tiny_rife_state_dict().items() if not k.endswith(".beta")}
    path = tmp_path / "old.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    with pytest.raises(InputError, match=r"old\.safetensors.*tensor 'block0\.convblock\.0\.beta' is missing"):
        load_ifnet(path)


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "flownet.pkl"
    torch.save({"module.block0.conv0.0.0.weight": torch.zeros(1), "callback": Path("x")}, path)
    with pytest.raises(InputError, match="cannot be read"):
        read_state_dict(path)


# --- network semantics ------------------------------------------------------------------------


def test_forward_shapes_and_range(weights):
    net = load_ifnet(weights["pkl"])
    x0, x1 = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    for t in (0.0, 1.0, torch.tensor([0.25, 0.75])):
        with torch.no_grad():
            out = net(x0, x1, t)
        assert out.shape == (2, 3, 64, 96)
        assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_zero_flow_network_blends_equally_for_any_t(weights):
    net = load_ifnet(weights["pkl"])
    with torch.no_grad():
        for block in (net.block0, net.block1, net.block2, net.block3):
            block.lastconv[0].weight.zero_()
            block.lastconv[0].bias.zero_()
        x0, x1 = torch.rand(1, 3, 32, 64), torch.rand(1, 3, 32, 64)
        for t in (0.0, 1.0):
            assert torch.allclose(net(x0, x1, t), (x0 + x1) / 2, atol=1e-4)


def test_backward_warp_follows_flow():
    img = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    flow = torch.zeros(1, 2, 4, 6)
    flow[:, 0] = 1.0  # sample one pixel to the right
    out = backward_warp(img, flow)
    assert torch.allclose(out[..., :-1], img[..., 1:]) and torch.allclose(out[..., -1], img[..., -1])


def test_pad_multiple():
    assert [pad_multiple(s) for s in (0.25, 0.5, 1.0, 2.0)] == [128, 64, 32, 32]


def test_runner_pads_odd_sizes_and_crops_back(weights):
    runner = RifeRunner(load_ifnet(weights["pkl"]))
    frames = pan_clip("chelsea.png", 2, 123, 77)
    out = runner.synthesise(frames[:1], frames[1:], [0.5])
    assert out.shape == (1, 77, 123, 3) and out.dtype == np.uint8
    blend = (frames[0].astype(int) + frames[1]) / 2
    assert np.abs(out[0] - blend).mean() < 20  # small random flows: close to the two frames


# --- engine -----------------------------------------------------------------------------------


def test_registered():
    assert STAGES["interpolated"].engines["rife"] == "wan_pipeline.engines.rife:RifeInterpolator"


@pytest.mark.parametrize("fmt", ["pkl", "safetensors"])
def test_x2_on_real_photo_clip(weights, preset, fmt):
    frames = pan_clip("astronaut.png", 9, 160, 96)
    clip = Clip(frames, Fraction(16), audio="/some/audio.m4a", meta={"scene": "s1"})
    eng = RifeInterpolator({"model": str(weights[fmt]), "factor": 2}, preset)
    out = eng.interpolate(clip)
    assert out.num_frames == 17 and out.fps == 32
    assert (out.height, out.width) == (96, 160)
    assert np.array_equal(out.frames[::2], frames)  # originals kept, last one included
    assert out.meta["interp_factor"] == 2.0 and out.meta["scene_cuts"] == 0 and out.meta["duplicated_frames"] == 0
    assert out.meta["synthesised_frames"] == 8 and out.meta["model"] == str(weights[fmt])
    assert out.audio == "/some/audio.m4a"
    mid = out.frames[1].astype(int)
    assert not np.array_equal(out.frames[1], frames[0]) and np.abs(mid - frames[0]).mean() < 25


def test_x4_ntsc_and_odd_size(weights, preset):
    frames = pan_clip("coffee.png", 5, 101, 67)
    out = engine(weights, preset, factor=4).interpolate(Clip(frames, Fraction(24000, 1001)))
    assert out.num_frames == 17 and out.fps == Fraction(96000, 1001)
    assert out.frames.shape == (17, 67, 101, 3)
    assert np.array_equal(out.frames[-1], frames[-1])


@pytest.mark.parametrize("fps_in, target, n, expected", [(16, 30, 17, 31), (Fraction(24000, 1001), 60, 25, 61)])
def test_target_fps(weights, preset, fps_in, target, n, expected):
    frames = pan_clip("rocket.jpg", n, 64, 48, step=2)
    eng = engine(weights, preset, target_fps=target, batch_size=7)
    out = eng.interpolate(Clip(frames, fps_in))
    assert out.num_frames == expected and out.fps == target
    assert out.meta["interp_factor"] == pytest.approx(float(Fraction(target) / Fraction(fps_in)))
    assert eng.describe()["target_fps"] == str(target)


def test_no_frame_synthesised_across_a_hard_cut(weights, preset):
    a, b = pan_clip("astronaut.png", 4, 128, 80), pan_clip("coffee.png", 4, 128, 80)
    frames = np.concatenate([a, b])
    out = engine(weights, preset, factor=4).interpolate(Clip(frames, Fraction(16)))
    assert out.num_frames == 29 and out.meta["scene_cuts"] == 1 and out.meta["duplicated_frames"] == 3
    # pair 3→4 is the cut: output 12 is frame 3, 13 copies frame 3, 14-16 copy frame 4
    assert np.array_equal(out.frames[13], frames[3])
    for i in (14, 15, 16):
        assert np.array_equal(out.frames[i], frames[4])
    assert not np.array_equal(out.frames[10], frames[2]) and not np.array_equal(out.frames[10], frames[3])
    off = engine(weights, preset, factor=4, scene_cut_threshold=None).interpolate(Clip(frames, Fraction(16)))
    assert off.meta["scene_cuts"] == 0 and not np.array_equal(off.frames[14], frames[4])


def test_bad_params_name_the_field(weights, preset):
    for params, field in [
        ({"factor": 3}, "factor must be 2 or 4"),
        ({"factor": 2, "target_fps": 30}, "not both"),
        ({"scale": 0.3}, "scale must be one of"),
        ({"batch": 2}, "batch"),
    ]:
        with pytest.raises(InputError, match=field) as err:
            engine(weights, preset, **params)
        assert "stages.interpolated" in str(err.value)


def test_relative_model_path_is_under_storage_root(weights, preset, monkeypatch, tmp_path):
    make_tiny_rife(tmp_path / "models" / "rife" / "flownet.pkl")
    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path))
    eng = RifeInterpolator({"model": "models/rife/flownet.pkl"}, preset)
    assert eng.describe()["model"] == str(tmp_path / "models" / "rife" / "flownet.pkl")
    assert eng.describe()["factor"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_matches_cpu(weights):
    net = load_ifnet(weights["pkl"])
    frames = pan_clip("chelsea.png", 2, 250, 142)
    cpu = RifeRunner(net, "cpu").synthesise(frames[:1], frames[1:], [0.5])
    gpu_runner = RifeRunner(load_ifnet(weights["pkl"]), "cuda:0")
    assert gpu_runner.fp16
    gpu = gpu_runner.synthesise(frames[:1], frames[1:], [0.5])
    assert gpu.shape == cpu.shape and np.abs(gpu.astype(int) - cpu).max() <= 3
