"""Reports behind ``wan-pipeline inspect MODEL`` and ``wan-pipeline doctor [PRESET]``.

``inspect_report`` describes one checkpoint (variant, pipeline class, capabilities, parameter
counts, what is missing); ``doctor_report`` describes the machine (CPU, RAM, GPUs and free VRAM
through NVML, torch/CUDA versions) and every model a preset names, with its memory plan for this
machine. Both return JSON-serialisable dicts; :func:`render_doctor_text` formats the doctor report.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from wan_pipeline.errors import InputError
from wan_pipeline.models.catalog import catalog_checkpoint
from wan_pipeline.models.checkpoint import (
    REPO_ID,
    Checkpoint,
    check_loadable,
    download_command,
    find_cached_snapshot,
    hf_cache_dir,
    read_checkpoint,
)
from wan_pipeline.models.memory import MIB, STRATEGIES, plan_memory
from wan_pipeline.models.variants import identify

FILE_MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".onnx", ".pkl")
MAKE_TINY = "wan-pipeline make-tiny-models"
"""The command that writes the random-weight miniatures of the ``tiny`` preset (<storage>/models/tiny)."""
WEIGHT_SOURCES = {
    "rife": "train_log/flownet.pkl of Practical-RIFE 4.6 (github.com/hzwer/Practical-RIFE, v4.6 in its model list)",
    "realesrgan": "RealESRGAN_x2plus.pth of the Real-ESRGAN v0.2.1 release (github.com/xinntao/Real-ESRGAN/releases)",
}
"""Where the post-processing engines' weight files come from (the releases the engines are written for)."""


def local_model_path(model: str) -> Path | None:
    """Where a preset's ``model:`` lies on disk, resolved like the engines do (absolute, or
    relative to the storage root), without generating anything; None for a Hugging Face repo id
    (``owner/name`` that is no local path)."""
    from wan_pipeline.storage import storage_root

    path = Path(model).expanduser()
    local = path if path.is_absolute() else storage_root() / path
    if (
        local.exists()
        or path.is_absolute()
        or model.startswith(".")
        or model.count("/") != 1
        or local.suffix.lower() in FILE_MODEL_SUFFIXES
    ):
        return local
    return None


def _is_tiny(local: Path | None) -> bool:
    from wan_pipeline.storage import storage_root

    return local is not None and local.is_relative_to(storage_root() / "models" / "tiny")


def weights_fix(engine: str | None, local: Path) -> str:
    """How to get a missing weights file: the ``make-tiny-models`` command for a miniature, the
    release file (:data:`WEIGHT_SOURCES`) for RIFE / Real-ESRGAN."""
    if _is_tiny(local):
        return f"run `{MAKE_TINY}`"
    source = WEIGHT_SOURCES.get(engine or "")
    return f"download {source} and put it there" if source else f"put the {engine} engine's weights file there"


def load_checkpoint_info(model_ref: str) -> tuple[Checkpoint, bool]:
    """(checkpoint, downloaded). A published repo that is not in the HF cache is described from
    the built-in catalogue with ``downloaded=False``; anything else that cannot be found raises
    :class:`InputError` with the download command."""
    try:
        return read_checkpoint(model_ref), True
    except InputError:
        if REPO_ID.match(model_ref) and not Path(model_ref).exists() and find_cached_snapshot(model_ref) is None:
            ckpt = catalog_checkpoint(model_ref)
            if ckpt is not None:
                return ckpt, False
        raise


