"""Dagster resources of wan_pipeline: the GPU resource and the engine cache."""

from resources.engine_cache import EngineCache
from resources.gpu import GPUResource, StageRun


def default_resources() -> dict:
    """The resources every story's assets need, with their defaults (storage root from the
    environment, device chosen by the preset)."""
    return {"gpu": GPUResource(), "engines": EngineCache()}


__all__ = ["EngineCache", "GPUResource", "StageRun", "default_resources"]
