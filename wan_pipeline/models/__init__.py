"""Model checkpoints: detection from configs, memory planning, inspect/doctor reports, miniature test weights.

Public API: :func:`read_checkpoint`, :func:`resolve_model`, :func:`check_loadable`,
:func:`identify` (→ :class:`ModelInfo`), :func:`plan_memory` (→ :class:`MemoryPlan`),
:func:`stronger_strategy`, :func:`inspect_report`, :func:`doctor_report`, :func:`render_doctor_text`.
Importing this package does not import torch or diffusers.
"""

from wan_pipeline.models.checkpoint import Checkpoint, check_loadable, download_command, read_checkpoint, resolve_model
from wan_pipeline.models.machine import doctor_report, gpu_memory_mib, inspect_report, machine_info, plan_for_model, render_doctor_text
from wan_pipeline.models.memory import STRATEGIES, MemoryPlan, plan_memory, stronger_strategy
from wan_pipeline.models.variants import ModelInfo, identify

__all__ = [
    "Checkpoint",
    "check_loadable",
    "download_command",
    "read_checkpoint",
    "resolve_model",
    "doctor_report",
    "inspect_report",
    "machine_info",
    "plan_for_model",
    "gpu_memory_mib",
    "render_doctor_text",
    "STRATEGIES",
    "MemoryPlan",
    "plan_memory",
    "stronger_strategy",
    "ModelInfo",
    "identify",
]
