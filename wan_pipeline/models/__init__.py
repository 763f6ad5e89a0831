"""Model checkpoints: miniature test checkpoints, detection and memory planning."""