def inspect_report(model_ref: str) -> dict:
    """What a checkpoint is (JSON-serialisable).

    Keys: ``model``, ``source``, ``found`` (configs located: a folder or the HF cache),
    ``downloaded`` (found and every component's files are present, weights included: loadable),
    ``weight_files`` (per component, the safetensors files present), ``variant``, ``family``, ``size``, ``miniature``,
    ``pipeline_class``, ``pipeline_classes`` (per capability), ``capabilities``, ``experts``,
    ``boundary_ratio``, ``expand_timesteps``, ``vae_z_dim``, ``fps`` (frames/s), ``max_frames``,
    ``valid_frames`` ("4k+1"), ``size_multiple`` (pixels), ``native_sizes`` ([width, height]),
    ``flow_shift``, ``parameters`` (per component), ``parameter_sources``, ``total_parameters``,
    ``missing`` (components), ``download``, ``notes``. Raises :class:`InputError` (see
    :func:`~wan_pipeline.models.checkpoint.read_checkpoint`).
    """
    from wan_pipeline.models.memory import component_parameters
    from wan_pipeline.models.single_file import inspect_file_report, is_single_file

    if is_single_file(model_ref):
        return inspect_file_report(model_ref)
    ckpt, found = load_checkpoint_info(model_ref)
    info = identify(ckpt)
    stats = component_parameters(ckpt)
    report = {
        "model": model_ref,
        "source": ckpt.source,
        "found": found,
        "downloaded": found and _loadable(ckpt),
        "weight_files": {c.name: c.weights for c in ckpt.components.values() if c.needs_weights},
    }
    report.update(info.model_dump(exclude={"frame_step", "transformer"}))
    report["native_sizes"] = [list(s) for s in info.native_sizes]
    report["valid_frames"] = f"{info.frame_step}k+1, at most {info.max_frames}" if info.max_frames else None
    report["transformer_config"] = info.transformer
    report["parameters"] = {n: s.total for n, s in stats.items()}
    report["parameter_sources"] = {n: s.source for n, s in stats.items()}
    report["total_parameters"] = sum(s.total for s in stats.values())
    missing = ["all files (not downloaded)"] if not found else ckpt.missing_components()
    report["missing"] = missing
    is_repo = bool(REPO_ID.match(model_ref)) and not Path(model_ref).exists()
    report["download"] = download_command(model_ref) if (is_repo and (missing or not report["downloaded"])) else None
    return report


def _loadable(ckpt: Checkpoint) -> bool:
    try:
        check_loadable(ckpt)
    except InputError:
        return False
    return True


def machine_info() -> dict:
    """CPU, RAM (MiB), GPUs with total/free VRAM (MiB, NVML; ``[]`` without a GPU or driver),
    torch/CUDA/diffusers versions and the HF cache folder."""
    import psutil

    vm = psutil.virtual_memory()
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": {
            "model": cpu_model,
            "logical_cores": psutil.cpu_count(logical=True),
            "physical_cores": psutil.cpu_count(logical=False),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        },
        "ram": {"total_mib": round(vm.total / MIB), "available_mib": round(vm.available / MIB)},
        "gpus": _nvml_gpus(),
        "nvidia_driver": None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hf_cache": hf_cache_dir(),
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            info["nvidia_driver"] = drv.decode() if isinstance(drv, bytes) else drv
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"] and not info["gpus"]:
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                info["gpus"].append(
                    {
                        "index": i,
                        "name": torch.cuda.get_device_name(i),
                        "total_mib": round(total / MIB),
                        "free_mib": round(free / MIB),
                        "used_mib": round((total - free) / MIB),
                    }
                )
    except ImportError:
        info.update(torch=None, torch_cuda=None, cuda_available=False)
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    return info


def _nvml_gpus() -> list[dict]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    gpus = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "total_mib": round(mem.total / MIB),
                    "free_mib": round(mem.free / MIB),
                    "used_mib": round(mem.used / MIB),
                }
            )
    except Exception:
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus


def gpu_memory_mib(device: str) -> tuple[float | None, float | None]:
    """(total, free) MiB of a ``cuda:N`` device (NVML, else torch), (None, None) for CPU or no GPU."""
    if not device.startswith("cuda"):
        return None, None
    index = int(device.split(":")[1]) if ":" in device else 0
    gpu = next((g for g in _nvml_gpus() if g["index"] == index), None)
    if gpu is not None:
        return float(gpu["total_mib"]), float(gpu["free_mib"])
    try:
        import torch

        free, total = torch.cuda.mem_get_info(index)
        return total / MIB, free / MIB
    except Exception:
        return None, None


def plan_for_model(
    model_ref: str,
    *,
    width: int,
    height: int,
    frames: int,
    dtype: str = "bfloat16",
    strategy: str = "auto",
    device: str = "cuda:0",
    **levers,
):
    """Read ``model_ref`` and plan its memory for one generation on ``device`` (free VRAM and
    available host RAM measured now). Returns ``(ModelInfo, MemoryPlan)``; for engines, which
    record ``plan.chosen_strategy``, ``vae_tiling`` and ``estimated_peak_mib`` in the stage
    metadata and refuse to load when ``plan.fits_ram`` is False. ``levers``: the speed levers'
    ``weight_bytes`` / ``extra_activation_mib`` of :func:`plan_memory`. Raises :class:`InputError`."""
    import psutil

    ckpt = read_checkpoint(model_ref)
    info = identify(ckpt)
    total, free = gpu_memory_mib(device)
    plan = plan_memory(
        ckpt,
        variant=info.variant,
        width=width,
        height=height,
        frames=frames,
        dtype=dtype,
        strategy=strategy,
        vram_total_mib=total,
        vram_free_mib=free,
        ram_available_mib=psutil.virtual_memory().available / MIB,
        **levers,
    )
    return info, plan


