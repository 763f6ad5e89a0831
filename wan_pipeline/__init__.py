"""wan_pipeline: the engine library of the story-to-video pipeline.

Story and preset models, media I/O, telemetry, stage engines and the CLI. Nothing here imports
Dagster except :mod:`wan_pipeline.cli`; the Dagster layer lives in the top-level ``assets`` and
``resources`` packages.
"""

__version__ = "0.1.0"
