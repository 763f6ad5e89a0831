"""Quality and speed of the post-processing engines on real photos (a script, not a test).

Run from the repository root::

    python tests/benchmarks/postprocess_quality.py

Prints Markdown tables (for the README):

(a) interpolation ×2: each photo of ``stories/images/`` is filmed by a virtual camera (zoom and
    pan with ``cv2.warpAffine``) for 17 frames at 832×480; every other frame is dropped and the
    engines synthesise them back; PSNR / SSIM (scikit-image) of the 8 synthesised frames against
    the dropped ground truth. Engines: optical flow (the preview preset's ``interpolated`` engine
    from the registry), plain blending (mean of the two neighbours, the baseline) and RIFE when
    ``WAN_PIPELINE_RIFE_WEIGHTS`` names real weights and a ``rife`` engine is registered.
(b) upscaling ×4: each photo (cropped to a multiple of 4) is downscaled by 4 with area averaging
    and upscaled back: bicubic, Lanczos (the ``lanczos`` engine), and Real-ESRGAN when
    ``WAN_PIPELINE_ESRGAN_WEIGHTS`` names a weights file.
(c) speed at 832×480 on this machine: frames per second of each engine, and for the optical-flow
    interpolator the time of its two flow fields alone against the whole interpolation (issue 4
    requires whole / flows ≤ 2).

Runs in about two minutes on 2 CPU cores without model weights.
"""

from __future__ import annotations

import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from wan_pipeline.engines.registry import ENGINES, build_engine  # noqa: E402
from wan_pipeline.media.clip import Clip  # noqa: E402
from wan_pipeline.preset import StageConfig, load_preset  # noqa: E402

