"""Corpus sources (demo generator, local directory, S3, YT-Temporal), probing, the videos table."""