def _target_gpu(preset, machine: dict) -> dict | None:
    device = (getattr(preset, "device", "auto") or "auto").lower()
    gpus = machine.get("gpus") or []
    if device == "cpu" or not gpus:
        return None
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    return next((g for g in gpus if g["index"] == index), None)


def _model_entry(stage: str, section: dict, preset, gpu: dict | None, ram_mib: float | None = None) -> dict:
    model = str(section.get("model"))
    engine = section.get("engine")
    entry = {"stage": stage, "engine": engine, "model": model, "missing": [], "problems": []}
    from wan_pipeline.models.model_files import files_checkpoint, uses_single_file

    local = local_model_path(model)
    if uses_single_file(model) and str(engine or "").startswith(("wan", "diffusers")):
        ckpt, facts, problems = files_checkpoint(section, getattr(preset, "source_path", None))
        entry.update(facts)
        entry["problems"] += problems
        if ckpt is None:
            return entry
        info = identify(ckpt)
        entry.update(variant=info.variant, pipeline_class=info.pipeline_class, capabilities=info.capabilities, experts=info.experts)
    elif Path(model).suffix.lower() in FILE_MODEL_SUFFIXES:
        exists = local.is_file()
        entry.update(kind="weights file", path=str(local), present=exists)
        if not exists:
            entry["missing"].append(f"weights file {local} not found: {weights_fix(engine, local)}")
        return entry
    elif _is_tiny(local) and not local.exists():
        entry.update(kind="diffusers checkpoint", path=str(local), found=False, downloaded=False, miniature=True)
        entry["missing"].append(f"miniature checkpoint {local} not found: run `{MAKE_TINY}`")
        return entry
    else:
        try:
            ckpt, found = load_checkpoint_info(str(local) if local is not None else model)
        except InputError as err:
            entry["problems"].append(str(err))
            return entry
        info = identify(ckpt)
        entry.update(
            kind="diffusers checkpoint",
            source=ckpt.source,
            found=found,
            downloaded=found and _loadable(ckpt),
            miniature=info.miniature,
            variant=info.variant,
            pipeline_class=info.pipeline_class,
            capabilities=info.capabilities,
            experts=info.experts,
        )
        if not found:
            entry["missing"].append(f"not in the Hugging Face cache: run `{download_command(model)}`")
        else:
            entry["missing"] += [f"{m}" for m in ckpt.missing_components()]
            if entry["missing"] and local is None:
                entry["missing"].append(f"complete it with `{download_command(model)}`")
            elif entry["missing"] and _is_tiny(local):
                entry["missing"].append(f"rewrite the miniatures with `{MAKE_TINY}`")
    dtype = str(section.get("dtype", "auto"))
    if dtype == "auto":
        dtype = "bfloat16" if gpu else "float32"
    width = int(section.get("width") or preset.width)
    height = int(section.get("height") or preset.height)
    frames = int(section.get("frames") or section.get("num_frames") or info.max_frames or 81)
    strategy = str(section.get("memory_strategy", "auto"))
    try:
        plan = plan_memory(
            ckpt,
            variant=info.variant,
            width=width,
            height=height,
            frames=info.valid_frames(frames),
            dtype=dtype,
            strategy=strategy,
            vram_total_mib=gpu["total_mib"] if gpu else None,
            vram_free_mib=gpu["free_mib"] if gpu else None,
            ram_available_mib=ram_mib,
        )
    except InputError as err:
        entry["problems"].append(str(err))
        return entry
    entry.update(
        parameters=plan.total_params,
        parameters_by_component=plan.params,
        dtype=dtype,
        width=width,
        height=height,
        frames=plan.frames,
        weights_mib=plan.total_weights_mib,
        chosen_strategy=plan.chosen_strategy,
        vae_tiling=plan.vae_tiling,
        estimated_peak_vram_mib=plan.estimated_peak_mib,
        peak_vram_mib=plan.peak_vram_mib,
        fits=plan.fits,
        reason=plan.reason,
        host_ram_mib=plan.host_ram_mib,
        host_ram_by_strategy_mib=plan.host_ram_by_strategy_mib,
        fits_ram=plan.fits_ram,
        offload_to_disk=plan.offload_to_disk,
    )
    if plan.fits is False:
        entry["problems"].append(plan.reason)
    return entry


