"""Print the memory planner's figures for the real-model presets (README "Presets" table).

    python tests/benchmarks/preset_vram.py

For each preset and model stage: parameters, the strategy the planner picks on three machines
(24 GiB GPU with 64 GiB RAM, 48 GiB with 128 GiB, 80 GiB with 256 GiB; all of it free) and,
for each, the estimated peak VRAM and host RAM, plus the host RAM any in-memory strategy needs
(all weights) and what group offload to disk needs (the largest component). Estimates from the
checkpoint configs (``wan_pipeline.models.memory``), not measurements.
"""

from __future__ import annotations

from wan_pipeline.models import identify, plan_memory
from wan_pipeline.models.machine import load_checkpoint_info
from wan_pipeline.models.memory import DISK_OFFLOAD
from wan_pipeline.preset import load_preset

PRESETS = ("wan22-ti2v-5b", "wan21-flf2v-14b", "wan22-i2v-a14b")
MACHINES_GIB = ((24, 64), (48, 128), (80, 256))
"""(GPU VRAM, host RAM) in GiB."""


def frames_of(stage: str, section: dict) -> int:
    if stage == "keyframe":
        return 1
    if stage == "film":
        return int(section.get("seam_frames", 8)) + 2 * int(section.get("context_frames", 8))
    return int(section.get("max_frames", 81))


def choice(plan) -> str:
    if plan.fits is False:
        return "does not fit"
    name = plan.chosen_strategy + (" to disk" if plan.offload_to_disk else "") + (" + tiling" if plan.vae_tiling else "")
    return f"{name}: {plan.estimated_peak_mib / 1024:.1f} / {plan.host_ram_mib / 1024:.0f}"


def main() -> None:
    heads = " | ".join(f"{v} GiB GPU, {r} GiB RAM" for v, r in MACHINES_GIB)
    print(f"| preset | stage (W×H×frames) | model | params (B) | host RAM in memory / to disk (GiB) | {heads} |")
    print("| --- | --- | --- | --- | --- |" + " --- |" * len(MACHINES_GIB))
    for name in PRESETS:
        preset = load_preset(name)
        rows = []
        for stage in ("keyframe", "clip", "film"):
            section = preset.stage(stage).model_dump()
            rows += [(stage, section.get("model"), frames_of(stage, section))]
            if section.get("extension_model"):  # long FLF2V scenes: loaded after the clip model is released
                rows += [("clip extension", section["extension_model"], frames_of(stage, section))]
        for stage, model, frames in rows:
            if not model:
                continue
            ckpt, _ = load_checkpoint_info(model)
            info = identify(ckpt)
            picks = []
            plan = None
            for vram, ram in MACHINES_GIB:
                plan = plan_memory(
                    ckpt,
                    variant=info.variant,
                    width=preset.width,
                    height=preset.height,
                    frames=frames,
                    dtype="bfloat16",
                    vram_total_mib=vram * 1024,
                    vram_free_mib=vram * 1024,
                    ram_available_mib=ram * 1024,
                )
                picks.append(choice(plan))
            host = plan.host_ram_by_strategy_mib
            print(
                f"| {name} | {stage} ({preset.width}×{preset.height}×{frames}) | {info.variant} | {plan.total_params / 1e9:.2f} "
                f"| {host['full_gpu'] / 1024:.0f} / {host[DISK_OFFLOAD] / 1024:.0f} | {' | '.join(picks)} |"
            )


if __name__ == "__main__":
    main()
