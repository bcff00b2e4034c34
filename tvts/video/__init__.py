"""Reading media: audio tracks and (later) decoding backends for frames."""
