"""Dagster resources of wan_pipeline: the GPU resource and the engine cache."""

from resources.engine_cache import EngineCache
from resources.gpu import GPUResource, StageRun


def default_resources(storage_root=None) -> dict:
    """The resources every story's assets need: the storage root (default: from the environment)
    and the engine cache; the device is the preset's."""
    return {"gpu": GPUResource(storage_root=str(storage_root or "")), "engines": EngineCache()}


__all__ = ["EngineCache", "GPUResource", "StageRun", "default_resources"]
