"""Quiet Hugging Face loading: no per-file progress bars from diffusers, transformers or the hub."""

from __future__ import annotations


def quiet_hub_progress() -> None:
    """Turn off the per-file loading/saving bars of diffusers, transformers and huggingface_hub
    (they interleave with the stage progress on stderr; the stage log says what was loaded)."""
    import diffusers
    import huggingface_hub
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
