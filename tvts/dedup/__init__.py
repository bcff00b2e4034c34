"""Leakage deduplication: frame features, similarity search, video pairs, decisions, report."""

# Below this L2 norm a feature is treated as empty (a blank frame): similarity 0 to anything.
EMPTY_NORM = 1e-6
