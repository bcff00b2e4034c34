"""The sorter under the controls that show what sorting takes from the video: the transcripts
with another clip's video tokens, and with none. Used by pretraining's validation and by the
evaluate stage's transcript-sorting test."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tvts.losses import predicted_order


def other_video_rows(video_ids: list[str]) -> torch.Tensor:
    """Rows whose clip, rolled by one in the batch, pairs with another video's frames."""
    return torch.tensor([a != b for a, b in zip(video_ids, video_ids[-1:] + video_ids[:-1],
                                                strict=True)], dtype=torch.bool)


def other_video_hits(sorter: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]
                     ) -> torch.Tensor:
    """Per transcript, whether the sorter still places it right when its clip's video tokens
    are another clip's: what the transcripts alone give away. (R, K) for the rows whose rolled
    clip is another video. Reuses the forward pass's sorter inputs (`out`): the encoders
    treat clips independently, so rolling their outputs is rolling the clips."""
    rows = other_video_rows(list(batch["video_ids"]))
    if not rows.any():
        return torch.zeros(0, batch["order"].shape[1], dtype=torch.bool)
    logits = sorter(out["video_tokens"].roll(1, 0), out["transcripts"])
    pred = predicted_order(logits, sorter.modeling, batch["order"].shape[1])
    return (pred == batch["order"])[rows.to(pred.device)].cpu()


def text_only_hits(sorter: nn.Module, out: dict[str, torch.Tensor], batch: dict[str, Any]
                   ) -> torch.Tensor:
    """(B, K): the sorter given the transcripts and no video token at all."""
    tokens = out["video_tokens"][:, :0]
    logits = sorter(tokens, out["transcripts"])
    pred = predicted_order(logits, sorter.modeling, batch["order"].shape[1])
    return (pred == batch["order"]).cpu()
