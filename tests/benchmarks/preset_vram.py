"""Print the memory planner's figures for the real-model presets (README "Presets" table).

    python tests/benchmarks/preset_vram.py

For each preset and model stage: parameters, bf16 weights, estimated peak VRAM per strategy at the
preset's size, and the strategy the planner picks on a 24, 48 and 80 GiB GPU (all of it free).
Estimates from the checkpoint configs (``wan_pipeline.models.memory``), not measurements.
"""

from __future__ import annotations

from wan_pipeline.models import identify, plan_memory
from wan_pipeline.models.machine import load_checkpoint_info
from wan_pipeline.preset import load_preset

PRESETS = ("wan22-ti2v-5b", "wan21-flf2v-14b", "wan22-i2v-a14b")
GPUS_GIB = (24, 48, 80)


def frames_of(stage: str, section: dict) -> int:
    if stage == "keyframe":
        return 1
    if stage == "film":
        return int(section.get("seam_frames", 8)) + 2 * int(section.get("context_frames", 8))
    return int(section.get("max_frames", 81))


def main() -> None:
    print(
        "| preset | stage | model | params (B) | peak VRAM est. full_gpu / model_cpu_offload / group_offload (GiB) | 24 GiB | 48 GiB | 80 GiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in PRESETS:
        preset = load_preset(name)
        for stage in ("keyframe", "clip", "film"):
            section = preset.stage(stage).model_dump()
            model = section.get("model")
            if not model:
                continue
            ckpt, _ = load_checkpoint_info(model)
            info = identify(ckpt)
            frames = frames_of(stage, section)
            picks = []
            plan = None
            for gib in GPUS_GIB:
                plan = plan_memory(
                    ckpt,
                    variant=info.variant,
                    width=preset.width,
                    height=preset.height,
                    frames=frames,
                    dtype="bfloat16",
                    vram_total_mib=gib * 1024,
                    vram_free_mib=gib * 1024,
                )
                picks.append(plan.chosen_strategy + (" + VAE tiling" if plan.vae_tiling else ""))
            peaks = " / ".join(f"{plan.peak_vram_tiled_mib[s] / 1024:.1f}" for s in ("full_gpu", "model_cpu_offload", "group_offload"))
            print(
                f"| {name} | {stage} ({preset.width}x{preset.height}x{frames}) | {info.variant} | {plan.total_params / 1e9:.2f} | {peaks} | {' | '.join(picks)} |"
            )


if __name__ == "__main__":
    main()
