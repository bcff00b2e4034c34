"""Packing: the pretraining videos decoded once into JPEG tar shards (frame tables with CRCs,
verified before reuse), which the training loaders read instead of decoding H.264 per clip."""
