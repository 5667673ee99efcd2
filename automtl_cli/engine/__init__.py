"""The engine: search, derive and fine-tune loops, their schedules, checkpoints and signals."""
