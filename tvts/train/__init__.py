"""The trainer: one process or torchrun DDP, exact resume, checkpoints, schedules, export."""
