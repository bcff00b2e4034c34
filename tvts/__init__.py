"""tvts: TVTS (Turning to Video for Transcript Sorting) video-language pretraining pipeline."""

__version__ = "0.1.0"
