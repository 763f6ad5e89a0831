"""Dagster resources of wan_pipeline: the GPU resource and the engine cache."""

from resources.engine_cache import EngineCache
from resources.gpu import GPUResource, StageRun

__all__ = ["EngineCache", "GPUResource", "StageRun"]
