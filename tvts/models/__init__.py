"""Video ViT, text encoder, sort transformer, projection heads and the TVTS model."""
