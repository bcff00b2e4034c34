"""TVTS samples: transcript windows + TSN frames + masks, datasets and collate."""
