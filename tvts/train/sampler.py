"""Which clips each process reads, in an order fixed by (seed, epoch), resumable mid-epoch.

Global batches are consecutive slices of one permutation, and rank r takes slice r of each:
concatenated in rank order, the processes' batches are exactly the single-process batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """`steps_of`: an epoch holds a whole number of groups of this many batches (the
    micro-batches of one optimiser step), so no step is left half-accumulated at its end."""

    def __init__(self, size: int, batch_per_rank: int, seed: int, rank: int = 0, world: int = 1,
                 shuffle: bool = True, steps_of: int = 1):
        self.size, self.b, self.seed = size, batch_per_rank, seed
        self.rank, self.world, self.shuffle, self.steps_of = rank, world, shuffle, steps_of
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        whole = self.size // (self.b * self.world)  # the ragged end is dropped
        return whole - whole % self.steps_of

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.b

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        step = self.b * self.world
        for i in range(self.start_batch, self.batches_per_epoch()):
            lo = i * step + self.rank * self.b
            yield from order[lo : lo + self.b]
