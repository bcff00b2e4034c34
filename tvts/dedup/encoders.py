"""Frame encoders for leak search: uint8 RGB frames (N, H, W, 3) -> L2-normalised (N, D).

`dct` is weight-free: the low frequencies of the frame's 2-D DCT, a real-valued cousin of the
pHash perceptual hash (re-encoding, resizing and blur barely move them; crops are handled by
indexing crops of the downstream frames). `clip` is CLIP's image embedding via transformers.
A frame with no structure (a blank or uniform frame) maps to the zero vector: it is evidence of
nothing, and its similarity to everything is 0.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from tvts.dedup import EMPTY_NORM

# ITU-R BT.601: luma carries the structure; the two chroma planes tell same-shaped things of
# different colours apart.
_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                   [0.5, -0.418688, -0.081312]], np.float32)


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
        ycc = np.einsum("ck,nkhw->nchw", _YCBCR, x)
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


class ClipEncoder:
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
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        self.dim = int(self.model.config.projection_dim)

    def signature(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for name, t in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
        return f"clip-{self.model_name}-{h.hexdigest()}"

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(frames), self.batch_size):
            images = [np.ascontiguousarray(f) for f in frames[i:i + self.batch_size]]
            batch = self.processor(images=images, return_tensors="pt")
            pixels = batch["pixel_values"].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                emb = self.model(pixel_values=pixels).image_embeds
            out.append(emb.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return normalise(np.concatenate(out))


def build_encoder(kind: str, clip_model: str = "", device: str = "auto",
                  batch_size: int = 64) -> FrameEncoder:
    if kind == "dct":
        return DCTEncoder()
    if kind == "clip":
        return ClipEncoder(clip_model, device, batch_size)
    raise ValueError(f"dedup.encoder = {kind!r}; allowed: dct, clip")