def _extension_entry(stage: str, section: dict, preset, gpu: dict | None, ram_mib: float | None) -> dict:
    """The :func:`_model_entry` of the clip stage's ``extension_model`` (the VACE checkpoint that
    continues long FLF2V scenes; loaded alone, after the clip model is released), planned with the
    section's memory fields and ``label`` ``<stage>.extension_model``; a checkpoint that is no VACE
    one is a problem. A single-file extension model is identified from its tensor shapes, with the
    section's keys it shares (:func:`~wan_pipeline.models.model_files.extension_file_fields`)."""
    from wan_pipeline.models.model_files import extension_file_fields, vace_configs_problem, vace_file_problem

    ext = {**section, **extension_file_fields(section), "model": section["extension_model"], "engine": "wan_vace"}
    entry = _model_entry(stage, ext, preset, gpu, ram_mib)
    entry["engine"], entry["label"] = section.get("engine"), f"{stage}.extension_model"
    where = f"stages.{stage}.extension_model"
    if entry.get("kind") == "single file" and entry.get("source"):
        problem = vace_file_problem(Path(entry["source"]), where)
        if problem:  # the file itself is no VACE one: the components it would lack are beside the point
            entry["problems"] = [problem]
            return entry
        if entry.get("capabilities") is not None and "VACE" not in entry["capabilities"]:
            entry["problems"].append(vace_configs_problem(where, Path(entry["source"]).name, "extension_components", entry.get("variant")))
            return entry
    if entry.get("capabilities") is not None and "VACE" not in entry["capabilities"]:
        entry["problems"].append(
            f"stages.{stage}.extension_model: {entry['model']} is a {entry.get('variant') or 'non-VACE'} checkpoint, not a Wan VACE one: "
            "give a VACE checkpoint (e.g. Wan-AI/Wan2.1-VACE-14B-diffusers)"
        )
    return entry


def hypothetical_machine(vram_gib: float | None, ram_gib: float | None, measured: dict | None = None) -> dict:
    """A :func:`machine_info` dict for a machine you do not have: this machine's (``measured``,
    measured when None) with one GPU of ``vram_gib`` GiB and/or ``ram_gib`` GiB of RAM, all free
    (``doctor PRESET --vram-gib 24 --ram-gib 64``). ``vram_gib`` 0 means no GPU."""
    machine = dict(measured if measured is not None else machine_info())
    if vram_gib is not None:
        mib = round(vram_gib * 1024)
        name = f"hypothetical {vram_gib:g} GiB GPU"
        machine["gpus"] = [{"index": 0, "name": name, "total_mib": mib, "free_mib": mib, "used_mib": 0}] if mib > 0 else []
    if ram_gib is not None:
        machine["ram"] = {"total_mib": round(ram_gib * 1024), "available_mib": round(ram_gib * 1024)}
    return machine


def doctor_report(preset, machine: dict | None = None) -> dict:
    """The machine and, for each stage section of ``preset`` with a ``model:`` key, the model's
    variant, parameter count, estimated peak VRAM (MiB), chosen strategy and what is missing.

    machine: a :func:`machine_info` dict (measured when None; tests pass their own). Unknown keys
    of a stage section are ignored. Model paths resolve like the engines' (relative to the storage
    root). ``lacks`` lists, in words, what this machine needs to run the preset, each missing file
    with its fix (``make-tiny-models`` for miniatures, the release a RIFE / Real-ESRGAN weight file
    comes from, the ``hf download`` command); ``ready`` is True when nothing lacks (``doctor``
    exits 1 otherwise).
    """
    machine = machine if machine is not None else machine_info()
    gpu = _target_gpu(preset, machine)
    models = []
    from wan_pipeline.stages import STAGES

    for stage in STAGES.names():
        try:
            section = preset.stage(stage).model_dump()
        except (KeyError, AttributeError):
            continue
        ram = (machine.get("ram") or {}).get("available_mib")
        if section.get("model"):
            models.append(_model_entry(stage, section, preset, gpu, ram))
        if section.get("engine") == "wan_i2v" and section.get("extension_model"):
            models.append(_extension_entry(stage, section, preset, gpu, ram))
    lacks = []
    if gpu is None and any(m.get("kind") in ("diffusers checkpoint", "single file") and not m.get("miniature") for m in models):
        lacks.append("no CUDA GPU in use: diffusion stages would run on the CPU (hours per clip at full size)")
    for m in models:
        where = m.get("label", m["stage"])
        lacks += [f"{where}: {x}" for x in m["missing"]] + [f"{where}: {x}" for x in m["problems"]]
    from wan_pipeline.disk_estimate import disk_per_minute

    try:
        disk = disk_per_minute(preset)
    except (KeyError, AttributeError, TypeError, ValueError):  # a partial preset (tests) has no video stages to size
        disk = {}
    return {
        "preset": getattr(preset, "name", None),
        "device": getattr(preset, "device", None),
        "machine": machine,
        "gpu": gpu,
        "disk_mb_per_minute": disk,
        "models": models,
        "lacks": lacks,
        "ready": not lacks,
    }


