"""The text-only control: a sort transformer trained as pretraining trains its sorter (same
architecture and initialisation, optimiser, learning-rate schedule, samples per epoch), with
the video tokens removed.

On held-out videos it measures what the transcripts alone give away about their order: the
shortcut a corpus leaves the sorter. Near 1/K, sorting needs the video. Its accuracy on the
training videos says how far the text alone fits the corpus (memorised scripts). The text
features come from the evaluated model's text encoder, frozen: the demo's is frozen during
pretraining too, so the control sees what the pretraining sorter saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tvts.data.tvts_dataset import SampleSpec, VideoEntry, draw_transcripts
from tvts.data.windows import NoValidSample
from tvts.losses import predicted_order, sort_loss
from tvts.train.schedule import lr_at


@dataclass(frozen=True)
class TextSortSettings:
    """The pretraining run's optimisation, which the control repeats."""

    epochs: int
    clips_per_video: int  # training samples per video per epoch
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    milestones: list[int]
    warmup_epochs: float
    val_clips_per_video: int
    seed: int


@dataclass(frozen=True)
class TranscriptSample:
    texts: list[str]
    order: np.ndarray  # each transcript's true position


def transcript_samples(entries: list[VideoEntry], spec: SampleSpec, seed: int, epoch: int,
                       repeats: int) -> list[TranscriptSample]:
    """The shuffled transcript windows of an epoch (the video is never opened). A video that
    cannot give a sample this time is left out, as the video dataset would redraw it."""
    out = []
    for index in range(len(entries) * repeats):
        rng = np.random.default_rng([seed, epoch, index])
        try:
            texts, order = draw_transcripts(entries[index % len(entries)], spec, rng)
        except NoValidSample:
            continue
        out.append(TranscriptSample(texts, order))
    return out


class FeatureBank:
    """Frozen text features of each distinct transcript, encoded once."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], batch_size: int = 256):
        self.encode, self.batch_size = encode, batch_size
        self.rows: dict[str, int] = {}
        self.table: torch.Tensor | None = None

    def add(self, samples: list[TranscriptSample]) -> None:
        new = sorted({t for s in samples for t in s.texts} - self.rows.keys())
        for i in range(0, len(new), self.batch_size):
            chunk = new[i:i + self.batch_size]
            with torch.no_grad():
                feats = self.encode(chunk).float().cpu()
            self.table = feats if self.table is None else torch.cat([self.table, feats])
            for t in chunk:
                self.rows[t] = len(self.rows)

    def features(self, samples: list[TranscriptSample]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, D) features and (B, K) orders."""
        assert self.table is not None, "add() the samples first"
        idx = torch.tensor([[self.rows[t] for t in s.texts] for s in samples])
        order = torch.from_numpy(np.stack([s.order for s in samples]))
        return self.table[idx], order


def _no_video(sorter: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    width = sorter.type_embed.shape[1]
    return sorter(feats.new_zeros(feats.shape[0], 0, width), feats)


@torch.no_grad()
def _hits(sorter: nn.Module, bank: FeatureBank, samples: list[TranscriptSample],
          batch_size: int) -> torch.Tensor:
    sorter.eval()
    hits = []
    for i in range(0, len(samples), batch_size):
        feats, order = bank.features(samples[i:i + batch_size])
        pred = predicted_order(_no_video(sorter, feats), sorter.modeling, order.shape[1])
        hits.append(pred == order)
    return torch.cat(hits)


def train_text_only_sorter(sorter: nn.Module, encode: Callable[[list[str]], torch.Tensor],
                           train: list[VideoEntry], val: list[VideoEntry], spec: SampleSpec,
                           settings: TextSortSettings) -> dict[str, float]:
    """Trains `sorter` (fresh, as pretraining builds it) on the training videos' transcripts
    alone and scores it on the held-out videos' (drawn as the pretrain stage's validation
    draws them). `encode`: transcripts -> (N, D) frozen text features."""
    s = settings
    bank = FeatureBank(encode)
    held_out = transcript_samples(val, spec, s.seed + 1, 0, s.val_clips_per_video)
    bank.add(held_out)
    optimizer = torch.optim.AdamW(sorter.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(s.seed)
    last_epoch: list[TranscriptSample] = []
    for epoch in range(s.epochs):
        samples = transcript_samples(train, spec, s.seed, epoch, s.clips_per_video)
        bank.add(samples)
        perm = torch.randperm(len(samples), generator=gen).tolist()
        batches = math.ceil(len(samples) / s.batch_size)
        sorter.train()
        for b in range(batches):
            chunk = [samples[j] for j in perm[b * s.batch_size:(b + 1) * s.batch_size]]
            feats, order = bank.features(chunk)
            lr = lr_at(epoch + (b + 1) / batches, s.lr, s.schedule, s.epochs, s.milestones,
                       s.warmup_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = sort_loss(_no_video(sorter, feats), order, sorter.modeling)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        last_epoch = samples
    k = spec.num_transcripts
    result = {"chance_acc": 1 / k, "train_samples_per_epoch": len(last_epoch),
              "held_out_samples": len(held_out)}
    if last_epoch:
        fit = _hits(sorter, bank, last_epoch, s.batch_size)
        result["train_acc"] = float(fit.float().mean())
    if held_out:
        hits = _hits(sorter, bank, held_out, s.batch_size)
        result["acc"] = float(hits.float().mean())
        result["seq_acc"] = float(hits.all(-1).float().mean())
    return result
