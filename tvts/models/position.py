"""Fixed sinusoidal position codes: the sorter's time code of the video tokens, and the video
encoder's optional start for its position tables (`model.video.position_init: sincos`)."""

from __future__ import annotations

import torch


def sincos_table(n: int, width: int) -> torch.Tensor:
    """(n, width): sin / cos of n positions at geometric frequencies (Transformer-style)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.arange(width // 2, dtype=torch.float32)[None]
    angle = pos / (10000.0 ** (2.0 * freq / width))
    table = torch.cat([angle.sin(), angle.cos()], dim=1)
    return torch.nn.functional.pad(table, (0, width - table.shape[1]))


def sincos_grid(grid: int, width: int) -> torch.Tensor:
    """(grid * grid, width), rows in raster order: the first half of the width codes the
    patch's row, the second half its column."""
    half = width // 2
    rows = sincos_table(grid, half)
    cols = sincos_table(grid, width - half)
    return torch.cat([rows.repeat_interleave(grid, 0), cols.repeat(grid, 1)], dim=1)