W, H = 832, 480
FRAMES = 17  # full-rate ground truth; the 9 even frames are kept
ZOOM = 0.15  # zoom over the clip (1.0 → 1.15)
PAN = (96.0, 36.0)  # camera travel over the clip, output pixels (x, y)
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def photos() -> list[tuple[str, np.ndarray]]:
    """The test photos as uint8 (H, W, 3) RGB, by file name."""
    paths = sorted(p for p in (ROOT / "stories" / "images").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return [(p.stem, np.asarray(Image.open(p).convert("RGB"))) for p in paths]


def camera_clip(photo: np.ndarray, frames: int = FRAMES) -> np.ndarray:
    """A zoom-and-pan shot over ``photo``: uint8 (frames, 480, 832, 3).

    The photo is first resized to cover the frame with room for the whole pan; frame i is the
    affine view at t = i / (frames − 1) (zoom 1 + ZOOM·t about the moving centre).
    """
    ph, pw = photo.shape[:2]
    cover = max((W + 2 * PAN[0] + 8) / pw, (H + 2 * PAN[1] + 8) / ph)
    big = cv2.resize(photo, (round(pw * cover), round(ph * cover)), interpolation=cv2.INTER_CUBIC)
    cy, cx = big.shape[0] / 2, big.shape[1] / 2
    out = np.empty((frames, H, W, 3), np.uint8)
    for i in range(frames):
        t = i / (frames - 1)
        k = 1.0 + ZOOM * t
        px, py = cx + PAN[0] * (t - 0.5), cy + PAN[1] * (t - 0.5)
        m = np.array([[k, 0, W / 2 - k * px], [0, k, H / 2 - k * py]], np.float64)
        out[i] = cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM over frames; uint8 (N, H, W, 3) each."""
    p = [peak_signal_noise_ratio(t, q, data_range=255) for q, t in zip(pred, truth)]
    s = [structural_similarity(t, q, channel_axis=2, data_range=255) for q, t in zip(pred, truth)]
    return float(np.mean(p)), float(np.mean(s))


# -- engines --------------------------------------------------------------------------------


def _preset():
    return load_preset("preview")


def flow_interpolator():
    preset = _preset()
    data = preset.stage("interpolated").model_dump()
    data.update(engine="optical_flow", factor=2)
    data.pop("target_fps", None)
    return build_engine("interpolated", StageConfig.model_validate(data), preset)


def rife_interpolator():
    weights = os.environ.get("WAN_PIPELINE_RIFE_WEIGHTS")
    if not weights:
        return None, "set WAN_PIPELINE_RIFE_WEIGHTS to a flownet.pkl to measure RIFE"
    if "rife" not in ENGINES["interpolated"]:
        return None, "no `rife` engine registered on this branch"
    preset = _preset().model_copy(update={"device": "auto"})
    return build_engine("interpolated", StageConfig(engine="rife", model=weights, factor=2), preset), ""


def blend_interpolate(kept: np.ndarray) -> np.ndarray:
    """Baseline ×2: each new frame is the mean of its two neighbours."""
    out = np.empty((2 * len(kept) - 1, *kept.shape[1:]), np.uint8)
    out[0::2] = kept
    out[1::2] = ((kept[:-1].astype(np.uint16) + kept[1:]) // 2).astype(np.uint8)
    return out


def lanczos_upscaler(factor: int):
    if "lanczos" in ENGINES["upscaled"]:
        try:
            return build_engine("upscaled", StageConfig(engine="lanczos", factor=factor), _preset())
        except ModuleNotFoundError:
            pass
    return None


def esrgan_upscaler():
    weights = os.environ.get("WAN_PIPELINE_ESRGAN_WEIGHTS")
    if not weights:
        return None, "set WAN_PIPELINE_ESRGAN_WEIGHTS to a Real-ESRGAN .pth to measure it"
    preset = _preset().model_copy(update={"device": "auto"})
    return build_engine("upscaled", StageConfig(engine="realesrgan", model=weights), preset), ""


def cv2_upscale(frame: np.ndarray, factor: int, interpolation: int) -> np.ndarray:
    h, w = frame.shape[:2]
    return cv2.resize(frame, (w * factor, h * factor), interpolation=interpolation)


# -- measurements ---------------------------------------------------------------------------


def interpolation_quality(clips: dict[str, np.ndarray]) -> tuple[list[list[str]], list[str]]:
    methods: dict[str, object] = {}
    notes: list[str] = []
    try:
        methods["optical flow (preview)"] = flow_interpolator()
    except ModuleNotFoundError as exc:
        notes.append(f"optical flow engine not available ({exc})")
    methods["blend (baseline)"] = "blend"
    rife, note = rife_interpolator()
    if rife is not None:
        methods["RIFE"] = rife
    else:
        notes.append(f"RIFE skipped: {note}")
    rows = []
    for label, engine in methods.items():
        per_photo = []
        for name, truth in clips.items():
            kept = truth[0::2]
            if engine == "blend":
                full = blend_interpolate(kept)
            else:
                full = engine.interpolate(Clip(kept, Fraction(8))).frames
            assert full.shape == truth.shape, f"{label}: {full.shape} != {truth.shape}"
            per_photo.append((name, *scores(full[1::2], truth[1::2])))
        psnr = np.mean([p for _, p, _ in per_photo])
        ssim = np.mean([s for _, _, s in per_photo])
        detail = ", ".join(f"{n} {p:.2f}" for n, p, _ in per_photo)
        rows.append([label, f"{psnr:.2f}", f"{ssim:.4f}", detail])
    return rows, notes


def upscaling_quality(images: list[tuple[str, np.ndarray]]) -> tuple[list[list[str]], list[str]]:
    notes: list[str] = []
    lanczos = lanczos_upscaler(4)
    if lanczos is None:
        notes.append("`lanczos` engine not available: Lanczos row uses cv2.INTER_LANCZOS4 directly")
    esrgan, note = esrgan_upscaler()
    if esrgan is None:
        notes.append(f"Real-ESRGAN skipped: {note}")
    elif esrgan.scale != 4:
        notes.append(f"Real-ESRGAN model has scale {esrgan.scale}: its output is resized to ×4 with Lanczos")
        esrgan = build_engine(
            "upscaled",
            StageConfig(engine="realesrgan", model=os.environ["WAN_PIPELINE_ESRGAN_WEIGHTS"], scale=4),
            _preset().model_copy(update={"device": "auto"}),
        )

    def run_engine(engine, small):
        return engine.upscale(Clip(small[None], 16)).frames[0]

    methods = {
        "bicubic": lambda s: cv2_upscale(s, 4, cv2.INTER_CUBIC),
        "Lanczos": (lambda s: run_engine(lanczos, s)) if lanczos else (lambda s: cv2_upscale(s, 4, cv2.INTER_LANCZOS4)),
    }
    if esrgan is not None:
        methods["Real-ESRGAN"] = lambda s: run_engine(esrgan, s)
    rows = []
    for label, fn in methods.items():
        per = []
        for name, img in images:
            h, w = img.shape[0] // 4 * 4, img.shape[1] // 4 * 4
            truth = np.ascontiguousarray(img[:h, :w])
            small = cv2.resize(truth, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
            up = fn(small)
            assert up.shape == truth.shape, f"{label}: {up.shape} != {truth.shape}"
            per.append((name, *scores(up[None], truth[None])))
        psnr = np.mean([p for _, p, _ in per])
        ssim = np.mean([s for _, _, s in per])
        rows.append([label, f"{psnr:.2f}", f"{ssim:.4f}", ", ".join(f"{n} {p:.2f}" for n, p, _ in per)])
    return rows, notes


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def flow_fields_time(engine, frames: np.ndarray) -> float:
    """Seconds to compute, for every consecutive pair of ``frames``, the two flow fields (a→b and
    b→a) the interpolator needs, with the engine's own ``flows`` routine when it has one."""
    fn = getattr(engine, "flows", None)
    if not callable(fn):
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

        def fn(a, b):
            ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
            return dis.calc(ga, gb, None), dis.calc(gb, ga, None)

    return _timed(lambda: [fn(frames[i], frames[i + 1]) for i in range(len(frames) - 1)], repeat=3)


def speed(clip: np.ndarray) -> tuple[list[list[str]], list[str]]:
    rows, notes = [], []
    kept = clip[0::2][:5]  # 5 input frames → 4 pairs, 9 output frames
    pairs = len(kept) - 1
    try:
        flow = flow_interpolator()
        flow.interpolate(Clip(kept[:2], Fraction(8)))  # warm-up
        whole = _timed(lambda: flow.interpolate(Clip(kept, Fraction(8))), repeat=3)
        per_pair = whole / pairs
        flows = flow_fields_time(flow, kept) / pairs
        rows.append(
            [
                "optical flow ×2 (preview)",
                "832×480 → 832×480",
                f"{pairs / whole:.1f} pairs/s ({(2 * pairs + 1) / whole:.1f} output frames/s)",
            ]
        )
        notes.append(
            f"optical flow: two flow fields {flows * 1000:.0f} ms, whole interpolation {per_pair * 1000:.0f} ms per frame pair, "
            f"ratio {per_pair / flows:.2f} (issue 4 requires ≤ 2)"
        )
    except ModuleNotFoundError as exc:
        notes.append(f"optical flow engine not available ({exc})")
    t = _timed(lambda: blend_interpolate(kept), repeat=3)
    rows.append(["blend ×2 (baseline)", "832×480 → 832×480", f"{pairs / t:.1f} pairs/s"])
    rife, _ = rife_interpolator()
    if rife is not None:
        rife.interpolate(Clip(kept[:2], Fraction(8)))
        t = _timed(lambda: rife.interpolate(Clip(kept, Fraction(8))))
        rows.append([f"RIFE ×2 ({rife.describe().get('device', '?')})", "832×480 → 832×480", f"{pairs / t:.1f} pairs/s"])
    small2 = np.stack([cv2.resize(f, (W // 2, H // 2), interpolation=cv2.INTER_AREA) for f in clip[:8]])
    lanczos = lanczos_upscaler(2)
    if lanczos is not None:
        t = _timed(lambda: lanczos.upscale(Clip(small2, 16)), repeat=2)
        rows.append(["Lanczos ×2 (preview)", "416×240 → 832×480", f"{len(small2) / t:.1f} frames/s"])
    else:
        t = _timed(lambda: [cv2_upscale(f, 2, cv2.INTER_LANCZOS4) for f in small2], repeat=2)
        rows.append(["Lanczos ×2 (cv2)", "416×240 → 832×480", f"{len(small2) / t:.1f} frames/s"])
    esrgan, _ = esrgan_upscaler()
    if esrgan is not None:
        s = esrgan.scale
        small = np.stack([cv2.resize(f, (W // s, H // s), interpolation=cv2.INTER_AREA) for f in clip[:2]])
        esrgan.upscale(Clip(small[:1], 16))
        t = _timed(lambda: esrgan.upscale(Clip(small, 16)))
        d = esrgan.describe()
        rows.append(
            [
                f"Real-ESRGAN ×{s} ({d['architecture']}, {d['device']}, {d['dtype']})",
                f"{W // s}×{H // s} → 832×480",
                f"{len(small) / t:.2f} frames/s",
            ]
        )
    return rows, notes


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    cv2.setNumThreads(THREADS)
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass
    t0 = time.perf_counter()
    images = photos()
    clips = {name: camera_clip(img) for name, img in images}

    rows, notes = interpolation_quality(clips)
    print(
        f"### Interpolation ×2 — {FRAMES} frames at {W}×{H}, zoom {ZOOM:.0%} and pan {PAN[0]:.0f}×{PAN[1]:.0f} px, "
        "every other frame dropped and re-synthesised (mean over 4 photos)\n"
    )
    print(table(["method", "PSNR (dB)", "SSIM", "PSNR per photo"], rows))
    for n in notes:
        print(f"\n- {n}")

    rows, notes = upscaling_quality(images)
    print("\n### Upscaling ×4 — photo downscaled ×4 (area), upscaled back (mean over 4 photos)\n")
    print(table(["method", "PSNR (dB)", "SSIM", "PSNR per photo"], rows))
    for n in notes:
        print(f"\n- {n}")

    rows, notes = speed(next(iter(clips.values())))
    print(f"\n### Speed — {THREADS} CPU threads" + (" + CUDA" if _cuda() else "") + "\n")
    print(table(["engine", "size", "speed"], rows))
    for n in notes:
        print(f"\n- {n}")
    print(f"\n(benchmark ran in {time.perf_counter() - t0:.0f} s)")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
