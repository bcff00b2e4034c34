"""Downstream (evaluation) sets as manifests: one row per clip, whatever the source layout."""
