"""Evaluation: the protocols and encoders of the evaluate stage (`registry`, `runners`), frozen
features and their cache, probes, retrieval, fine-tuning, SVO-Probes, transcript sorting and
its controls, and the headline tables."""
