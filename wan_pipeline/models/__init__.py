"""Model files the project generates itself (miniature random-weight checkpoints for tests)."""
