"""Group offload to disk: load a pipeline whose weights do not fit host RAM.

diffusers' ``from_pretrained`` materialises every component in host RAM before any offloading
applies, so a 64 GB machine cannot even load Wan2.2 I2V-A14B (~66 GiB in bf16). Here each weighted
component is loaded on its own and handed at once to diffusers' group offloading with
``offload_to_disk_path``: its groups are written to safetensors files and its host copies
released before the next component is read. The peak host RAM is then about the largest
component (the memory planner's ``group_offload_to_disk`` figure,
:mod:`wan_pipeline.models.memory`); the pipeline is assembled from the loaded components with
``from_pretrained(..., **components)``, which then reads only tokenizers, schedulers and
processors.

The offload files go to a fresh folder under ``<storage root>/offload/`` (diffusers reuses a
group file that already exists, so a folder is never shared between loads) and are deleted by
:func:`remove_offload_folder` when the pipeline is released.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path

from wan_pipeline.errors import InputError

DISK_MARGIN = 1.05
"""Free disk space needed, as a multiple of the weights written (safetensors headers, rounding)."""


def offload_folder(weights_mib: float, root: Path | None = None) -> Path:
    """A new, empty folder for offload files under ``root`` (default ``<storage root>/offload``).

    Raises :class:`InputError` when the disk holding it has less than ``DISK_MARGIN`` ×
    ``weights_mib`` MiB free (the message gives both numbers)."""
    if root is None:
        from wan_pipeline.storage import storage_root

        root = storage_root() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    free_mib = shutil.disk_usage(root).free / 2**20
    if free_mib < weights_mib * DISK_MARGIN:
        raise InputError(
            str(root),
            f"group offload to disk needs ~{weights_mib * DISK_MARGIN:.0f} MiB free here, {free_mib:.0f} MiB are free; "
            "free disk space or use a machine with more RAM",
        )
    return Path(tempfile.mkdtemp(prefix="load-", dir=root))


def load_components_to_disk(ckpt, dtypes: dict, device: str, folder: Path, log=lambda m: None, storage_dtype: str | None = None) -> dict:
    """Load every weighted component of ``ckpt`` (a :class:`~wan_pipeline.models.checkpoint.Checkpoint`)
    one at a time in its dtype (``dtypes``: component name → torch dtype, ``default`` for the
    rest) and apply block-level group offloading to disk (``folder/<component>``) before the next
    is read. ``device``: where the groups run (``cuda:N``; ``cpu`` only for tests, without CUDA
    streams). storage_dtype: a torch dtype name (speed lever ``weights.storage_dtype``, e.g.
    ``float8_e4m3fn``) the denoisers' weights are stored in through diffusers' layerwise casting,
    applied before the group offloading so the files hold (and the GPU receives) the smaller
    weights; computation stays in their load dtype. Returns ``{component name: module}`` for
    ``from_pretrained``.
    """
    import torch
    from diffusers.hooks import apply_group_offloading

    on_cuda = device.startswith("cuda")
    modules = {}
    for name, comp in ckpt.components.items():
        if not comp.needs_weights or comp.library is None or comp.class_name is None:
            continue
        cls = getattr(importlib.import_module(comp.library), comp.class_name)
        dtype = dtypes.get(name, dtypes.get("default"))
        dtype_kw = {"torch_dtype": dtype} if comp.library == "diffusers" else {"dtype": dtype}
        module = cls.from_pretrained(str(ckpt.source), subfolder=name, use_safetensors=True, **dtype_kw).eval()
        if storage_dtype is not None and name in ("transformer", "transformer_2"):
            module.enable_layerwise_casting(storage_dtype=getattr(torch, storage_dtype), compute_dtype=dtype)
        apply_group_offloading(
            module,
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=on_cuda,
            offload_to_disk_path=str(folder / name),
        )
        modules[name] = module
        log(f"{name} loaded and offloaded to {folder / name}")
    return modules


def remove_offload_folder(pipe) -> None:
    """Delete the offload files of a pipeline loaded through :func:`load_components_to_disk`."""
    folder = getattr(pipe, "offload_folder", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
