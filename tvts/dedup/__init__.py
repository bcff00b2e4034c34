"""Leakage deduplication: frame features, similarity search, video pairs, decisions, report."""

import numpy as np

# Below this L2 norm a feature is treated as empty (a blank frame): similarity 0 to anything.
EMPTY_NORM = 1e-6

# ITU-R BT.601 RGB -> (Y, Cb, Cr), as a decoder's planes and PIL's "L" conversion compute them:
# luma carries the structure; the two chroma planes tell same-shaped things of different colours
# apart. Row 0 is the luma that bar detection and greyscale views use.
YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                  [0.5, -0.418688, -0.081312]], np.float32)
LUMA = YCBCR[0]
