"""Video ViT: cube embedding, divided position embedding, token dropping, timm blocks.

Tokens are laid out slice by slice: a clip of T frames with tubelet t gives T/t temporal
slices of (H/p)*(W/p) patches. Masking keeps, per slice, the patch indices the sample pipeline
drew (no [MASK] token, no decoder); attention is joint over what is left, plus [CLS].

The kept patches are picked from the pixels and only they are embedded (`drop_before_embed`,
the default); the release embeds every patch and drops after (`False`, kept for the
reference-style benchmark). Both give the same tokens: the cube embedding is a linear map of
each patch's pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from tvts.models.position import sincos_grid, sincos_table

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class VideoViTConfig:
    img_size: int = 224
    num_frames: int = 16
    patch_size: int = 16
    tubelet: int = 2
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    temporal_init: str = "zeros"  # or "normal"
    # "normal": the spatial table truncated normal (std 0.02), the temporal one by
    # temporal_init; "sincos": both start as sinusoidal codes of amplitude 1 (spatial: half
    # the width codes the row, half the column, the [CLS] row zero; temporal: each slice's
    # code), still learned. Tiny tables leave mean-pooled tokens blind to where and when.
    position_init: str = "normal"

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_slices(self) -> int:
        return max(1, self.num_frames // self.tubelet)


class VideoViT(nn.Module):
    def __init__(self, cfg: VideoViTConfig, grad_checkpointing: bool = False,
                 drop_before_embed: bool = True):
        super().__init__()
        if cfg.img_size % cfg.patch_size:
            raise ValueError(f"frame size {cfg.img_size} is not a multiple of the patch size "
                             f"{cfg.patch_size}")
        self.cfg = cfg
        self.grad_checkpointing = grad_checkpointing
        self.drop_before_embed = drop_before_embed
        w = cfg.width
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(
            3, w, kernel_size=(cfg.tubelet, cfg.patch_size, cfg.patch_size),
            stride=(cfg.tubelet, cfg.patch_size, cfg.patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        # Row 0 is the [CLS] slot, as in image ViTs, so their tables load directly.
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, 1 + cfg.grid**2, w))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, cfg.num_slices, w))
        dpr = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(w, cfg.heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True, drop_path=dpr[i],
                  norm_layer=norm) for i in range(cfg.depth))
        self.norm = norm(w)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if cfg.position_init == "sincos":
            with torch.no_grad():
                self.pos_embed_spatial[0, 1:] = sincos_grid(cfg.grid, w)
                self.pos_embed_temporal[0] = sincos_table(cfg.num_slices, w)
        elif cfg.position_init == "normal":
            nn.init.trunc_normal_(self.pos_embed_spatial, std=0.02)
            if cfg.temporal_init == "normal":
                nn.init.trunc_normal_(self.pos_embed_temporal, std=0.02)
        else:
            raise ValueError(f"position_init {cfg.position_init!r}: normal or sincos")
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _spatial_pos(self, hp: int, wp: int) -> torch.Tensor:
        """Patch rows of the spatial table, resized when the grid differs from the config's."""
        table = self.pos_embed_spatial[:, 1:]
        g = self.cfg.grid
        if (hp, wp) == (g, g):
            return table
        grid = table.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(hp, wp), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, hp * wp, -1)

    def _cubes(self, video: torch.Tensor) -> torch.Tensor:
        """The input as whole cubes: an image is repeated to fill one; a ragged clip is an
        error."""
        if video.shape[2] < self.cfg.tubelet:  # an image: repeat it to fill one cube
            video = video.repeat_interleave(self.cfg.tubelet, dim=2)[:, :, : self.cfg.tubelet]
        if video.shape[2] % self.cfg.tubelet:
            raise ValueError(f"{video.shape[2]} frames is not a multiple of the tubelet "
                             f"{self.cfg.tubelet}")
        s = video.shape[2] // self.cfg.tubelet
        if s > self.pos_embed_temporal.shape[1]:
            raise ValueError(f"clip has {s} temporal slices; the model was built for at most "
                             f"{self.pos_embed_temporal.shape[1]}")
        return video

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> patch tokens with position (B, slices, patches, width)."""
        video = self._cubes(video)
        x = self.patch_embed.proj(video)  # (B, W, S, hp, wp)
        s, hp, wp = x.shape[2:]
        x = x.flatten(3).permute(0, 2, 3, 1)  # (B, S, P, W)
        x = x + self._spatial_pos(hp, wp)[:, None]
        return x + self.pos_embed_temporal[:, :s, None]

    def embed_kept(self, video: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The tokens of the kept patches only, (B, slices, n_keep, width): the pixels of
        each kept cube through the embedding's weights as one matrix product, so a 75%-masked
        clip pays a quarter of the embedding (`embed` + gather gives the same tokens)."""
        video = self._cubes(video)
        b, c, t, h, w = video.shape
        ct, p = self.cfg.tubelet, self.cfg.patch_size
        s, hp, wp = t // ct, h // p, w // p
        _check_keep(keep, b, s)
        # (B, C, S, ct, hp, p, wp, p) -> (B, S, hp*wp, C*ct*p*p): the conv weight's order
        cubes = video[..., : hp * p, : wp * p].reshape(b, c, s, ct, hp, p, wp, p)
        cubes = cubes.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, s, hp * wp, -1)
        picked = torch.gather(cubes, 2, keep[..., None].expand(-1, -1, -1, cubes.shape[-1]))
        proj = self.patch_embed.proj
        x = F.linear(picked, proj.weight.flatten(1), proj.bias)
        pos = self._spatial_pos(hp, wp)[0][keep]  # (B, S, n_keep, W)
        return x + pos + self.pos_embed_temporal[0, :s, None]

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ([CLS] feature (B, W), all tokens (B, 1 + kept, W)), both after the norm.

        `keep`: (B, slices, n_keep) patch indices to keep in each temporal slice.
        """
        if keep is not None and self.drop_before_embed:
            x = self.embed_kept(video, keep)
        else:
            x = self.embed(video)
            if keep is not None:
                _check_keep(keep, x.shape[0], x.shape[1])
                x = torch.gather(x, 2, keep[..., None].expand(-1, -1, -1, x.shape[-1]))
        b, w = x.shape[0], x.shape[-1]
        x = x.reshape(b, -1, w)
        cls = (self.cls_token + self.pos_embed_spatial[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        x = self.norm(x)
        return x[:, 0], x

    # ------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> None:
        """safetensors weights + a JSON config: loadable without any training code."""
        from safetensors.torch import save_file

        from tvts.storage import atomic_path, atomic_write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        atomic_write_text(directory / CONFIG_FILE, json.dumps(asdict(self.cfg), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> VideoViT:
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path = directory / CONFIG_FILE
        if not cfg_path.exists():
            raise FileNotFoundError(f"{directory} holds no {CONFIG_FILE}: not an exported encoder")
        model = cls(VideoViTConfig(**json.loads(cfg_path.read_text())), **kwargs)
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return model


def _check_keep(keep: torch.Tensor, batch: int, slices: int) -> None:
    if keep.shape[:2] != (batch, slices):
        raise ValueError(f"keep indices {tuple(keep.shape)} do not match "
                         f"(batch {batch}, slices {slices})")


def num_tokens(cfg: VideoViTConfig, num_frames: int, mask_ratio: float) -> int:
    """Token count the encoder sees: [CLS] + kept patches of every slice."""
    slices = max(1, num_frames // cfg.tubelet)
    return 1 + slices * keep_count(cfg.grid**2, mask_ratio)


def keep_count(patches: int, mask_ratio: float) -> int:
    return max(1, patches - math.floor(patches * mask_ratio))


def sample_keep(slices: int, patches: int, mask_ratio: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Per temporal slice, a random (1 - ratio) share of patch indices, sorted: (S, n_keep).

    Each slice draws independently (the release's masking, not tube masking); ratio 0 keeps all.
    """
    n = keep_count(patches, mask_ratio)
    if n == patches:
        return torch.arange(patches).expand(slices, -1).clone()
    scores = torch.rand(slices, patches, generator=generator)
    return scores.argsort(dim=1)[:, :n].sort(dim=1).values
