"""Which attention kernel the models use: PyTorch's fused scaled-dot-product attention
(flash / memory-efficient / cuDNN on a GPU, a fused kernel on a CPU) or the explicit
softmax(QK^T)V of the release, kept for the reference-style benchmark."""

from __future__ import annotations

from torch import nn


def set_fused_attention(model: nn.Module, enabled: bool) -> int:
    """Switch every timm attention layer and every Hugging Face encoder in `model`; returns
    how many were switched (0 means the model holds no attention this knows)."""
    switched = 0
    for module in model.modules():
        if hasattr(module, "fused_attn"):  # timm's Attention
            module.fused_attn = enabled
            switched += 1
        elif hasattr(module, "set_attn_implementation") and hasattr(module, "config"):
            module.set_attn_implementation("sdpa" if enabled else "eager")
            switched += 1
    return switched
