"""Speed levers on CPU: what each one saves on a random-weight Wan I2V transformer (README table).

    python tests/benchmarks/speed_levers.py [--blocks 8] [--heads 4] [--size 64] [--frames 9] [--threads 1]

A Wan2.1-I2V-layout transformer (``WanTransformer3DModel``, head dim 128 as in every published
Wan model, ``blocks`` layers, FFN 2.7 x the hidden size as in Wan2.1-14B) with random weights,
inside the miniature I2V pipeline (tiny VAE, text and image encoders), so the transformer
dominates the time. Each row renders the same ``frames`` x ``size`` x ``size`` clip from the same
image, prompt and seed through :func:`wan_pipeline.engines.levers.apply_levers` (the levers as
the engines apply them) and prints: the denoising-loop wall time (pipeline start to the last
step's end: no VAE decode) as wall and process CPU seconds (the speed-up is the CPU time's:
on a shared machine the wall time follows the other processes more than the levers), transformer forward calls, blocks run and attention modules run
(counted by the work counter, so skipped work is measured), each relative to the plain 40-step guidance-5 run, and
the PSNR of the decoded frames against that run (PAB / FasterCache rows against the plain
40-step guidance-1 run: their diffusers hooks keep one attention history, so they run only with a
single guidance pass). MagCache's per-model ratios come from a calibration run first (diffusers'
calibrate mode). Random weights give real work counts and speed, not real pictures: the
distillation LoRA is random too, so its PSNR says how far 4 steps land from 40, not quality.

Ends with ``fewer block evaluations: N.N×`` (distill LoRA + 4 steps + guidance 1.0 + first-block
cache against the plain 40-step run; issue target ≥ 8×). One run takes about 2–4 minutes on two
busy cores at the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from wan_pipeline.engines.levers import LeverParams, apply_levers
from wan_pipeline.models.tiny import build_tiny_pipeline, make_tiny_distill_lora

PROMPT = "a cat walks along a city street at night"
NEGATIVE = "blurry, low quality"
FINAL = "distill + first_block (0.05)"  # the row the last line compares with plain
PLAIN_STEPS, DISTILL_STEPS = 40, 4  # Wan model cards: 40-50 steps; lightx2v / Lightning: 4 steps, guidance 1.0


def build_pipeline(blocks: int, heads: int):
    """The miniature Wan2.1 I2V pipeline with a larger random-weight transformer (float32, CPU)."""
    from diffusers import WanTransformer3DModel

    pipe = build_tiny_pipeline("wan21-i2v")
    inner = heads * 128
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=128,
        in_channels=36,
        out_channels=16,
        text_dim=pipe.text_encoder.config.d_model,
        freq_dim=256,
        ffn_dim=int(2.7 * inner) // 16 * 16,
        num_layers=blocks,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=pipe.image_encoder.config.hidden_size,
        added_kv_proj_dim=inner,
        rope_max_seq_len=1024,
    ).eval()
    pipe.register_modules(transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def render(base, levers: dict, steps: int, guidance: float, size: int, frames: int, image):
    """One generation on a fresh copy of ``base`` with ``levers`` applied; returns
    (uint8 frames (T, size, size, 3), (loop wall s, loop CPU s), lever telemetry, captured stdout)."""
    pipe = copy.deepcopy(base)
    state = apply_levers(pipe, LeverParams.model_validate(levers), "clip", None)
    marks: list[tuple[float, float]] = []

    def on_step(_pipe, _step, _t, _kwargs):
        marks.append((time.perf_counter(), time.process_time()))
        return {}

    out = io.StringIO()
    start = (time.perf_counter(), time.process_time())
    with contextlib.redirect_stdout(out), torch.inference_mode(), state.generation(pipe, steps):
        video = pipe(
            image=image,
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            height=size,
            width=size,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(0),
            output_type="np",
            max_sequence_length=32,
            callback_on_step_end=on_step,
        ).frames[0]
    frames_u8 = np.clip(np.rint(np.asarray(video) * 255), 0, 255).astype(np.uint8)
    seconds = (marks[-1][0] - start[0], marks[-1][1] - start[1])
    return frames_u8, seconds, state.telemetry(steps), out.getvalue()


def mag_ratios(text: str) -> list[float]:
    """The ratios MagCache printed in calibration mode (the first context: the conditional pass)."""
    found = re.findall(r"\[(1\.0(?:, [-0-9.e]+)+)\]", text)
    if not found:
        raise RuntimeError(f"MagCache calibration printed no ratios: {text[:200]!r}")
    return [float(v) for v in found[0].split(", ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4, help="attention heads of 128 dims (Wan2.1-14B: 40)")
    parser.add_argument("--size", type=int, default=64, help="video side in pixels (multiple of 16)")
    parser.add_argument("--frames", type=int, default=9, help="4k+1 frames")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is compute, not spinning)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from PIL import Image

    from wan_pipeline.engines.diffusers_support import quiet_hub_progress

    quiet_hub_progress()
    base = build_pipeline(args.blocks, args.heads)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3)).astype(np.uint8))
    tmp = Path(tempfile.mkdtemp(prefix="levers-"))
    lora = make_tiny_distill_lora(tmp / "distill.safetensors", transformer=base.transformer, rank=16, scale=0.05)
    common = dict(size=args.size, frames=args.frames, image=image)
    n_params = sum(p.numel() for p in base.transformer.parameters()) / 1e6
    print(
        f"Wan I2V transformer: {args.blocks} blocks, {args.heads} heads x 128, {n_params:.1f} M parameters (random); "
        f"{args.frames} frames at {args.size}x{args.size}; torch threads {torch.get_num_threads()}\n"
    )

    render(base, {}, 2, 5.0, **common)  # warm-up: first-call allocations and lazy imports stay out of the table
    # MagCache needs per-model residual magnitude ratios: calibrated on this model (diffusers'
    # calibrate mode, which skips nothing and prints them)
    ratios = mag_ratios(render(base, {"cache": {"method": "mag", "calibrate": True}}, PLAIN_STEPS, 5.0, **common)[3])

    distill = [{"path": str(lora)}]
    rows = [
        ("plain", {}, PLAIN_STEPS, 5.0, "ref"),
        ("cache: first_block (0.05)", {"cache": {"method": "first_block", "threshold": 0.05}}, PLAIN_STEPS, 5.0, "ref"),
        ("cache: mag (calibrated)", {"cache": {"method": "mag", "mag_ratios": ratios}}, PLAIN_STEPS, 5.0, "ref"),
        ("cache: taylorseer (interval 5)", {"cache": {"method": "taylorseer"}}, PLAIN_STEPS, 5.0, "ref"),
        ("weights: float8_e4m3fn", {"weights": {"storage_dtype": "float8_e4m3fn"}}, PLAIN_STEPS, 5.0, "ref"),
        ("plain, guidance 1.0", {}, PLAIN_STEPS, 1.0, "ref1"),
        ("cache: pab, guidance 1.0", {"cache": {"method": "pab"}}, PLAIN_STEPS, 1.0, "ref1"),
        ("cache: faster, guidance 1.0", {"cache": {"method": "faster"}}, PLAIN_STEPS, 1.0, "ref1"),
        ("distill LoRA, 4 steps, guidance 1.0", {"loras": distill}, DISTILL_STEPS, 1.0, "ref"),
        (FINAL, {"loras": distill, "cache": {"method": "first_block", "threshold": 0.05}}, DISTILL_STEPS, 1.0, "ref"),
    ]
    refs: dict[str, np.ndarray] = {}
    plain = None
    print(
        "| lever | steps | guidance | loop wall s | loop CPU s | CPU speed-up | forward calls | blocks run | fewer blocks | attention run | PSNR dB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, levers, steps, guidance, ref in rows:
        frames, seconds, t, _ = render(base, levers, steps, guidance, **common)
        if plain is None:
            plain = (seconds, t["transformer_blocks_run"])
        if label.startswith("plain"):
            refs.setdefault(ref, frames)
        quality = psnr(frames, refs[ref])
        blocks = t["transformer_blocks_run"]
        print(
            f"| {label} | {steps} | {guidance:g} | {seconds[0]:.2f} | {seconds[1]:.2f} | {plain[0][1] / seconds[1]:.2f}× | "
            f"{t['transformer_forward_calls']} | "
            f"{blocks} | {plain[1] / blocks:.1f}× | {t['transformer_attention_run']} | {'identical' if quality == float('inf') else f'{quality:.1f}'} |"
        )
        if label == FINAL:
            final = blocks
    print(f"\nfewer block evaluations: {plain[1] / final:.1f}×")


if __name__ == "__main__":
    main()
