"""Prefect orchestration over the DVC stages: the `tvts` flow and its `full-pipeline`
deployment (`python -m flows serve`)."""
