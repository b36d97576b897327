"""Training: config, schedules, checkpoints, the dual-network trainer."""
