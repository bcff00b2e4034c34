"""Evaluation: retrieval metrics, sort accuracy (later: linear probe, fine-tuning)."""