def render_doctor_text(report: dict) -> str:
    """A plain-text rendering of :func:`doctor_report` for the terminal."""
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']['model']} ({m['cpu']['logical_cores']} logical cores), "
        f"RAM {m['ram']['available_mib']:,} / {m['ram']['total_mib']:,} MiB available",
        f"  torch {m.get('torch')} (CUDA {m.get('torch_cuda') or 'none'}), diffusers {m.get('diffusers')}, "
        f"driver {m.get('nvidia_driver') or 'none'}; HF cache {m.get('hf_cache')}",
    ]
    if m["gpus"]:
        for g in m["gpus"]:
            lines.append(f"  GPU {g['index']}: {g['name']}, {g['free_mib']:,} / {g['total_mib']:,} MiB free")
    else:
        lines.append("  GPUs: none")
    if report.get("preset"):
        lines.append(f"Preset {report['preset']} (device {report.get('device')}):")
    for e in report["models"]:
        head = f"  {e.get('label', e['stage'])}: {e['model']}"
        if e.get("variant"):
            byc = e.get("parameters_by_component") or {}
            denoise = sum(v for k, v in byc.items() if k.startswith("transformer") or k == "unet")
            head += (
                f" — {e['variant']} ({e['pipeline_class']}, denoiser {denoise / 1e9:.2f} B params, "
                f"{e['parameters'] / 1e9:.2f} B with encoders and VAE)"
                if e.get("parameters")
                else f" — {e['variant']}"
            )
        lines.append(head)
        if e.get("chosen_strategy"):
            where = "VRAM" if report.get("gpu") else "RAM (CPU device)"
            lines.append(
                f"    {e['dtype']} {e['width']}x{e['height']}x{e['frames']} frames: weights {e['weights_mib']:,.0f} MiB, "
                f"peak {where} ~{e['estimated_peak_vram_mib']:,.0f} MiB with {e['chosen_strategy']}"
                f"{' + VAE tiling' if e['vae_tiling'] else ''}{' (offloaded to disk)' if e.get('offload_to_disk') else ''} ({e['reason']})"
            )
            lines.append("    GPU peak by strategy (MiB): " + ", ".join(f"{s} {e['peak_vram_mib'][s]:,.0f}" for s in STRATEGIES))
            host = e.get("host_ram_by_strategy_mib") or {}
            if host:
                lines.append(
                    f"    host RAM ~{e['host_ram_mib']:,.0f} MiB with the choice (loading and every in-memory strategy "
                    f"~{host['full_gpu']:,.0f} MiB; group offload to disk ~{host['group_offload_to_disk']:,.0f} MiB)"
                )
        for x in e["missing"]:
            lines.append(f"    missing: {x}")
        for x in e["problems"]:
            lines.append(f"    problem: {x}")
    if not report["models"]:
        lines.append("  (no stage of this preset names a model)")
    disk = report.get("disk_mb_per_minute") or {}
    if disk:
        lines.append(
            f"Disk per minute of film ~{sum(disk.values()) / 1000:,.1f} GB: "
            + ", ".join(f"{stage} {mb / 1000:,.2f} GB" for stage, mb in disk.items())
            + " (lossless intermediates; the estimate of wan_pipeline/disk_estimate.py)"
        )
    lines.append("Ready." if report["ready"] else "Lacks:\n" + "\n".join(f"  - {x}" for x in report["lacks"]))
    return "\n".join(lines)
