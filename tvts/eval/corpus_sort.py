"""Transcript sorting on the corpus' held-out videos (the paper's table 13): the samples, drawn
as pretraining draws its validation samples, and the text-only control, a sorter trained as
pretraining trains its own but without the video."""

from __future__ import annotations

import random
from typing import Any

import torch
from torch.utils.data import DataLoader

from tvts.config import Params
from tvts.data.tvts_dataset import SampleSpec, TVTSCollate, TVTSDataset, VideoEntry
from tvts.eval.encoders import init_model
from tvts.eval.text_sorter import TextSortSettings, train_text_only_sorter
from tvts.models.tvts_model import TVTSModel
from tvts.video.packed import PackedIndex


def sort_loader(params: Params, held_out: list[VideoEntry], packed: PackedIndex | None,
                 on_device: bool) -> DataLoader | None:
    """Held-out samples of `held_out` (the test videos), drawn as the pretrain stage draws
    its validation samples (seed, spec, frames)."""
    spec = SampleSpec.from_params(params, False, 0.0)
    if not held_out:
        return None
    data = TVTSDataset(held_out, spec, params.seed + 1, params.corpus.s3, params.corpus.cache_dir,
                       repeats=params.evaluate.sort.clips_per_video, packed=packed,
                       device_decode=on_device)
    return DataLoader(data, batch_size=params.evaluate.batch_size,
                      num_workers=params.evaluate.loader_workers,
                      collate_fn=TVTSCollate(params.model.text.name,
                                             params.data.max_text_tokens))


def text_only_control(params: Params, model: TVTSModel, train: list[VideoEntry],
                       val: list[VideoEntry], tokenizer: Any, device: torch.device
                       ) -> dict[str, float]:
    """A sorter as pretraining built and trained it, on `model`'s text features alone."""
    p, cap = params.pretrain, params.evaluate.sort.text_only_videos
    if cap is not None and len(train) > cap:
        train = [train[i] for i in sorted(random.Random(params.seed).sample(range(len(train)),
                                                                            cap))]
    settings = TextSortSettings(p.epochs, p.clips_per_video, p.batch_size, p.lr,
                                p.weight_decay, p.schedule, p.lr_milestones, p.warmup_epochs,
                                params.evaluate.sort.clips_per_video, params.seed)
    text = model.text.to(device).eval()

    def encode(texts: list[str]) -> torch.Tensor:
        enc = tokenizer(texts, padding=True, truncation=True,
                        max_length=params.data.max_text_tokens, return_tensors="pt").to(device)
        return text(enc["input_ids"], enc["attention_mask"])

    sorter = init_model(params).sorter  # the pretraining sorter's initial weights
    result = train_text_only_sorter(sorter, encode, train, val,
                                    SampleSpec.from_params(params, False, 0.0), settings)
    return result | {"train_videos": len(train)}
