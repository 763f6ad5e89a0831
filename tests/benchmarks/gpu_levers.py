"""Speed levers on a CUDA GPU at real size: seconds per step and peak VRAM (README table).

    python tests/benchmarks/gpu_levers.py [--steps 4] [--models i2v14b,ti2v5b]

Builds **real-size random-weight** models from the published configs in the project's catalogue
(:mod:`wan_pipeline.models.catalog`): the Wan2.1-I2V-14B-480P transformer (81 frames at 832x480)
and the Wan2.2-TI2V-5B transformer (121 frames at 1280x704), each with its VAE (which encodes
the first frame; the output stays latent, since the decode is the same for every lever), in
bfloat16.
The text and image encoders are replaced by random embeddings of their published shapes (UMT5-XXL:
512 x 4096; CLIP ViT-H/14: 257 x 1280): they run once per clip and would only add load time. For
each lever (applied by :func:`wan_pipeline.engines.levers.apply_levers`, as the engines do) it
renders ``--steps`` steps and prints seconds per step, transformer forward calls and blocks run,
the torch allocator peak and the NVML device memory in use (GiB). The 40-step column
extrapolates a plain 40-step render from the per-step time; the distill row is 4 steps at
guidance 1.0 (one pass per step). Random weights give real speed and memory, not real pictures.
Skips (exit 0) without CUDA.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import time

MODELS = {
    "i2v14b": ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 832, 480, 81),
    "ti2v5b": ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", 1280, 704, 121),
}
GIB = 2**30


def random_module(cls, config: dict, dtype, device):
    """``cls.from_config(config)`` built on the meta device, then given random weights on ``device``."""
    import torch

    with torch.device("meta"):
        module = cls.from_config(config)
    module = module.to(dtype=dtype).to_empty(device=device)
    gen = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
        for b in module.buffers():
            if b.is_floating_point():
                b.zero_()
    return module.eval()


def build(repo: str, device: str):
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    from wan_pipeline.models.catalog import catalog_checkpoint

    ckpt = catalog_checkpoint(repo)
    configs = {n: c.config for n, c in ckpt.components.items()}
    transformer = random_module(WanTransformer3DModel, configs["transformer"], torch.bfloat16, device)
    vae = random_module(AutoencoderKLWan, configs["vae"], torch.float32, device)
    vae.enable_tiling()
    scheduler = UniPCMultistepScheduler.from_config(configs["scheduler"])
    pipe = WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=scheduler,
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        transformer_2=None,
        boundary_ratio=ckpt.index.boundary_ratio,
        expand_timesteps=bool(ckpt.index.expand_timesteps),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def nvml_used_gib(index: int) -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used / GIB
    except Exception:
        return None


def rows():
    """(label, levers, steps multiplier note, guidance): the levers this machine can run."""
    out = [
        ("plain", {}, 5.0),
        ("cache: first_block (0.05)", {"cache": {"method": "first_block", "threshold": 0.05}}, 5.0),
        ("cache: taylorseer", {"cache": {"method": "taylorseer", "disable_cache_before_step": 1, "cache_interval": 2}}, 5.0),
        ("weights: float8_e4m3fn", {"weights": {"storage_dtype": "float8_e4m3fn"}}, 5.0),
        ("compile: regional", {"compile": "regional"}, 5.0),
    ]
    if importlib.util.find_spec("torchao") is not None:
        out.append(("weights: torchao int8_weight_only", {"weights": {"quantization": "int8_weight_only"}}, 5.0))
    for backend, package in (("flash", "flash_attn"), ("sage", "sageattention"), ("xformers", "xformers")):
        if importlib.util.find_spec(package) is not None:
            out.append((f"attention_backend: {backend}", {"attention_backend": backend}, 5.0))
    out.append(("distill settings (guidance 1.0)", {}, 1.0))
    out.append(("distill + first_block + fp8", {"cache": "first_block", "weights": {"storage_dtype": "float8_e4m3fn"}}, 1.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--models", default="i2v14b,ti2v5b")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_levers: no CUDA device, skipped")
        return
    from PIL import Image

    from wan_pipeline.engines.diffusers_support import quiet_hub_progress
    from wan_pipeline.engines.levers import LeverParams, apply_levers

    quiet_hub_progress()
    device = "cuda:0"
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {args.steps} steps per row\n")
    print("| model | lever | s/step | 40-step s (est.) | forward calls | blocks run | peak VRAM torch GiB | NVML used GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in args.models.split(","):
        repo, width, height, frames = MODELS[key]
        base_s = None
        for label, levers, guidance in rows():
            pipe = build(repo, device)
            try:
                state = apply_levers(pipe, LeverParams.model_validate(levers), "clip", None)
            except Exception as exc:  # noqa: BLE001 - a lever this machine cannot apply is reported, not fatal
                print(f"| {key} | {label} | failed: {exc} | | | | | |")
                continue
            text = torch.randn(1, 512, 4096, generator=torch.Generator().manual_seed(1)).to(device, torch.bfloat16)
            extra = {}
            if pipe.transformer.config.image_dim is not None:
                extra["image_embeds"] = torch.randn(1, 257, 1280).to(device, torch.bfloat16)
            image = Image.new("RGB", (width, height), (120, 110, 100))
            marks: list[float] = []

            def on_step(_p, _s, _t, _k, marks=marks):
                torch.cuda.synchronize()
                marks.append(time.perf_counter())
                return {}

            torch.cuda.reset_peak_memory_stats()
            steps = args.steps
            try:
                with torch.inference_mode(), state.generation(pipe, steps):
                    start = time.perf_counter()
                    pipe(
                        image=image,
                        prompt_embeds=text,
                        negative_prompt_embeds=torch.zeros_like(text),
                        height=height,
                        width=width,
                        num_frames=frames,
                        num_inference_steps=steps,
                        guidance_scale=guidance,
                        generator=torch.Generator("cpu").manual_seed(0),
                        output_type="latent",
                        callback_on_step_end=on_step,
                        **extra,
                    )
                # the first step carries compilation / allocator warm-up: time the rest when there is one
                per_step = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) > 1 else marks[0] - start
                t = state.telemetry(steps)
                peak = torch.cuda.max_memory_allocated() / GIB
                nvml = nvml_used_gib(0)
                base_s = base_s or per_step
                total = per_step * (4 if guidance == 1.0 else 40)
                print(
                    f"| {key} | {label} | {per_step:.2f} | {total:.0f} ({base_s * 40 / total:.1f}×) | {t['transformer_forward_calls']} | "
                    f"{t['transformer_blocks_run']} | {peak:.1f} | {'n/a' if nvml is None else f'{nvml:.1f}'} |"
                )
            except Exception as exc:  # noqa: BLE001
                print(f"| {key} | {label} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | | | |")
            del pipe, state
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
