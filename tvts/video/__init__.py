"""Reading media: decoding backends behind one interface (decord, PyAV), audio tracks, packed
JPEG shards, and re-encoding for fast seeking."""
